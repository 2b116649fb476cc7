"""Output captured from a stream while it is produced, held in bounded memory.

A program may print a gigabyte; we keep the first and the last max_bytes/2 and count the rest,
so memory stays flat whatever the program does. The counts say what was cut. With a spill
path, output past the in-memory head also goes to a file (up to spill_limit bytes), so that
the whole of it can be read back later; the file is only created when it is needed.
"""

from pathlib import Path
from typing import BinaryIO

_CONTINUATION_MASK = 0xC0
_CONTINUATION = 0x80


def _lead_length(byte: int) -> int:
    """Length of the UTF-8 sequence that a lead byte starts (1 for ASCII or invalid bytes)."""
    if byte >= 0xF0:
        return 4
    if byte >= 0xE0:
        return 3
    if byte >= 0xC0:
        return 2
    return 1


def trim_incomplete_utf8_end(data: bytes) -> bytes:
    """Drop a multi-byte character cut off at the end, so no character is split."""
    end = len(data)
    i = end - 1
    while i >= 0 and end - i <= 4 and data[i] & _CONTINUATION_MASK == _CONTINUATION:
        i -= 1
    if i >= 0 and i < end and _lead_length(data[i]) > end - i:
        return data[:i]
    return data


def trim_incomplete_utf8_start(data: bytes) -> bytes:
    """Drop continuation bytes at the start left over from a character cut off before it."""
    i = 0
    while i < len(data) and i < 3 and data[i] & _CONTINUATION_MASK == _CONTINUATION:
        i += 1
    return data[i:]


class StreamCapture:
    """Keeps the head and the tail of a byte stream, counting bytes and lines of all of it."""

    def __init__(
        self, max_bytes: int, spill_path: Path | None = None, spill_limit: int = 0
    ) -> None:
        self.head_limit = max_bytes // 2
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self._tail = bytearray()
        self.total_bytes = 0
        self._newlines = 0
        self._ends_with_newline = True
        self.spill_path = spill_path
        self._spill_limit = spill_limit
        self._spill: BinaryIO | None = None
        self.spilled_bytes = 0

    def _spill_write(self, data: bytes) -> None:
        if self.spill_path is None or self.spilled_bytes >= self._spill_limit:
            return
        if self._spill is None:
            self._spill = open(self.spill_path, "wb")  # noqa: SIM115  (closed by close())
            self._spill.write(self.head)
            self.spilled_bytes = len(self.head)
        data = data[: self._spill_limit - self.spilled_bytes]
        self._spill.write(data)
        self.spilled_bytes += len(data)

    @property
    def spilled(self) -> bool:
        """Whether a spill file holds the output past the head."""
        return self._spill is not None

    def close(self) -> None:
        """Finish the spill file; when it hit its limit, append the tail after a marker."""
        if self._spill is None or self._spill.closed:
            return
        missing = self.total_bytes - self.spilled_bytes
        if missing > 0:
            tail = self.tail[-min(len(self.tail), missing) :]
            lost = missing - len(tail)
            if lost > 0:
                self._spill.write(
                    f"\n[... {lost} bytes not kept: over the output store's limit ...]\n".encode()
                )
            self._spill.write(tail)
        self._spill.close()

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the stream."""
        if not data:
            return
        self.total_bytes += len(data)
        self._newlines += data.count(b"\n")
        self._ends_with_newline = data.endswith(b"\n")
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self._spill_write(data)
            self._tail += data
            # Trim in batches: amortised O(1) per byte instead of a copy per chunk.
            if len(self._tail) > 2 * self.tail_limit:
                del self._tail[: len(self._tail) - self.tail_limit]

    @property
    def tail(self) -> bytes:
        """The last bytes past the head (at most tail_limit)."""
        return bytes(self._tail[-self.tail_limit :]) if self.tail_limit else b""

    @property
    def total_lines(self) -> int:
        """Lines in the whole stream; a last line without a newline counts."""
        return self._newlines + (0 if self._ends_with_newline else 1)

    @property
    def truncated(self) -> bool:
        """Whether bytes between the head and the tail were dropped."""
        return self.total_bytes > len(self.head) + len(self.tail)

    @property
    def kept_bytes(self) -> int:
        """Bytes held."""
        return len(self.head) + len(self.tail)

    def remove_last_line_with(self, marker: bytes) -> None:
        """Drop the last line containing marker (a line our own wrapper added), keeping counts."""
        for buffer in (self._tail, self.head):
            index = buffer.rfind(marker)
            if index < 0:
                continue
            start = buffer.rfind(b"\n", 0, index) + 1
            end = buffer.find(b"\n", index)
            end = len(buffer) if end < 0 else end + 1
            removed = bytes(buffer[start:end])
            del buffer[start:end]
            self.total_bytes -= len(removed)
            self._newlines -= removed.count(b"\n")
            was_last = end == len(buffer) + len(removed)
            if was_last and (buffer is self._tail or not self._tail):
                self._ends_with_newline = not buffer or buffer.endswith(b"\n")
            return

    def full_text(self) -> str:
        """Everything captured: the spill file when there is one, else the text in memory."""
        if self.spill_path is not None and self._spill is not None:
            self.close()
            return self.spill_path.read_bytes().decode("utf-8", errors="replace")
        return self.text()

    def text(self) -> str:
        """The captured text, with a marker line where the middle was dropped."""
        if not self.truncated:
            return (bytes(self.head) + self.tail).decode("utf-8", errors="replace")
        head = trim_incomplete_utf8_end(bytes(self.head)).decode("utf-8", errors="replace")
        tail = trim_incomplete_utf8_start(self.tail).decode("utf-8", errors="replace")
        dropped = self.total_bytes - self.kept_bytes
        marker = (
            f"[... {dropped} bytes dropped of {self.total_bytes} "
            f"({self.total_lines} lines in all): output over the capture limit ...]"
        )
        sep_before = "" if head.endswith("\n") or not head else "\n"
        return f"{head}{sep_before}{marker}\n{tail}"
