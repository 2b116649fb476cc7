"""The MCP server over streamable HTTP, served at /mcp on the API behind its bearer auth."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.types import Receive, Scope, Send

from executor.app import error_response
from executor.client import ExecutorClient
from executor.errors import ExecutorError, Unauthorized
from mcp_server.server import CodeExecServer
from openai_tools.auth import Authenticator

USER_KEY = "code_exec.user"


def _user_of(ctx: RequestContext[Any, Any, Any]) -> str:
    # The user comes from each request's own token, never from the MCP session id, so a
    # session id that leaks lends nobody else's identity.
    request = ctx.request
    scope = getattr(request, "scope", None)
    if scope is None or USER_KEY not in scope:
        raise Unauthorized("no authenticated user on this request")
    user: str = scope[USER_KEY]
    return user


class McpMount:
    """ASGI app: checks the bearer token, then hands the request to the MCP transport."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.manager: StreamableHTTPSessionManager | None = None

    def bind(self, client: ExecutorClient) -> None:
        """Serve the tools through this executor client (known once the app starts)."""
        self.manager = StreamableHTTPSessionManager(app=CodeExecServer(client, _user_of))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the transport's session manager for the app's lifetime."""
        assert self.manager is not None
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then serve."""
        if scope["type"] != "http" or self.manager is None:
            return
        headers = dict(scope["headers"])
        try:
            scheme, _, token = headers.get(b"authorization", b"").decode().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("missing Authorization: Bearer <token> (see /v1/auth/token)")
            scope[USER_KEY] = self.auth.verify(token.strip())
        except ExecutorError as exc:
            response = error_response(exc)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
