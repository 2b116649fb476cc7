"""`code-exec mcp`: the MCP server over stdio, for Claude Desktop and other local clients.

It ends, closing every sandbox it started, when its input ends or on SIGTERM or SIGINT: the
SDK's stdio clients close stdin, wait briefly, then send SIGTERM, and a process that died
without its cleanup would leave its workspaces mounted.
"""

import asyncio
import logging
import os
import signal
import stat
from contextlib import AbstractAsyncContextManager

import anyio
from mcp.server.stdio import stdio_server

from executor.interface import ExecutorClient
from executor.tools import ToolSet
from mcp_server.server import CodeExecServer

log = logging.getLogger(__name__)


class _Lines:
    """Lines of stdin read by the event loop itself. The SDK's default reads stdin in a worker
    thread, and a thread blocked in read() cannot be cancelled: on SIGTERM the process would
    wait for the next line of input before it could clean up."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> "_Lines":
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def _cancellable_stdin() -> _Lines | None:
    """stdin as lines the event loop reads (None, the SDK's default, for a regular file)."""
    if stat.S_ISREG(os.fstat(0).st_mode):
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0, closefd=False)
    )
    return _Lines(reader)


async def serve_stdio(
    connect: AbstractAsyncContextManager[tuple[ExecutorClient, ToolSet]],
    user: str,
    resource_links: bool = True,
) -> None:
    """Serve one client on stdin/stdout until it disconnects; then close everything."""
    async with connect as (client, tools):
        server = CodeExecServer(client, tools, lambda ctx: user, lambda ctx: resource_links)
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for received in signals:
                        log.info("code-exec mcp: %s, shutting down", signal.Signals(received).name)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(stop_on_signal)
            stdin = await _cancellable_stdin()
            async with stdio_server(stdin=stdin) as (read, write):  # type: ignore[arg-type]
                await server.run(read, write, server.options())
            group.cancel_scope.cancel()  # the input ended: no signal to wait for
