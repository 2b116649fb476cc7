"""Full outputs of executions whose result was cut, kept for a while for their owner.

The result a model reads is cut to a token budget; the marker in it points here. Outputs
live on disk (one file per stream) under a size bound, oldest evicted first, and expire
after a TTL. Only the user who ran the code can read them.
"""

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from executor.backends.capture import StreamCapture
from executor.errors import NotFound
from schemas.outputs import OutputPage, OutputQuery


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StoredOutput:
    """The files of one execution's output."""

    user: str
    files: dict[str, Path]
    created: float = field(default_factory=time.monotonic)

    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.files.values() if p.exists())


class OutputStore:
    """Stored outputs by execution id, bounded in bytes and time."""

    def __init__(self, directory: Path, ttl_s: float, max_bytes: int, spill_limit: int) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.spill_limit = spill_limit
        self._outputs: dict[str, StoredOutput] = {}
        self._bytes = 0

    def open(self) -> None:
        """Create the directory (empty), and remove what executors that died left beside it."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, mode=0o700)
        for stale in self.directory.parent.glob("outputs-*"):
            pid = stale.name.removeprefix("outputs-")
            if stale != self.directory and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def close(self) -> None:
        """Delete everything."""
        self._outputs.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def capture(self, execution_id: str, stream: str, max_bytes: int) -> StreamCapture:
        """A capture for one stream that spills to this store past its in-memory head."""
        return StreamCapture(
            max_bytes, self.directory / f"{execution_id}.{stream}", self.spill_limit
        )

    def _entry(self, execution_id: str, user: str) -> StoredOutput:
        stored = self._outputs.get(execution_id)
        if stored is None:
            stored = self._outputs[execution_id] = StoredOutput(user, {})
        return stored

    def keep(self, execution_id: str, user: str, captures: dict[str, StreamCapture]) -> None:
        """Keep the whole output of an execution whose result was cut."""
        stored = self._entry(execution_id, user)
        for stream, capture in captures.items():
            path = self.directory / f"{execution_id}.{stream}"
            if capture.spilled:
                capture.close()
            elif capture.total_bytes:
                path.write_bytes(bytes(capture.head) + capture.tail)
            else:
                continue
            stored.files[stream] = path
            self._bytes += path.stat().st_size
        self._evict()

    def keep_file(self, execution_id: str, user: str, name: str, data: bytes) -> None:
        """Keep a file an execution made (a figure) for its owner, as outputs are kept."""
        stored = self._entry(execution_id, user)
        # Stored under a name of its own: the run chose `name` (outputs/...), not the store.
        path = (
            self.directory / f"{execution_id}.file-{hashlib.sha256(name.encode()).hexdigest()[:24]}"
        )
        path.write_bytes(data)
        stored.files[name] = path
        self._bytes += len(data)
        self._evict()

    def open_file(self, execution_id: str, name: str, user: str) -> tuple[BinaryIO, int]:
        """A kept file of an execution, open for reading, and its size (its owner only)."""
        stored = self._outputs.get(execution_id)
        path = stored.files.get(name) if stored is not None and stored.user == user else None
        if path is None:
            raise NotFound(
                f"no file {name!r} of execution {execution_id!r}: files of a run are kept for "
                f"{self.ttl_s:g} s, and only for the user who ran it"
            )
        file = open(path, "rb")  # noqa: SIM115  (the caller's download closes it)
        return file, os.fstat(file.fileno()).st_size

    def discard(self, captures: dict[str, StreamCapture]) -> None:
        """Drop the spill files of an execution that is not kept."""
        for capture in captures.values():
            spilled = capture.spilled
            capture.close()
            if spilled and capture.spill_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(capture.spill_path)

    def _drop(self, execution_id: str) -> None:
        stored = self._outputs.pop(execution_id, None)
        if stored is None:
            return
        self._bytes -= stored.size()
        for path in stored.files.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._outputs:
            self._drop(next(iter(self._outputs)))

    def sweep(self) -> int:
        """Delete outputs past their TTL; returns how many."""
        now = time.monotonic()
        expired = [i for i, s in self._outputs.items() if now - s.created > self.ttl_s]
        for execution_id in expired:
            self._drop(execution_id)
        return len(expired)

    def read(self, query: OutputQuery, user: str) -> OutputPage:
        """Lines [offset, offset+limit) of a stored stream (offset 0 is the first line)."""
        stored = self._outputs.get(query.execution_id)
        if stored is None or stored.user != user:
            raise NotFound(
                f"no stored output for execution {query.execution_id!r}: only cut results keep "
                f"their output, for {self.ttl_s:g} s, and only for the user who ran them"
            )
        path = stored.files.get(query.stream)
        lines: list[str] = []
        total = 0
        if path is not None:
            end = query.offset + query.limit
            with open(path, "rb") as f:
                for total, raw in enumerate(f, start=1):  # noqa: B007
                    if query.offset < total <= end:
                        lines.append(raw.decode("utf-8", errors="replace"))
        return OutputPage(
            execution_id=query.execution_id,
            stream=query.stream,
            offset=query.offset,
            limit=query.limit,
            total_lines=total,
            text="".join(lines),
        )
