"""Code mode through a real `code-exec api` process (issue 18): the operator sets
CODE_EXEC_UPSTREAM_CONFIG; the official MCP client over streamable HTTP and an OpenAI
function-calling loop find the tools with search_tools and call them from run_code. The
upstream is tests/upstream_server.py over stdio, started by the API's executor."""

import json
from collections.abc import Iterator

import anyio
import httpx
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from openai.types.chat import ChatCompletionFunctionToolParam
from pydantic import TypeAdapter

from tests.executor.core.test_code_mode import upstream
from tests.openai_tools.conftest import Api, _port, start_api

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CODE = (
    "from tools import notes\n"
    "rows = [notes.read(id=i) for i in notes.search(query='wind')['ids']]\n"
    "print(sum(row['stars'] for row in rows))"
)
WINDY_STARS = sum(i % 7 for i in range(3, 100, 5))


@pytest.fixture(scope="module")
def code_mode_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    config = upstream(tmp_path_factory.mktemp("upstream"))
    yield from start_api(_port(), upstream_config=str(config))


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_the_official_client_finds_and_calls_upstream_tools(code_mode_api: Api) -> None:
    api = code_mode_api
    # Runs wait for a server's first connection (at most 5 s); /health says when it is up.
    for _ in range(200):
        upstream = api.http.get("/health").json()["executor"]["upstream"]
        if upstream["notes"]["connected"]:
            break
        await anyio.sleep(0.1)
    assert upstream["notes"] == {"connected": True, "tools": 8}, upstream
    async with (
        httpx.AsyncClient(headers=api.headers("carol"), timeout=60) as http,
        streamable_http_client(f"{api.url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = [tool.name for tool in (await session.list_tools()).tools]
        assert names == ["run_code", "open_session", "close_session", "read_output", "search_tools"]
        found = _text(await session.call_tool("search_tools", {"query": "read note"}))
        assert found.startswith("notes.read(*, id: int)"), found
        ran = await session.call_tool("run_code", {"code": CODE})
        assert _text(ran) == (
            f"exit_code: 0\nstdout:\n{WINDY_STARS}\ntool calls: notes.search x1, notes.read x20"
        )


def test_an_openai_loop_gets_search_tools_and_code_mode(code_mode_api: Api) -> None:
    api = code_mode_api
    listed = api.http.get("/v1/tools").json()
    adapter = TypeAdapter(ChatCompletionFunctionToolParam)
    for tool in listed:
        adapter.validate_python(tool, strict=True)
    by_name = {tool["function"]["name"]: tool["function"] for tool in listed}
    assert "from tools import notes, admin" in by_name["run_code"]["description"]
    assert by_name["search_tools"]["strict"] is True
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "search_tools", "arguments": json.dumps({"query": "search"})},
        },
        {
            "id": "c2",
            "type": "function",
            "function": {"name": "run_code", "arguments": json.dumps({"code": CODE})},
        },
    ]
    carol = api.headers("carol")  # not among admin's users: notes only
    searched, ran = api.http.post("/v1/tools/call", json=calls, headers=carol).json()
    assert searched["content"].startswith("notes.search(*, query: str = None, limit: int = None)")
    assert ran["content"].endswith(f"{WINDY_STARS}\ntool calls: notes.search x1, notes.read x20")
