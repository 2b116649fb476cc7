"""`code-exec mcp`: the MCP server over stdio, for Claude Desktop and other local clients."""

from contextlib import AbstractAsyncContextManager

from mcp.server.stdio import stdio_server

from executor.interface import ExecutorClient
from executor.tools import ToolSet
from mcp_server.server import CodeExecServer


async def serve_stdio(
    connect: AbstractAsyncContextManager[tuple[ExecutorClient, ToolSet]], user: str
) -> None:
    """Serve one client on stdin/stdout until it disconnects; then close everything."""
    async with connect as (client, tools):
        server = CodeExecServer(client, tools, lambda ctx: user)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.options())
