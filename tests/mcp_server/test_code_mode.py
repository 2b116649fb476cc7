"""Code mode over MCP (issue 18): the model finds the operator's tools with search_tools and
calls them from run_code; it reads what the code printed and a line of tool calls. The
official client (in memory), real sandboxes, a real upstream MCP server over stdio."""

from pathlib import Path
from typing import Any

import pytest
from mcp import types
from mcp.shared.memory import create_connected_server_and_client_session

from executor.tools import ToolSet
from mcp_server.server import CodeExecServer
from tests.executor.core.test_code_mode import connected, upstream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_a_model_finds_tools_and_calls_them_from_code(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await make_executor(upstream_config=upstream(tmp_path))
    await connected(executor)
    server = CodeExecServer(executor, ToolSet(executor.settings.limits()), lambda ctx: "bob")
    async with create_connected_server_and_client_session(server) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert "search_tools" in listed
        assert "`from tools import notes, admin`" in (listed["run_code"].description or "")
        found = text(await session.call_tool("search_tools", {"query": "notes body"}))
        assert found.startswith("notes.search(*, query: str = None, limit: int = None)\n"), found
        assert "notes.read(*, id: int)\nOne note: id, title, body and stars." in found
        assert "admin." not in found and "token" not in found  # bob may not call them
        code = (
            "from tools import notes\n"
            "rows = [notes.read(id=i) for i in notes.search(query='snow')['ids']]\n"
            "print(max(rows, key=lambda r: r['stars'])['title'])"
        )
        ran = await session.call_tool("run_code", {"code": code})
        assert text(ran) == (
            "exit_code: 0\nstdout:\nnote 27\ntool calls: notes.search x1, notes.read x20"
        ), text(ran)
        assert ran.structuredContent is not None
        assert ran.structuredContent["tool_calls"][1] == {
            "tool": "notes.read",
            "calls": 20,
            "errors": 0,
        }


async def test_without_upstream_servers_there_is_no_search_tools(make_executor: Any) -> None:
    executor = await make_executor()
    server = CodeExecServer(executor, ToolSet(executor.settings.limits()), lambda ctx: "bob")
    async with create_connected_server_and_client_session(server) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert "search_tools" not in listed
        assert "from tools" not in (listed["run_code"].description or "")
