"""The per-user cap on runs in progress, around any ExecutorClient.

The composition root wraps the one client every front-end uses, so the cap holds wherever a
run comes from: the OpenAI endpoint, the seed APIs, MCP over HTTP or stdio.
"""

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from executor.errors import LimitExceeded
from executor.interface import Download, ExecutorClient, OutputCallback
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.health import Health
from schemas.languages import Language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry


class RunLimiter:
    """At most `cap` runs in progress per user; the next one gets 429 with Retry-After."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._running: defaultdict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def slot(self, user: str) -> AsyncIterator[None]:
        """Hold one of the user's run slots for the duration of the block."""
        if self._running[user] >= self.cap:
            raise LimitExceeded(
                f"{self.cap} runs of this user are in progress, the limit; wait for one to finish",
                retry_after=1.0,
            )
        self._running[user] += 1
        try:
            yield
        finally:
            self._running[user] -= 1
            if not self._running[user]:
                del self._running[user]


class CappedClient:
    """An ExecutorClient whose runs count against their user's cap."""

    def __init__(self, inner: ExecutorClient, cap: int) -> None:
        self.inner = inner
        self.limiter = RunLimiter(cap)

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code in one of the user's slots (LimitExceeded when all are taken)."""
        async with self.limiter.slot(user):
            return await self.inner.execute(request, user, on_output)

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """Uncapped: see ExecutorClient."""
        return await self.inner.read_output(query, user)

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """Uncapped: see ExecutorClient."""
        return await self.inner.download_output(execution_id, name, user)

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """Uncapped (sessions have their own caps in the executor)."""
        return await self.inner.open_session(language, user, options)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Uncapped: see ExecutorClient."""
        return await self.inner.get_session(session_id, user)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """Uncapped: see ExecutorClient."""
        return await self.inner.list_sessions(user)

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """Uncapped: see ExecutorClient."""
        return await self.inner.search_tools(query, user, limit)

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Uncapped: see ExecutorClient."""
        return await self.inner.close_session(session_id, user)

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Uncapped: see ExecutorClient."""
        return await self.inner.upload_file(session_id, user, path, data)

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """Uncapped: see ExecutorClient."""
        return await self.inner.list_files(session_id, user, path)

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """Uncapped: see ExecutorClient."""
        return await self.inner.download_file(session_id, user, path)

    async def health(self) -> Health:
        """The wrapped client's health."""
        return await self.inner.health()

    async def aclose(self) -> None:
        """Close the wrapped client."""
        await self.inner.aclose()
