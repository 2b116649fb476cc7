"""An agent's session that installs a package the runtime lacks and uses it, through the
official MCP client, against real sandboxes and the tests' own package index (issue 16)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import types
from mcp.shared.memory import create_connected_server_and_client_session

from executor.tools import ToolSet
from mcp_server.server import CodeExecServer
from tests.package_index import PackageIndex, serve_index

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def index() -> Iterator[PackageIndex]:
    packages = PackageIndex()
    packages.add_wheel("tinypkg", "1.1", "VALUE = 42\n")
    packages.add_wheel(
        "tinyapp", "2.0", "import tinypkg\ndef answer():\n    return tinypkg.VALUE\n", ("tinypkg",)
    )
    with serve_index(packages) as served:
        yield served


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_an_agent_installs_a_package_and_uses_it(
    make_executor: Any, index: PackageIndex
) -> None:
    executor = await make_executor(network="packages", pypi_index_url=index.pypi_url)
    server = CodeExecServer(executor, ToolSet(executor.settings.limits()), lambda ctx: "agent")
    async with create_connected_server_and_client_session(server) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert "package installs" in (tools["run_code"].description or "")
        assert "packages" in tools["run_code"].inputSchema["properties"]
        assert "packages" in tools["open_session"].inputSchema["properties"]
        opened = await session.call_tool("open_session", {"packages": ["tinyapp"]})
        assert not opened.isError, _text(opened)
        session_id = opened.structuredContent["session_id"]  # type: ignore[index]
        used = await session.call_tool(
            "run_code", {"code": "import tinyapp\ntinyapp.answer()", "session_id": session_id}
        )
        assert not used.isError and "42" in _text(used), _text(used)
        failed = await session.call_tool(
            "run_code", {"code": "print('ran')", "packages": ["no-such-package"]}
        )
        assert failed.isError
        text = _text(failed)
        assert "PackageInstallError" in text and "pip could not install no-such-package" in text
        assert "ran" not in json.dumps(failed.structuredContent["stdout"])  # type: ignore[index]


async def test_without_a_network_the_tools_offer_no_packages(make_executor: Any) -> None:
    executor = await make_executor()
    server = CodeExecServer(executor, ToolSet(executor.settings.limits()), lambda ctx: "agent")
    async with create_connected_server_and_client_session(server) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert "without network:" in (tools["run_code"].description or "")
        for name in ("run_code", "open_session"):
            assert not {"packages", "network"} & set(tools[name].inputSchema["properties"])
        refused = await session.call_tool("run_code", {"code": "1", "packages": ["scipy"]})
        assert refused.isError and "CODE_EXEC_NETWORK=none" in _text(refused)
