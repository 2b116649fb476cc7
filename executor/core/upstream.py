"""Code mode's upstream: the operator's MCP servers, connected as an MCP client (the official
SDK) and kept connected, whose tools sandbox code calls (through a run's gate, code_mode.py).

Each server has a task that connects, lists its tools and holds the session; a server that
cannot start, or dies, is connected again with a backoff (1 s, doubling, at most 30 s), and
calls in the meantime fail with a message saying so. Credentials (a server's env, a URL's
headers) live here only: sandboxes see tool names, descriptions and results.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from schemas.health import UpstreamHealth
from schemas.upstream import ToolEntry, ToolReply, UpstreamConfig, UpstreamServer, python_name

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_READY_WAIT_S = 5.0  # a call waits this long for a server being (re)connected
_MAX_TOOLS = 1000  # per server: a tool list is kept in memory and sent to sandboxes
PING_INTERVAL_S = 30.0  # an idle connection is pinged this often: a dead server is noticed


class UpstreamConnection:
    """One upstream server: its session while connected, its tools, why it is not."""

    def __init__(self, name: str, config: UpstreamServer, call_timeout_s: float) -> None:
        self.name = name
        self.config = config
        self.call_timeout_s = call_timeout_s
        self.tools: list[types.Tool] = []
        self.error: str | None = "not connected yet"
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._changed = asyncio.Event()  # the server said its tools changed
        self._wake = asyncio.Event()  # either of the above: the watcher has work
        self.tried = asyncio.Event()  # the first connection attempt ended, either way
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect, and keep connecting, in the background."""
        self._task = asyncio.create_task(self._keep(), name=f"upstream-{self.name}")

    async def aclose(self) -> None:
        """Disconnect (an stdio server's process ends with it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[ClientSession]:
        config = self.config
        if config.command is not None:
            # The SDK adds a minimal environment (PATH, HOME, USER...), not the executor's.
            params = StdioServerParameters(command=config.command, args=config.args, env=config.env)
            async with (
                stdio_client(params) as (read, write),  # its stderr: the executor's
                ClientSession(read, write, message_handler=self._on_message) as session,
            ):
                yield session
            return
        assert config.url is not None
        async with (
            httpx.AsyncClient(headers=config.headers, timeout=self.call_timeout_s) as http,
            streamable_http_client(config.url, http_client=http) as (read, write, _),
            ClientSession(read, write, message_handler=self._on_message) as session,
        ):
            yield session

    async def _keep(self) -> None:
        delay = 1.0
        while True:
            try:
                async with self._connect() as session:
                    with anyio.fail_after(self.call_timeout_s):
                        await session.initialize()
                        self.tools = await _list_tools(session)
                    self._session, self.error = session, None
                    self._ready.set()
                    self.tried.set()
                    log.info("upstream %s: connected, %d tools", self.name, len(self.tools))
                    delay = 1.0
                    await self._watch(session)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (any failure of a server we do not run)
                self.error = _describe(exc)
                log.warning(
                    "upstream %s: %s; connecting again in %.0f s", self.name, self.error, delay
                )
            finally:
                self._session = None
                self._ready.clear()
                self.tried.set()
            if self._lost.is_set():
                self._lost.clear()
                log.warning("upstream %s: %s; connecting again", self.name, self.error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _watch(self, session: ClientSession) -> None:
        """Until the connection is dropped: ping it when idle, list its tools again when it
        says they changed; return when it fails either (the keeper connects again)."""
        while True:
            with anyio.move_on_after(PING_INTERVAL_S) as idle:
                await self._wake.wait()
            self._wake.clear()
            if self._lost.is_set():
                return
            try:
                with anyio.fail_after(self.call_timeout_s):
                    if self._changed.is_set():
                        self._changed.clear()
                        self.tools = await _list_tools(session)
                        log.info("upstream %s: tools changed, %d now", self.name, len(self.tools))
                    elif idle.cancelled_caught:
                        await session.send_ping()
            except Exception as exc:  # noqa: BLE001 (a dead or stuck server, whatever it says)
                self.error = f"stopped answering ({_describe(exc)})"
                log.warning("upstream %s: %s; connecting again", self.name, self.error)
                return

    async def _on_message(self, message: object) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            self._changed.set()
            self._wake.set()

    def _drop(self) -> None:
        """Stop using this session; the keeper connects again."""
        if self._session is not None:
            self._session = None
            self.error = "the connection was lost or stopped answering"
            self._ready.clear()
            self._lost.set()
            self._wake.set()

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolReply:
        """Call one tool; a reply (its failure included), never an exception."""
        if self._session is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), _READY_WAIT_S)
        session = self._session
        if session is None:
            return ToolReply(
                ok=False, error=f"upstream server {self.name!r} is not available: {self.error}"
            )
        try:
            result = await session.call_tool(
                tool, arguments, read_timeout_seconds=timedelta(seconds=self.call_timeout_s)
            )
        except McpError as exc:
            if "timed out" in exc.error.message.lower():
                # A server that does not answer may answer nothing more (one blocked loop
                # serves every call): it is connected again (an stdio one started again).
                self._drop()
                return ToolReply(
                    ok=False,
                    error=f"{self.name}.{tool} did not answer within {self.call_timeout_s:g} s",
                )
            if exc.error.code == types.CONNECTION_CLOSED:
                self._drop()
            return ToolReply(ok=False, error=f"{self.name}.{tool}: {exc.error.message}")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            self._drop()
            return ToolReply(
                ok=False, error=f"upstream server {self.name!r} went away ({_describe(exc)})"
            )
        schema = next((t.outputSchema for t in self.tools if t.name == tool), None)
        return _reply(result, schema)


def _reply(result: types.CallToolResult, output_schema: dict[str, Any] | None) -> ToolReply:
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    if result.isError:
        return ToolReply(ok=False, error=text or "the tool reported an error")
    structured = result.structuredContent
    if structured is None:
        return ToolReply(ok=True, text=text)
    # A value that is not an object travels as {"result": value}, its schema saying so (the
    # SDK's servers do this): code gets the value itself.
    properties = (output_schema or {}).get("properties") or {}
    if set(properties) == {"result"} and set(structured) == {"result"}:
        structured = structured["result"]
    # The text is most often the same as JSON: not sent twice.
    return ToolReply(ok=True, structured=structured)


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while len(tools) < _MAX_TOOLS:
        page = await session.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.nextCursor
        if not cursor:
            break
    return tools[:_MAX_TOOLS]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]


class UpstreamHub:
    """Every upstream server, and their tools as each user may call them."""

    def __init__(self, config: UpstreamConfig, call_timeout_s: float) -> None:
        self.servers = {
            name: UpstreamConnection(name, server, call_timeout_s)
            for name, server in config.servers.items()
        }

    def start(self) -> None:
        """Connect to every server, in the background."""
        for server in self.servers.values():
            server.start()

    async def aclose(self) -> None:
        """Disconnect from every server."""
        for server in self.servers.values():
            await server.aclose()

    async def settle(self) -> None:
        """Wait (at most _READY_WAIT_S) for servers still making their first connection: a
        run right after the executor starts sees their tools, not an empty list."""
        pending = [s.tried.wait() for s in self.servers.values() if not s.tried.is_set()]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), _READY_WAIT_S)

    def health(self) -> dict[str, UpstreamHealth]:
        """Each server: connected or why not, and how many tools it lists."""
        return {
            name: UpstreamHealth(
                connected=server.error is None, tools=len(server.tools), error=server.error
            )
            for name, server in self.servers.items()
        }

    def allowed(self, user: str, server: str, tool: str) -> str | None:
        """Why the user's code may not call this tool, or None when it may."""
        connection = self.servers.get(server)
        if connection is None or not connection.config.open_to(user):
            # A server this user may not use is, to them, no server: not even its name shows.
            mine = [name for name, other in self.servers.items() if other.config.open_to(user)]
            return f"no upstream server {server!r}; there are: {', '.join(mine) or 'none'}"
        config = connection.config
        if config.tools is not None and tool not in config.tools:
            return (
                f"{server}.{tool} is not among the tools code may call ({', '.join(config.tools)})"
            )
        return None

    def catalogue(self, user: str) -> list[ToolEntry]:
        """The tools this user's code may call, server by server."""
        entries = []
        for name, connection in self.servers.items():
            for tool in connection.tools:
                if self.allowed(user, name, tool.name) is None:
                    entries.append(
                        ToolEntry(
                            server=name,
                            name=tool.name,
                            function=python_name(tool.name),
                            description=tool.description or "",
                            input_schema=tool.inputSchema,
                        )
                    )
        return entries

    def search(self, user: str, query: str, limit: int = 10) -> list[ToolEntry]:
        """The user's tools that best match the words of query (name first, then description)."""
        words = [w for w in query.lower().split() if w]
        scored = []
        for entry in self.catalogue(user):
            name = f"{entry.server}.{entry.name}".lower()
            text = entry.description.lower()
            score = sum(3 * (w in name) + (w in text) for w in words) if words else 1
            if score:
                scored.append((score, entry))
        scored.sort(key=lambda pair: (-pair[0], pair[1].server, pair[1].name))
        return [entry for _, entry in scored[:limit]]

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> ToolReply:
        """One call (the caller checked it is allowed)."""
        return await self.servers[server].call(tool, arguments)
