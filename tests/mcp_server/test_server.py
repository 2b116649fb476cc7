"""The MCP server through the official client: in memory, over stdio, over streamable HTTP.

In memory, the tests run over the fake backend (fast tier) and over real sandboxes (slow).
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.memory import create_connected_server_and_client_session

from executor.tools import ToolSet
from mcp_server.server import CodeExecServer
from tests.clients.servers import stdio_command, stdio_state
from tests.mcp_wire import initialize
from tests.openai_tools.conftest import Api, _port, mint, start_api

__all__ = ["stdio_state"]
pytestmark = pytest.mark.anyio


@pytest.fixture
async def memory(make_any_executor) -> AsyncIterator[tuple[ClientSession, object]]:  # type: ignore[no-untyped-def]
    executor = await make_any_executor()
    server = CodeExecServer(executor, ToolSet(), lambda ctx: "memory-user")
    async with create_connected_server_and_client_session(server) as session:
        yield session, executor


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_tools_are_listed_with_schemas_and_honest_annotations(memory) -> None:  # type: ignore[no-untyped-def]
    session, _ = memory
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert list(tools) == ["run_code", "open_session", "close_session", "read_output"]
    for tool in tools.values():
        # No output schema: clients would validate every result against it, and its words
        # would cost tokens in every request that lists the tools.
        assert tool.outputSchema is None and tool.inputSchema["type"] == "object"
        assert "$ref" not in str(tool.inputSchema)
        assert tool.annotations is not None and tool.annotations.openWorldHint is False
    assert tools["run_code"].annotations.destructiveHint is False  # type: ignore[union-attr]
    assert tools["read_output"].annotations.readOnlyHint is True  # type: ignore[union-attr]
    assert tools["close_session"].annotations.idempotentHint is True  # type: ignore[union-attr]
    assert "session_id" in tools["run_code"].description
    assert "without network" in tools["run_code"].description


async def test_run_code_returns_text_and_structured_content(memory) -> None:  # type: ignore[no-untyped-def]
    session, executor = memory
    plot = (
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"
        if executor.backend.name == "local"
        else "image('iVBORw0KGgo=')"
    )
    result = await session.call_tool("run_code", {"code": f"print('hello')\n{plot}\n6 * 7"})
    assert not result.isError
    assert _text(result) == (
        "exit_code: 0\nstdout:\nhello\nvalue: 42\nimages: 1 PNG (returned separately)"
    )
    assert result.structuredContent is not None
    assert result.structuredContent["stdout"] == "hello\n"
    # The image travels as an image, never as base64 inside structured data a model may read.
    assert result.structuredContent["images"] == [{"format": "png"}]
    [image] = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert image.mimeType == "image/png" and base64.b64decode(image.data)


async def test_a_python_exception_is_an_error_result_with_its_traceback(memory) -> None:  # type: ignore[no-untyped-def]
    session, _ = memory
    result = await session.call_tool("run_code", {"code": "def f():\n    return {}['k']\nf()"})
    assert result.isError
    text = _text(result)
    assert "error: KeyError: 'k'" in text and "Traceback" in text


async def test_a_real_traceback_names_the_cell_and_line(make_executor) -> None:  # type: ignore[no-untyped-def]
    server = CodeExecServer(await make_executor(), ToolSet(), lambda ctx: "u")
    async with create_connected_server_and_client_session(server) as session:
        result = await session.call_tool("run_code", {"code": "def f():\n    return {}['k']\nf()"})
    assert 'File "<cell-1>", line 2, in f' in _text(result)


async def test_a_matplotlib_plot_comes_back_as_a_png_image(make_executor) -> None:  # type: ignore[no-untyped-def]
    server = CodeExecServer(await make_executor(), ToolSet(), lambda ctx: "u")
    async with create_connected_server_and_client_session(server) as session:
        result = await session.call_tool(
        "run_code",
            {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()"},
        )
    images = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1 and images[0].mimeType == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG")


async def test_bad_arguments_are_an_error_result_not_a_crash(memory) -> None:  # type: ignore[no-untyped-def]
    session, _ = memory
    result = await session.call_tool("run_code", {"language": "python"})
    assert result.isError and "code: Field required" in _text(result)
    result = await session.call_tool("open_session", {"language": "fortran"})
    assert result.isError and "unsupported language 'fortran'" in _text(result)


async def test_output_streams_as_progress_when_asked(memory) -> None:  # type: ignore[no-untyped-def]
    session, _ = memory
    seen: list[str] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    code = (
        "import asyncio\nfor i in range(3):\n    print(f'step {i}', flush=True)\n"
        "    await asyncio.sleep(0.1)"
    )
    result = await session.call_tool(
        "run_code",
        {"code": code},
        progress_callback=progress,
        read_timeout_seconds=timedelta(seconds=60),
    )
    assert not result.isError
    assert "".join(seen) == "step 0\nstep 1\nstep 2\n"
    assert len(seen) >= 3


def _stdio(state: Path, *extra: str) -> StdioServerParameters:
    where = stdio_command(state, *extra)
    return StdioServerParameters(command=where.command, args=where.args, env=where.env)


@pytest.mark.slow
async def test_stdio_with_a_real_code_exec_mcp_process(stdio_state: Path) -> None:
    params = _stdio(stdio_state)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert len((await session.list_tools()).tools) == 4
        result = await session.call_tool("run_code", {"code": "print(sum(range(10)))"})
        assert _text(result) == "exit_code: 0\nstdout:\n45"
        result = await session.call_tool("run_code", {"code": "echo $((6*7))", "language": "bash"})
        assert _text(result) == "exit_code: 0\nstdout:\n42"


@pytest.mark.slow
async def test_stdio_sessions_outlive_the_process_that_opened_them(stdio_state: Path) -> None:
    """LangChain's stdio client starts one `code-exec mcp` per call: sessions must survive."""
    async with stdio_client(_stdio(stdio_state)) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        opened = await session.call_tool("open_session", {})
        sid = opened.structuredContent["session_id"]  # type: ignore[index]
        await session.call_tool("run_code", {"code": "x = 41", "session_id": sid})
    async with stdio_client(_stdio(stdio_state)) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        again = await session.call_tool("run_code", {"code": "x + 1", "session_id": sid})
        assert _text(again) == "exit_code: 0\nvalue: 42"
    # --in-process keeps the executor inside (its sessions end with it): the session is not there.
    params = _stdio(stdio_state, "--in-process")
    async with stdio_client(params) as (r, w), ClientSession(r, w) as session:
        await session.initialize()
        elsewhere = await session.call_tool("run_code", {"code": "x", "session_id": sid})
        assert elsewhere.isError and "not found" in _text(elsewhere)


