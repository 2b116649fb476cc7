"""What every caller may ask of an executor: the one interface, and its wire names.

The Executor (in process), the HTTP client (one remote executor), the routing client (several)
and the per-user cap all satisfy ExecutorClient, and raise the exceptions of executor.errors;
a front-end never knows which one it holds. This module imports nothing but schemas, so both
sides of the wire can use it without loading the other.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import quote, unquote

from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.health import Health
from schemas.languages import Language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry

OutputCallback = Callable[[str, str], Awaitable[None]]
"""Called with ("stdout" | "stderr", text) as output is produced."""

AUTH_HEADER = "Internal-Auth-Token"
"""The executor's shared secret, sent by its HTTP clients."""
USER_HEADER = "X-Code-Exec-User"
"""The user an HTTP client acts for (the API's token subject), percent-encoded (UTF-8)."""


DOWNLOAD_CHUNK = 1 << 20
"""Bytes a download holds at a time."""


def user_header(user: str) -> str:
    """A user name as USER_HEADER carries it: any name survives (non-ASCII, spaces)."""
    return quote(user, safe="")


def user_of_header(value: str) -> str:
    """The user name a USER_HEADER value carries."""
    return unquote(value, errors="strict")


@dataclass
class Download:
    """A file on its way out: its size, and its bytes in chunks, read only as they are sent
    (so a download holds one chunk in memory, not the file)."""

    size: int
    chunks: AsyncIterator[bytes]

    @classmethod
    def of(cls, data: bytes) -> "Download":
        """A download of bytes already in memory."""

        async def once() -> AsyncIterator[bytes]:
            yield data

        return cls(len(data), once())

    @classmethod
    def from_file(cls, file: BinaryIO, size: int) -> "Download":
        """A download read from an open file in chunks, off the event loop; closed at the end
        (or when dropped unread: the file object owns its descriptor)."""

        async def chunks() -> AsyncIterator[bytes]:
            with file:
                left = size  # what was checked: the file may grow meanwhile
                while left > 0:
                    chunk = await asyncio.to_thread(file.read, min(DOWNLOAD_CHUNK, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    yield chunk

        return cls(size, chunks())

    async def read(self) -> bytes:
        """All of it at once (for small files, and tests)."""
        return b"".join([chunk async for chunk in self.chunks])

    async def read_at_most(self, limit: int) -> bytes | None:
        """The whole file, or None (the download let go) when it is over limit bytes."""
        if self.size > limit:
            await self.release()
            return None
        data = bytearray()
        try:
            async for chunk in self.chunks:
                data += chunk
                if len(data) > limit:  # grown since it was measured
                    return None
        finally:
            await self._close()
        return bytes(data)

    async def release(self) -> None:
        """Let go of a download that will not be sent: its file, its connection to an executor."""
        if isinstance(self.chunks, AsyncGenerator):
            # The HTTP client's download closes its response in its generator's `finally`,
            # which runs only once the generator has started: so it is started (one chunk).
            try:
                # Letting go never fails, whatever the file or the connection says now.
                with contextlib.suppress(Exception):
                    await anext(self.chunks, None)
            finally:
                await self._close()

    async def _close(self) -> None:
        if isinstance(self.chunks, AsyncGenerator):
            await self.chunks.aclose()


class ExecutorClient(Protocol):
    """What a front-end may ask of the executor."""

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code; stream output to on_output when given."""
        ...

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """Lines of the whole output of a cut result (its owner only)."""
        ...

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """A file a run made and the executor kept (a figure: image-0.png), its owner only."""
        ...

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """Open a session."""
        ...

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe one of the user's sessions."""
        ...

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        ...

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Close one of the user's sessions and free its sandbox."""
        ...

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file into a session's workspace."""
        ...

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List a session's workspace, recursively."""
        ...

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """A file of a session's workspace, to be streamed."""
        ...

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """Code mode: the upstream tools the user's code may call that best match query."""
        ...

    async def health(self) -> Health:
        """Pools, backend and the limits in force."""
        ...

    async def aclose(self) -> None:
        """Release what the client holds (the Executor: every sandbox)."""
        ...
