"""`code-exec mcp`: the MCP server over stdio, for Claude Desktop and other local clients."""

import anyio
from mcp.server.stdio import stdio_server

from executor.client import ExecutorClient, HttpClient, InProcessClient
from executor.config import ExecutorSettings
from executor.service import Executor
from mcp_server.server import CodeExecServer


async def serve_stdio(user: str, executor_url: str | None, internal_token: str | None) -> None:
    """Serve one client on stdin/stdout until it disconnects; then close everything."""
    executor: Executor | None = None
    client: ExecutorClient
    if executor_url:
        if not internal_token:
            raise RuntimeError("--executor-url needs CODE_EXEC_INTERNAL_TOKEN")
        client = HttpClient(executor_url, internal_token)
    else:
        executor = Executor(ExecutorSettings())
        await executor.start()
        client = InProcessClient(executor)
    server = CodeExecServer(client, lambda ctx: user)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.options())
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
            if executor is not None:
                await executor.close()
