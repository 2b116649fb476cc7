"""An in-memory backend that satisfies executor.backends.base.Backend, for the fast tests.

A FakeSandbox runs its code as Python in this process (tests write the code, so it is
trusted): one namespace per sandbox (kept across runs, as a session's interpreter is),
top-level await (so `await asyncio.sleep(5)` runs into timeouts), the value of a last bare
expression, exceptions as errors. Helpers in the namespace:
    print(..., file=stderr)   output on stdout or stderr (streamed to on_output, in order)
    env                       the run's environment
    open(path, mode)          the workspace's files (text or binary, read or write)
    image(data)               a figure (base64 PNG data) in the result
    die()                     the sandbox's processes die (state lost in a session)
Files live in a dict, behind the same path checks as a real workspace. As a real sandbox, one
whose run is cancelled half-way is dead afterwards (restart() brings it back, state lost).
"""

import ast
import asyncio
import io
import itertools
import traceback
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executor.backends.base import RunAccess, RunOutcome
from executor.backends.capture import StreamCapture
from executor.errors import FileNotFound, PayloadTooLarge, SandboxFailure
from executor.interface import Download, OutputCallback
from schemas.execution import ExecutionError, Image, check_workspace_path
from schemas.files import FileInfo
from schemas.health import BackendHealth
from schemas.languages import Language

_ids = itertools.count(1)


class _Died(BaseException):
    """The sandbox's processes were killed (die() in the code)."""


class _Stream:
    """What `file=stderr` names in fake code."""


