"""The official `mcp` client (ClientSession) over stdio and streamable HTTP, through every flow
of tests/clients/flows.py: each episode is a new connection (a new process over stdio)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.session import MessageHandlerFnT
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tests.clients.flows import EPISODES, SESSION_ID, Play, Seen
from tests.clients.servers import (
    Http,
    Stdio,
    http,
    mcp_api,
    runs_in_progress,
    shared_executor_health,
    stdio,
    stdio_state,
)
from tests.openai_tools.conftest import Api

__all__ = ["http", "mcp_api", "stdio", "stdio_state"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def seen(result: types.CallToolResult) -> Seen:
    """The result as a model is given it: the text blocks, and the images beside them."""
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    images = sum(isinstance(c, types.ImageContent) for c in result.content)
    return Seen(text, images)


@asynccontextmanager
async def connect(
    where: Stdio | Http, on_message: MessageHandlerFnT | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized session over stdio (a new process) or streamable HTTP."""
    if isinstance(where, Stdio):
        params = StdioServerParameters(command=where.command, args=where.args, env=where.env)
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write, message_handler=on_message) as session,
        ):
            await session.initialize()
            yield session
        return
    async with (
        httpx.AsyncClient(headers=where.headers, timeout=60) as client,
        streamable_http_client(where.url, http_client=client) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield session


async def play(where: Stdio | Http) -> Play:
    """Every flow, each episode over a connection of its own."""
    done = Play()
    for episode in EPISODES:
        async with connect(where) as session:
            listed = await session.list_tools()
            assert {t.name for t in listed.tools} >= {"run_code", "open_session", "close_session"}
            for step in episode:
                result = await session.call_tool(step.tool, step.arguments(done.memory))
                done.record(step, seen(result))
    return done


async def test_every_flow_over_stdio(stdio: Stdio) -> None:
    await play(stdio)


async def test_every_flow_over_streamable_http(http: Http) -> None:
    await play(http)


SLEEPER = {"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "timeout": 120}


def _runs(api: Api) -> int:
    return runs_in_progress(api.http.get("/health").json())


async def _until(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (polling another process's /health)
            await anyio.sleep(0.1)


async def cancel_mid_run(where: Stdio | Http, runs: Callable[[], int]) -> None:
    """notifications/cancelled ends the run: its sandbox goes, the server answers the next call."""
    async with connect(where) as session:
        await session.call_tool("run_code", {"code": "print(1)"})  # the tool list is known now
        await _until(lambda: runs() == 0)
        errors: list[str] = []
        request_id = session._request_id  # noqa: SLF001 (the id the next request gets)

        async def run() -> None:
            with pytest.raises(McpError) as raised:
                await session.call_tool("run_code", SLEEPER)
            errors.append(raised.value.error.message)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run)
            await _until(lambda: runs() == 1)
            cancel = types.CancelledNotification(
                params=types.CancelledNotificationParams(
                    requestId=request_id, reason="user pressed stop"
                )
            )
            await session.send_notification(types.ClientNotification(cancel))
            await _until(lambda: runs() == 0)
        assert errors == ["Request cancelled"]
        result = await session.call_tool("run_code", {"code": "print(6 * 7)"})
        assert seen(result) == Seen("exit_code: 0\nstdout:\n42")


async def test_a_cancelled_run_is_killed_over_streamable_http(mcp_api: Api, http: Http) -> None:
    await cancel_mid_run(http, lambda: _runs(mcp_api))


async def test_a_cancelled_run_is_killed_over_stdio(stdio: Stdio, stdio_state: Path) -> None:
    """Over stdio the run is in the shared executor: cancelling reaches it there."""
    await cancel_mid_run(stdio, lambda: runs_in_progress(shared_executor_health(stdio_state)))


async def test_a_stdio_client_that_goes_away_mid_run_leaves_nothing_running(
    stdio: Stdio, stdio_state: Path
) -> None:
    """The client ends `code-exec mcp` mid-run (its input closes): the shared executor, which
    outlives it, cancels the run rather than keep its sandbox until the run's timeout."""

    async with connect(stdio) as session:  # the shared executor starts
        await session.call_tool("run_code", {"code": "print(1)"})
    with anyio.move_on_after(3):
        async with connect(stdio) as session:
            await session.call_tool("run_code", SLEEPER)
    await _until(lambda: runs_in_progress(shared_executor_health(stdio_state)) == 0)
    async with connect(stdio) as session:
        result = await session.call_tool("run_code", {"code": "print(6 * 7)"})
        assert seen(result) == Seen("exit_code: 0\nstdout:\n42")


async def test_ending_the_mcp_session_mid_run_cancels_its_run(mcp_api: Api, http: Http) -> None:
    """A client that ends its MCP session (DELETE /mcp) while a call runs: the run stops."""
    await _until(lambda: _runs(mcp_api) == 0)
    async with (
        httpx.AsyncClient(headers=http.headers, timeout=60) as client,
        streamable_http_client(http.url, http_client=client) as (read, write, session_id),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(session.call_tool, "run_code", SLEEPER)
            await _until(lambda: _runs(mcp_api) == 1)
            ended = await client.delete(http.url, headers={"mcp-session-id": str(session_id())})
            assert ended.status_code == 200
            await _until(lambda: _runs(mcp_api) == 0, timeout_s=15)
            tasks.cancel_scope.cancel()


REPORT = "open('report.csv', 'w').write('a,b\\n1,2\\n')\nopen('.hidden', 'w').write('x')"


async def test_a_sessions_files_are_resources_of_its_owner_over_streamable_http(
    mcp_api: Api, http: Http
) -> None:
    """resources/list shows the files of the user's sessions and resources/read gives them; a
    run that changes them is announced (notifications/resources/list_changed, on the call's
    own stream); another user lists nothing and reads nothing, over MCP or REST."""
    announced: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceListChangedNotification
        ):
            announced.append(message.root.method)

    async with connect(http, on_message) as session:
        assert session.get_server_capabilities().resources.listChanged  # type: ignore[union-attr]
        found = SESSION_ID.search(seen(await session.call_tool("open_session", {})).text)
        assert found is not None
        sid = found.group(1)
        await session.call_tool("run_code", {"code": REPORT, "session_id": sid})
        await _until(lambda: len(announced) == 1, timeout_s=5)
        await session.call_tool("run_code", {"code": "print(1)", "session_id": sid})
        listed = (await session.list_resources()).resources
        assert [(r.name, r.mimeType, r.size) for r in listed] == [("report.csv", "text/csv", 8)]
        uri = listed[0].uri
        read = await session.read_resource(uri)
        assert read.contents[0].text == "a,b\n1,2\n"  # type: ignore[union-attr]
        assert announced == ["notifications/resources/list_changed"]  # print(1) changed nothing
    mallory = Http(http.url, mcp_api.headers("mallory"))
    async with connect(mallory) as session:
        assert (await session.list_resources()).resources == []
        with pytest.raises(McpError) as refused:
            await session.read_resource(uri)
        assert refused.value.error.code == -32002
    rest = f"/v1/code_interpreter/sessions/{sid}/files/report.csv"
    assert mcp_api.http.get(rest, headers=mcp_api.headers("mallory")).status_code == 404
    assert mcp_api.http.get(rest, headers=http.headers).content == b"a,b\n1,2\n"