@pytest.fixture(scope="module")
def http_api() -> Iterator[Api]:
    yield from start_api(_port())


async def test_streamable_http_needs_a_token(http_api: Api) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{http_api.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401
    metadata = f"{http_api.url}/.well-known/oauth-protected-resource/mcp"
    assert response.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata}"'


async def test_streamable_http_and_sessions_are_private_to_their_user(http_api: Api) -> None:
    url = f"{http_api.url}/mcp"
    alice = {"Authorization": f"Bearer {mint('alice')}"}
    bob = {"Authorization": f"Bearer {mint('bob')}"}
    async with (
        httpx.AsyncClient(headers=alice, timeout=60) as alice_http,
        httpx.AsyncClient(headers=bob, timeout=60) as bob_http,
        streamable_http_client(url, http_client=alice_http) as (read, write, _),
        ClientSession(read, write) as a,
    ):
        await a.initialize()
        opened = await a.call_tool("open_session", {})
        sid = opened.structuredContent["session_id"]  # type: ignore[index]
        await a.call_tool("run_code", {"code": "secret = 'alice only'", "session_id": sid})
        async with (
            streamable_http_client(url, http_client=bob_http) as (r2, w2, _),
            ClientSession(r2, w2) as b,
        ):
            await b.initialize()
            stolen = await b.call_tool("run_code", {"code": "secret", "session_id": sid})
            assert stolen.isError and "not found" in _text(stolen)
            closed = await b.call_tool("close_session", {"session_id": sid})
            assert closed.isError
        mine = await a.call_tool("run_code", {"code": "secret", "session_id": sid})
        assert mine.structuredContent["value"] == "'alice only'"  # type: ignore[index]


