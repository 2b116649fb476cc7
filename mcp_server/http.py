"""The MCP server over streamable HTTP, served at /mcp inside the API host.

The host authenticates every request; this front-end only asks it who the user is (user_of),
per request, so a leaked MCP session id lends nobody else's identity. An unauthenticated
request raises the host's Unauthorized, which the host answers (401 with a challenge).

Each MCP session belongs to the user who opened it: the SDK's transport answers 404 to any
request (a DELETE included) that carries another user's session id. And each user may hold
at most `max_sessions_per_user` MCP sessions at once, so nobody can fill the transport's
global session limit and lock everyone else out.
"""

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.types import Receive, Scope, Send

from executor.errors import LimitExceeded, Unauthorized
from executor.interface import ExecutorClient
from executor.tools import ToolSet
from mcp_server.server import CodeExecServer

MAX_SESSIONS_PER_USER = 32
SESSION_ID_HEADER = b"mcp-session-id"


class McpHttp:
    """ASGI app: the host's user, then the MCP transport."""

    def __init__(
        self, user_of: Callable[[Scope], str], max_sessions_per_user: int = MAX_SESSIONS_PER_USER
    ) -> None:
        self.user_of = user_of
        self.max_sessions_per_user = max_sessions_per_user
        self.manager: StreamableHTTPSessionManager | None = None
        self._opening: Counter[str] = Counter()

    def bind(self, client: ExecutorClient, tools: ToolSet) -> None:
        """Serve the tools through this executor client (known once the app starts)."""

        def user_of(ctx: RequestContext[Any, Any, Any]) -> str:
            scope: Scope | None = getattr(ctx.request, "scope", None)
            if scope is None:
                raise Unauthorized("no HTTP request behind this MCP call")
            return self.user_of(scope)

        server = CodeExecServer(client, tools, user_of)
        self.manager = StreamableHTTPSessionManager(app=server)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the transport's session manager for the app's lifetime."""
        assert self.manager is not None
        async with self.manager.run():
            yield

    def sessions_of(self, user: str) -> int:
        """MCP sessions the user has open now."""
        assert self.manager is not None
        # The SDK keeps who opened each session (to refuse other credentials); it is the one
        # record of which sessions are still open.
        owners: dict[str, Any] = self.manager._session_owners  # noqa: SLF001
        return sum(1 for owner in owners.values() if owner.get("subject") == user)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the unauthenticated and those over their cap, then serve as the user."""
        if scope["type"] != "http" or self.manager is None:
            return
        user = self.user_of(scope)
        # The SDK binds a session to the credential that opened it (client, issuer, subject).
        scope["user"] = AuthenticatedUser(
            AccessToken(token="", client_id=user, scopes=[], subject=user)
        )
        opening = scope["method"] == "POST" and not any(
            name == SESSION_ID_HEADER for name, _ in scope["headers"]
        )
        if not opening:
            await self.manager.handle_request(scope, receive, send)
            return
        # Sessions being opened count too, so a burst cannot slip past the cap.
        if self.sessions_of(user) + self._opening[user] >= self.max_sessions_per_user:
            raise LimitExceeded(
                f"{self.max_sessions_per_user} MCP sessions of this user are open, the limit; "
                "end one (DELETE /mcp with its Mcp-Session-Id) or wait for an idle one to expire",
                retry_after=60,
            )
        self._opening[user] += 1
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            self._opening[user] -= 1
            if not self._opening[user]:
                del self._opening[user]
