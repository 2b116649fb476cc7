"""The MCP server over streamable HTTP, served at /mcp inside the API host.

The host authenticates every request; this front-end only asks it who the user is (user_of),
per request, so a leaked MCP session id lends nobody else's identity. An unauthenticated
request raises the host's Unauthorized, which the host answers (401 with a challenge).
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.types import Receive, Scope, Send

from executor.errors import Unauthorized
from executor.interface import ExecutorClient
from executor.tools import ToolSet
from mcp_server.server import CodeExecServer


class McpHttp:
    """ASGI app: the host's user, then the MCP transport."""

    def __init__(self, user_of: Callable[[Scope], str]) -> None:
        self.user_of = user_of
        self.manager: StreamableHTTPSessionManager | None = None

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the unauthenticated, then serve."""
        if scope["type"] != "http" or self.manager is None:
            return
        self.user_of(scope)
        await self.manager.handle_request(scope, receive, send)