async def test_langchain_mcp_adapters_load_and_run_the_tools(http_api: Api) -> None:
    from langchain_mcp_adapters.client import MultiServerMCPClient

    client = MultiServerMCPClient(
        {
            "code-exec": {
                "url": f"{http_api.url}/mcp",
                "transport": "streamable_http",
                "headers": {"Authorization": f"Bearer {mint('lc')}"},
            }
        }
    )
    tools = {tool.name: tool for tool in await client.get_tools()}
    assert set(tools) == {"run_code", "open_session", "close_session", "read_output"}
    output = await tools["run_code"].ainvoke({"code": "print(2 ** 16)"})
    text = output if isinstance(output, str) else str(output)
    assert "65536" in text


async def test_sessions_outlive_the_connection_that_opened_them(make_any_executor) -> None:  # type: ignore[no-untyped-def]
    executor = await make_any_executor()
    real = executor.backend.name == "local"  # real sandboxes: a JavaScript session
    language, code = ("javascript", "const answer = 42") if real else ("python", "answer = 42")
    server = CodeExecServer(executor, ToolSet(), lambda ctx: "u")
    async with create_connected_server_and_client_session(server) as session:
        opened = await session.call_tool("open_session", {"language": language})
        sid = opened.structuredContent["session_id"]  # type: ignore[index]
        await session.call_tool("run_code", {"code": code, "session_id": sid})
    # A new connection (as langchain-mcp-adapters makes per call) finds the session.
    async with create_connected_server_and_client_session(server) as session:
        again = await session.call_tool("run_code", {"code": "answer + 1", "session_id": sid})
        assert again.structuredContent["value"] == "43"  # type: ignore[index]
        closed = await session.call_tool("close_session", {"session_id": sid})
        assert not closed.isError
    assert len(executor.sessions) == 0


async def test_mcp_runs_count_against_the_per_user_cap(fake_state_dir) -> None:  # type: ignore[no-untyped-def]
    import anyio

    from code_exec.compose import connect
    from executor.config import ClientSettings
    from tests.conftest import fake_settings
    from tests.fakes import FakeBackend

    settings = ClientSettings(max_concurrent_runs_per_user=1, _env_file=None)
    slow = {"code": "import asyncio\nawait asyncio.sleep(0.2)\nprint('done')"}
    async with connect(settings, fake_settings(fake_state_dir), FakeBackend()) as (client, tools):
        server = CodeExecServer(client, tools, lambda ctx: "capped")
        async with create_connected_server_and_client_session(server) as session:
            results: list[types.CallToolResult] = []

            async def call() -> None:
                results.append(await session.call_tool("run_code", slow))

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                group.start_soon(call)
    [refused] = [_text(r) for r in results if r.isError]
    [served] = [_text(r) for r in results if not r.isError]
    assert served == "exit_code: 0\nstdout:\ndone"
    assert "1 runs of this user are in progress, the limit" in refused


async def test_a_cut_output_is_read_back_with_read_output(memory) -> None:  # type: ignore[no-untyped-def]
    session, _ = memory
    code = "for i in range(3000):\n    print(f'row {i}')"
    result = await session.call_tool("run_code", {"code": code, "max_output_tokens": 150})
    marker = next(line for line in _text(result).splitlines() if line.startswith("[..."))
    assert "read_output(execution_id=" in marker
    call = marker.split("read_output(")[1].split(")")[0]
    arguments = {
        key.strip(): value.strip().strip("'")
        for key, value in (part.split("=") for part in call.split(","))
    }
    page = await session.call_tool(
        "read_output",
        {
            "execution_id": arguments["execution_id"],
            "stream": arguments["stream"],
            "offset": int(arguments["offset"]),
            "limit": 3,
        },
    )
    offset = int(arguments["offset"])
    assert not page.isError
    assert _text(page).splitlines()[1:] == [f"row {offset}", f"row {offset + 1}", f"row {offset + 2}"]
    assert _text(page).startswith(f"stdout of {arguments['execution_id']}: lines {offset + 1}-{offset + 3} of 3000")


