"""A client whose executor is still being reached: calls wait for it, nothing else does.

`code-exec mcp` shares one local executor between processes and starts it when none runs,
which takes seconds (the sandbox pools, the zygote). MCP clients give a server about five
seconds to answer `initialize`; the tools' descriptions need nothing of the executor but its
limits, which the local executor takes from the same settings. So the server answers at once,
the executor is reached in the background (begun when the client is made), and the first call
that needs it waits for it. When it cannot be reached, every such call fails with the reason.
"""

import asyncio
from collections.abc import Awaitable, Callable

from executor.errors import ExecutorError, Unavailable
from executor.interface import Download, ExecutorClient, OutputCallback
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.health import Health
from schemas.languages import Language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry


class DeferredClient:
    """An ExecutorClient over one that `opener` makes, in the background, from the start."""

    def __init__(self, opener: Callable[[], Awaitable[ExecutorClient]]) -> None:
        self._task: asyncio.Task[ExecutorClient] = asyncio.ensure_future(opener())

    async def _client(self) -> ExecutorClient:
        try:
            # Shielded: a call that is cancelled must not cancel the start others wait for.
            return await asyncio.shield(self._task)
        except ExecutorError:
            raise
        except Exception as exc:
            raise Unavailable(f"the executor could not be reached: {exc}", retry_after=5.0) from exc

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code, once the executor is there."""
        return await (await self._client()).execute(request, user, on_output)

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """Lines of a stored output."""
        return await (await self._client()).read_output(query, user)

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """A file a run made."""
        return await (await self._client()).download_output(execution_id, name, user)

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """Open a session."""
        return await (await self._client()).open_session(language, user, options)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        return await (await self._client()).get_session(session_id, user)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        return await (await self._client()).list_sessions(user)

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """Code mode's tools that match query."""
        return await (await self._client()).search_tools(query, user, limit)

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Close a session."""
        return await (await self._client()).close_session(session_id, user)

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file into a session."""
        return await (await self._client()).upload_file(session_id, user, path, data)

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """A session's files."""
        return await (await self._client()).list_files(session_id, user, path)

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """A session's file."""
        return await (await self._client()).download_file(session_id, user, path)

    async def health(self) -> Health:
        """The executor's health (waits for it)."""
        return await (await self._client()).health()

    async def aclose(self) -> None:
        """Close the client if it was made; stop making it if not."""
        if not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001 - cancelled, or failed: nothing to close
                return
        elif self._task.cancelled() or self._task.exception() is not None:
            return
        await self._task.result().aclose()
