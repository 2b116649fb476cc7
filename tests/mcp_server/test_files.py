"""Files a run writes under outputs/ reach an MCP client (issue 17, first step): a
resource_link per file in the run_code result, whose URI resources/read answers with the
file's bytes, for the user who ran it only. The official client, real sandboxes."""

import base64
from typing import Any

import pytest
from mcp import types
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session
from pydantic import AnyUrl

from executor.tools import ToolSet
from mcp_server.server import CodeExecServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CODE = """
import os
os.makedirs('outputs', exist_ok=True)
open('outputs/clean.csv', 'w').write('a,b\\n1,3\\n')
open('outputs/data.bin', 'wb').write(bytes(range(256)))
"""


async def test_a_runs_files_are_links_its_user_can_read(make_executor: Any) -> None:
    executor = await make_executor()
    alice = CodeExecServer(executor, ToolSet(), lambda ctx: "alice")
    async with create_connected_server_and_client_session(alice) as session:
        result = await session.call_tool("run_code", {"code": CODE})
        assert not result.isError
        links = {c.name: c for c in result.content if isinstance(c, types.ResourceLink)}
        assert set(links) == {"clean.csv", "data.bin"}
        assert (links["clean.csv"].mimeType, links["clean.csv"].size) == ("text/csv", 8)
        text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
        assert f"\n- clean.csv (8 bytes, text/csv) {links['clean.csv'].uri}" in text
        csv = await session.read_resource(links["clean.csv"].uri)
        assert isinstance(csv.contents[0], types.TextResourceContents)
        assert csv.contents[0].text == "a,b\n1,3\n"
        blob = await session.read_resource(links["data.bin"].uri)
        assert isinstance(blob.contents[0], types.BlobResourceContents)
        assert base64.b64decode(blob.contents[0].blob) == bytes(range(256))
        assert (await session.list_resources()).resources == []
        with pytest.raises(McpError, match="code-exec serves the files runs wrote"):
            await session.read_resource(AnyUrl("file:///etc/passwd"))
        uri = links["clean.csv"].uri
    bob = CodeExecServer(executor, ToolSet(), lambda ctx: "bob")
    async with create_connected_server_and_client_session(bob) as session:
        with pytest.raises(McpError, match="only for the user who ran it"):
            await session.read_resource(uri)


async def test_session_files_are_resources_of_their_owner_announced_when_runs_change_them(
    make_executor: Any,
) -> None:
    executor = await make_executor()
    alice = CodeExecServer(executor, ToolSet(), lambda ctx: "alice")
    changes: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceListChangedNotification
        ):
            changes.append("list_changed")

    async with create_connected_server_and_client_session(
        alice, message_handler=on_message
    ) as session:
        init = alice.options()
        assert init.capabilities.resources is not None
        assert init.capabilities.resources.listChanged is True
        opened = await session.call_tool("open_session", {})
        sid = opened.structuredContent["session_id"]  # type: ignore[index]
        assert changes == []  # an empty workspace: the list did not change
        write = "open('report.md', 'w').write('# done\\n'); open('.secret', 'w').write('x')"
        await session.call_tool("run_code", {"code": write, "session_id": sid})
        assert changes == ["list_changed"]
        listed = (await session.list_resources()).resources
        assert [(r.name, r.mimeType, r.size) for r in listed] == [("report.md", "text/markdown", 7)]
        uri = listed[0].uri
        assert str(uri) == f"code-exec://sessions/{sid}/files/report.md"
        read = await session.read_resource(uri)
        assert isinstance(read.contents[0], types.TextResourceContents)
        assert read.contents[0].text == "# done\n"
        await session.call_tool("run_code", {"code": "x = 1", "session_id": sid})
        assert changes == ["list_changed"]  # no file changed
        templates = (await session.list_resource_templates()).resourceTemplates
        assert {t.uriTemplate for t in templates} == {
            "code-exec://sessions/{session_id}/files/{path}",
            "code-exec://executions/{execution_id}/outputs/{name}",
        }
        # By reference: a stateless run reads the session's file without it being pasted.
        used = await session.call_tool(
            "run_code", {"code": "print(open('report.md').read())", "inputs": [str(uri)]}
        )
        assert "# done" in used.content[0].text, used  # type: ignore[union-attr]
        bob = CodeExecServer(executor, ToolSet(), lambda ctx: "bob")
        async with create_connected_server_and_client_session(bob) as other:
            assert (await other.list_resources()).resources == []
            with pytest.raises(McpError, match="session") as caught:
                await other.read_resource(uri)
            assert caught.value.error.code == -32002
            stolen = await other.call_tool("run_code", {"code": "1", "inputs": [str(uri)]})
            assert stolen.isError
        await session.call_tool("close_session", {"session_id": sid})
        assert changes == ["list_changed", "list_changed"]
        assert (await session.list_resources()).resources == []
        with pytest.raises(McpError) as gone:
            await session.read_resource(uri)
        assert gone.value.error.code == -32002