def _mcp_process(state: Path, *extra: str) -> "subprocess.Popen[bytes]":
    env = {
        **os.environ,
        "CODE_EXEC_STATE_DIR": str(state),
        "CODE_EXEC_POOL_SIZES": '{"python": 1, "javascript": 0, "bash": 0, "c": 0}',
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "code_exec.cli", "mcp", "--log-level", "warning", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    messages = [
        initialize(),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "run_code", "arguments": {"code": "print(6 * 7)"}},
        },
    ]
    for message in messages:
        process.stdin.write((json.dumps(message) + "\n").encode())
        process.stdin.flush()
    replies = [json.loads(process.stdout.readline()) for _ in range(2)]
    assert "42" in replies[1]["result"]["content"][0]["text"], replies
    return process


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "end of input"])
@pytest.mark.parametrize("where", ["shared executor", "--in-process"])
def test_code_exec_mcp_ends_cleanly(how: str, where: str, stdio_state: Path) -> None:
    process = _mcp_process(stdio_state, *([where] if where == "--in-process" else []))
    began = time.monotonic()
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:
        assert process.stdin is not None
        process.stdin.close()
    assert process.wait(15) == 0
    assert time.monotonic() - began < 10
    # Nothing of its own is left (the shared executor's, if any, is checked by the fixture).
    assert not (stdio_state / f"exec-{process.pid}").exists()


def test_the_cli_says_its_version_and_takes_the_log_level_after_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from code_exec.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.startswith("code-exec 0.")
    with pytest.raises(SystemExit) as caught:
        main(["mcp", "--log-level", "loud"])
    assert caught.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err


def test_a_client_going_away_is_not_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import anyio

    import mcp_server.http  # noqa: F401  (installs the filter)

    sdk = logging.getLogger("mcp.server.streamable_http")
    with caplog.at_level(logging.DEBUG):
        try:
            raise anyio.ClosedResourceError
        except anyio.ClosedResourceError:
            sdk.exception("Error in standalone SSE writer")
        try:
            raise RuntimeError("a real failure")
        except RuntimeError:
            sdk.exception("something broke")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["something broke"]


@pytest.mark.slow
def test_a_missing_runtime_is_one_line_not_a_traceback() -> None:
    for command in (["serve", "--port", "1"], ["mcp"], ["executor", "--dev", "--port", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "code_exec.cli", *command],
            env={**os.environ, "CODE_EXEC_RUNTIME_DIR": "/nonexistent"},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "code-exec: the sandbox runtime is missing at /nonexistent: build it with "
            "`code-exec setup` (`make setup` in a checkout), or set CODE_EXEC_RUNTIME_DIR to "
            "where it was built"
        ], done.stderr


@pytest.mark.slow
def test_the_shared_local_executor_exits_by_itself_when_idle(stdio_state: Path) -> None:
    from code_exec.local_executor import ensure_local_executor, exited
    from executor.config import ExecutorSettings

    settings = ExecutorSettings(
        state_dir=stdio_state, pool_sizes={"python": 1, "javascript": 0, "bash": 0, "c": 0}
    )
    first = ensure_local_executor(settings, idle_exit_s=2)
    again = ensure_local_executor(settings, idle_exit_s=2)
    assert again == first  # one executor per user and state dir, not one per caller
    pid = int((stdio_state / f"mcp-executor-{os.getuid()}" / "executor.pid").read_text())
    assert exited(pid, 30), "the idle shared executor did not exit"