class FakeSandbox:
    """One in-memory sandbox."""

    def __init__(self, backend: "FakeBackend", language: Language) -> None:
        self._backend = backend
        self._language = language
        self._id = f"fake{next(_ids)}"
        self._alive = True
        self.files: dict[str, bytes] = {}
        self.runs = 0
        self.restarts = 0
        self.closed = False
        self._fresh_namespace()

    def _fresh_namespace(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "stderr": _Stream()}

    @property
    def id(self) -> str:
        """Unique id."""
        return self._id

    @property
    def language(self) -> Language:
        """Its language (every language runs as Python here)."""
        return self._language

    @property
    def alive(self) -> bool:
        """Until closed or died."""
        return self._alive

    async def run(
        self,
        code: str,
        *,
        env: Mapping[str, str],
        timeout: float,
        keep_state: bool,
        on_output: OutputCallback | None = None,
        stdout: StreamCapture | None = None,
        stderr: StreamCapture | None = None,
        access: RunAccess | None = None,
    ) -> RunOutcome:
        """Run code as a notebook cell; on timeout keep the state (session) or kill."""
        if not self._alive:
            raise SandboxFailure(f"sandbox {self._id} is not running")
        self.runs += 1
        out = stdout or StreamCapture(1 << 20)
        err = stderr or StreamCapture(1 << 20)
        events: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        images: list[Image] = []
        died = False

        def fake_print(
            *args: object, sep: str = " ", end: str = "\n", file: Any = None, flush: bool = False
        ) -> None:
            text = sep.join(str(a) for a in args) + end
            name = "stderr" if isinstance(file, _Stream) else "stdout"
            (err if name == "stderr" else out).feed(text.encode())
            events.put_nowait((name, text))

        def die() -> None:
            raise _Died

        self.namespace.update(
            print=fake_print,
            open=self._open,
            env=dict(env),
            image=lambda data: images.append(Image(data=data)),
            die=die,
        )

        async def pump() -> None:
            while (item := await events.get()) is not None:
                if on_output is not None:
                    await on_output(*item)

        pumping = asyncio.create_task(pump())
        outcome = RunOutcome(stdout=out, stderr=err, exit_code=0)
        try:
            outcome.value = await asyncio.wait_for(self._cell(code), timeout)
        except TimeoutError:
            outcome.timed_out = True
            outcome.exit_code = 124
            consequence = (
                "the run was interrupted and the session's state was kept"
                if keep_state
                else "every process of the run was killed"
            )
            outcome.error = ExecutionError(
                name="TimeoutError",
                value=f"execution exceeded the timeout of {timeout:g} s; {consequence}",
            )
            if not keep_state:
                self._alive = False
        except asyncio.CancelledError:
            self._alive = False  # as a real sandbox: a run cancelled half-way is killed
            raise
        except _Died:
            died = True
            outcome.exit_code = 137
            outcome.error = ExecutionError(name="Signal", value="killed by SIGKILL (Killed)")
        except Exception as exc:  # noqa: BLE001  (the user's code failed: a value)
            outcome.exit_code = 1
            # As the Python runner writes it: the cell's own frames, then the exception.
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<cell>"]
            lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
            lines += traceback.format_exception_only(type(exc), exc)
            outcome.error = ExecutionError(
                name=type(exc).__name__, value=str(exc), traceback="".join(lines)
            )
        finally:
            events.put_nowait(None)
            await pumping
        outcome.images = images
        if died:
            if keep_state:  # restarted on the same files, as a real sandbox is
                self._fresh_namespace()
                outcome.state_lost = True
            else:
                self._alive = False
        return outcome

    def _open(self, path: str, mode: str = "r", encoding: str = "utf-8") -> Any:
        """open() on the workspace dict: read the file, or write it back on close."""
        key = check_workspace_path(path)
        files = self.files
        if "w" in mode:

            class Writer(io.BytesIO if "b" in mode else io.StringIO):  # type: ignore[misc]
                def close(self) -> None:
                    value = self.getvalue()
                    files[key] = value if isinstance(value, bytes) else value.encode(encoding)
                    super().close()

            return Writer()
        if key not in files:
            raise FileNotFoundError(f"[Errno 2] No such file or directory: {path!r}")
        data = files[key]
        return io.BytesIO(data) if "b" in mode else io.StringIO(data.decode(encoding))

    async def _cell(self, code: str) -> str | None:
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        result = eval(compile(tree, "<cell>", "exec", flags=flags), self.namespace)  # noqa: S307
        if asyncio.iscoroutine(result):
            await result
        if last is None:
            return None
        value = eval(compile(last, "<cell>", "eval", flags=flags), self.namespace)  # noqa: S307
        if asyncio.iscoroutine(value):
            value = await value
        return None if value is None else repr(value)

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file of the workspace."""
        if isinstance(data, Path):
            data = await asyncio.to_thread(data.read_bytes)
        self.files[check_workspace_path(path)] = bytes(data)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of the workspace."""
        data = self.files.get(check_workspace_path(path))
        if data is None:
            raise FileNotFound(f"no file {path!r} in the workspace")
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{path!r} is above the download limit of {max_bytes}")
        return data

    async def open_file(self, path: str, max_bytes: int) -> Download:
        """The file in two chunks (so callers see more than one)."""
        data = await self.read_file(path, max_bytes)

        async def chunks() -> AsyncIterator[bytes]:
            yield data[: len(data) // 2]
            yield data[len(data) // 2 :]

        return Download(len(data), chunks())

    async def list_files(self, path: str) -> list[FileInfo]:
        """Every file under path."""
        prefix = "" if path in ("", ".", "/home/user") else check_workspace_path(path) + "/"
        now = datetime.now(UTC)
        return [
            FileInfo(path=name, size=len(data), modified_at=now)
            for name, data in sorted(self.files.items())
            if name.startswith(prefix)
        ]

    async def memory_bytes(self) -> int | None:
        """Unknown."""
        return None

    async def restart(self) -> None:
        """A fresh namespace on the same files (never after close)."""
        if self.closed:
            raise SandboxFailure(f"sandbox {self._id} is closed")
        self._fresh_namespace()
        self._alive = True
        self.restarts += 1

    async def close(self) -> None:
        """Gone."""
        self._alive = False
        self.closed = True
        self._backend.live.pop(self._id, None)


class FakeBackend:
    """Makes FakeSandboxes; can be told to be slow to start, or to fail."""

    name = "fake"

    def __init__(self, start_delay_s: float = 0.0) -> None:
        self.start_delay_s = start_delay_s
        self.fail_with: Exception | None = None
        self.live: dict[str, FakeSandbox] = {}
        self.created: list[FakeSandbox] = []

    async def start(self) -> None:
        """Nothing to check."""

    def separate_stateless(self, language: Language) -> bool:
        """Fake sandboxes are of one kind."""
        return False

    async def create(self, language: Language, *, stateless: bool = False) -> FakeSandbox:
        """A ready sandbox (after start_delay_s), or fail_with."""
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        sandbox = FakeSandbox(self, language)
        self.live[sandbox.id] = sandbox
        self.created.append(sandbox)
        return sandbox

    def health(self) -> BackendHealth:
        """How many sandboxes are alive."""
        return BackendHealth(backend=self.name, live_sandboxes=len(self.live))

    async def close(self) -> None:
        """Close every sandbox."""
        for sandbox in list(self.live.values()):
            await sandbox.close()
