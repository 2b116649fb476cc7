"""The MCP server over streamable HTTP, served at /mcp inside the API host.

Requests from a browser page of another origin are refused (403), as the MCP specification
asks (DNS rebinding). The host authenticates every request; this front-end only asks it who
the user is (user_of), per request, so a leaked MCP session id lends nobody else's identity.
An unauthenticated request raises the host's Unauthorized, which the host answers (401 with a
challenge).

Each MCP session belongs to the user who opened it: the SDK's transport answers 404 to any
request (a DELETE included) that carries another user's session id. And each user may hold
at most `max_sessions_per_user` MCP sessions at once, so nobody can fill the transport's
global session limit and lock everyone else out.

Streams are resumable: every SSE stream opens with a priming event (an id, and the `retry`
interval to wait before reconnecting), and the events sent on it are kept for a while
(mcp_server/events.py, bounded), so a client whose connection dropped mid-call reconnects
with Last-Event-ID and gets what it missed, the result included.
"""

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.types import Receive, Scope, Send

from executor.errors import Forbidden, LimitExceeded, Unauthorized
from executor.interface import ExecutorClient
from executor.tools import ToolSet
from mcp_server.events import EventMemory
from mcp_server.server import CodeExecServer


class _QuietDisconnects(logging.Filter):
    """The SDK logs an ERROR with a traceback whenever an HTTP client goes away (its stream is
    closed under it): that is a client leaving, not a failure; it is logged at debug here."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, anyio.ClosedResourceError | anyio.BrokenResourceError):
            log.debug("an MCP client went away: %s", record.getMessage())
            return False
        return True


logging.getLogger("mcp.server.streamable_http").addFilter(_QuietDisconnects())
log = logging.getLogger(__name__)

MAX_SESSIONS_PER_USER = 32
# How long a client waits before it reconnects to a stream that dropped (the SSE `retry`).
RETRY_INTERVAL_MS = 1_000
SESSION_ID_HEADER = b"mcp-session-id"
# Browsers on this machine (the Inspector's web UI, a local app) may call; other pages only
# when the operator names their origins (CODE_EXEC_CORS_ORIGINS).
LOCAL_ORIGINS = ("http://localhost", "http://127.0.0.1", "http://[::1]")


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page from origin may call: a local origin (any port) or a named one."""
    if origin in allowed:
        return True
    return any(origin == local or origin.startswith(local + ":") for local in LOCAL_ORIGINS)


class _SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, with events kept per session: the SDK hands one event store
    to every session, whose streams are named alike (mcp_server/events.py says why)."""

    def __init__(self, app: CodeExecServer, events: EventMemory) -> None:
        super().__init__(app=app, retry_interval=RETRY_INTERVAL_MS)
        self.events = events

    def _admit_session(
        self, requestor: AuthorizationContext | None
    ) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            transport._event_store = self.events.session()  # noqa: SLF001
        return transport


def _resource_links(ctx: RequestContext[Any, Any, Any]) -> bool:
    """Whether a connection takes resource_link blocks: yes, unless its URL says
    ?resource_links=false (a client that hands them to a model provider as URLs)."""
    scope: Scope | None = getattr(ctx.request, "scope", None)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1")) if scope else {}
    return query.get("resource_links", ["true"])[-1].lower() not in ("false", "0", "no")


class McpHttp:
    """ASGI app: the host's user, then the MCP transport."""

    def __init__(
        self,
        user_of: Callable[[Scope], str],
        max_sessions_per_user: int = MAX_SESSIONS_PER_USER,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.user_of = user_of
        self.allowed_origins = allowed_origins
        self.max_sessions_per_user = max_sessions_per_user
        self.manager: StreamableHTTPSessionManager | None = None
        self.events = EventMemory()
        self._opening: Counter[str] = Counter()

    def bind(self, client: ExecutorClient, tools: ToolSet) -> None:
        """Serve the tools through this executor client (known once the app starts)."""

        def user_of(ctx: RequestContext[Any, Any, Any]) -> str:
            scope: Scope | None = getattr(ctx.request, "scope", None)
            if scope is None:
                raise Unauthorized("no HTTP request behind this MCP call")
            return self.user_of(scope)

        server = CodeExecServer(client, tools, user_of, _resource_links)
        self.manager = _SessionManager(server, self.events)

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
        """Refuse foreign pages, the unauthenticated and those over their cap; then serve."""
        if scope["type"] != "http" or self.manager is None:
            return
        raw = dict(scope["headers"]).get(b"origin")
        origin = raw.decode("latin-1") if raw is not None else None
        if origin is not None and not origin_allowed(origin, self.allowed_origins):
            # A page of another site (DNS rebinding makes it look same-host) may not call, even
            # with a token the browser holds: the MCP spec asks servers to check the Origin.
            raise Forbidden(
                f"origin {origin!r} may not call /mcp; name it in CODE_EXEC_CORS_ORIGINS if it "
                "should"
            )
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
