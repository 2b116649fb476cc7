"""Code mode from JavaScript (issue 18): `require('tools')` in real sandboxes calls the
operator's MCP tools through the executor, as Python's `from tools import ...` does.

The upstream servers are real: our notes server (tests/upstream_server.py) and the MCP
reference server, @modelcontextprotocol/server-everything, pinned in tests/clients/npm and
run over stdio with that package's own Node (the system's may be too old for it).
"""

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.languages import Language
from schemas.upstream import ToolUse
from tests.clients.conftest import NPM_BIN
from tests.executor.core.test_code_mode import (
    SECRET,
    connected,
    read_every_rainy_note,
    run,
    started,
)

# The sandboxes run /usr/bin/node (policy.py); the reference server runs on the pinned one.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/node").exists(), reason="no /usr/bin/node for sandboxes"),
]

POOLS = {"python": 0, "javascript": 1, "bash": 0, "c": 0}


async def js(executor: Any, code: str, user: str = "alice", **extra: Any) -> Any:
    return await run(executor, code, user, language="javascript", **extra)


async def test_javascript_calls_tools_and_only_what_it_prints_comes_back(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path, pool_sizes=POOLS)
    # Twenty reads at once: more than the module keeps in flight, the rest queued.
    code = (
        "const { notes } = require('tools');\n"
        "const { ids } = await notes.search({ query: 'rain' });\n"
        "const rows = await Promise.all(ids.map((id) => notes.read({ id })));\n"
        "console.log(rows.length, rows.reduce((sum, row) => sum + row.stars, 0));"
    )
    read_every_rainy_note(await js(executor, code))
    # Descriptions with the call's shape, search, the catalogue; a second run of the session
    # (a gate of its own) still calls.
    session = await executor.open_session(Language.JAVASCRIPT, "alice")
    code = (
        "const tools = require('tools');\n"
        "console.log((await tools.describe('notes.read')).split('\\n')[0]);\n"
        "console.log((await tools.searchTools('notes search'))[0]);\n"
        "const listed = await tools.listTools();\n"
        "console.log(listed.filter((t) => t.server === 'notes').map((t) => t.name).join(','));"
    )
    shown = await js(executor, code, session_id=session.session_id)
    assert shown.error is None, shown
    lines = shown.stdout.splitlines()
    assert lines[0] == "notes.read({id: integer}): One note: id, title, body and stars."
    assert lines[1].startswith("notes.search({query?: string, limit?: integer}): Ids of the notes")
    assert lines[2] == "search,read,fail,hang,crash"
    again = await js(
        executor,
        "await (await tools.server('notes')).read({ id: 4 })",
        session_id=session.session_id,
    )
    assert again.error is None and "title: 'note 4'" in (again.value or ""), again
    assert again.tool_calls == [ToolUse(tool="notes.read", calls=1)]


async def test_a_tool_error_is_a_tool_error_the_code_catches(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path, pool_sizes=POOLS)
    code = (
        "const { notes, ToolError } = require('tools');\n"
        "for (const attempt of [() => notes.fail({ message: 'the disk is full' }),\n"
        "                       () => notes.read({ id: 1000 }), () => notes.read(3)]) {\n"
        "  try { await attempt(); } catch (err) {\n"
        "    console.log('caught:', err instanceof ToolError, err.name, err.message);\n"
        "  }\n"
        "}\n"
        "(await notes.read({ id: 3 })).title"
    )
    result = await js(executor, code)
    assert result.error is None, result
    lines = result.stdout.splitlines()
    assert lines[0] == "caught: true ToolError Error executing tool fail: the disk is full"
    assert lines[1].startswith("caught: true ToolError ") and "no note 1000" in lines[1]
    assert lines[2].startswith("caught: true ToolError pass notes.read its arguments as one")
    assert result.value == "'note 3'"
    # A mistake in the call's shape is caught before it is sent: no call counted.
    assert result.tool_calls == [
        ToolUse(tool="notes.fail", calls=1, errors=1),
        ToolUse(tool="notes.read", calls=2, errors=1),
    ]
    uncaught = await js(executor, "await require('tools').notes.fail({ message: 'boom' })")
    assert uncaught.error is not None and uncaught.error.name == "ToolError", uncaught
    assert "boom" in uncaught.error.value


async def test_a_tool_outside_the_allowlists_is_refused_with_the_reason(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path, pool_sizes=POOLS)
    await connected(executor, "admin")
    code = (
        "const tools = require('tools');\n"
        "for (const attempt of [() => tools.notes.token(), () => tools.server('admin'),\n"
        "                       () => tools.admin.search({ query: 'sun' })]) {\n"
        "  try { console.log('answered:', await attempt()); }\n"
        "  catch (err) { console.log(err.name + ': ' + err.message); }\n"
        "}"
    )
    bob = await js(executor, code, user="bob")
    assert bob.error is None, bob
    lines = bob.stdout.splitlines()
    assert lines[0].startswith(
        "ToolError: notes.token is not among the tools code may call (search, read"
    ), lines
    assert lines[0].endswith("(notes's tools open to this run: search, read, fail, hang, crash)")
    assert lines[1] == 'ToolError: no upstream server "admin" open to this run; there are: notes'
    assert lines[2] == lines[1]
    assert SECRET not in bob.stdout
    assert bob.tool_calls == []  # refused before any call
    alice = await js(executor, "(await require('tools').admin.search({ query: 'sun' })).ids.length")
    assert alice.value == "20", alice


async def test_without_upstream_servers_javascript_gets_a_clear_error(
    make_executor: Any,
) -> None:
    executor = await make_executor(pool_sizes=POOLS)
    code = "const { notes } = require('tools');\nawait notes.search({ query: 'rain' })"
    result = await js(executor, code)
    assert result.error is not None and result.error.name == "ToolError", result
    assert "CODE_EXEC_UPSTREAM_CONFIG" in result.error.value


def everything_config(tmp_path: Path) -> Path:
    """An mcp.json with the MCP reference server, three of its tools open to code (not its
    get-env, which shows the server's environment, nor those that fetch URLs)."""
    node, server = NPM_BIN / "node", NPM_BIN / "mcp-server-everything"
    for path in (node, server):
        if not path.exists():
            pytest.fail(
                f"{path} is missing: run `make setup` (it runs npm ci in {NPM_BIN.parent.parent})"
            )
    config = {
        "mcpServers": {
            "everything": {
                "command": str(node),
                "args": [str(server), "stdio"],
                "tools": ["echo", "get-sum", "get-structured-content"],
            }
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    return path


async def test_the_mcp_reference_server_is_called_from_python_and_javascript(
    make_executor: Any, tmp_path: Path
) -> None:
    pools = {**POOLS, "python": 1}
    executor = await make_executor(upstream_config=everything_config(tmp_path), pool_sizes=pools)
    await connected(executor, "everything")
    python = (
        "from tools import everything, ToolError\n"
        "print(everything.echo(message='from python'))\n"
        "print(everything.get_sum(a=2, b=3))\n"
        "weather = everything.get_structured_content(location='Chicago')\n"
        "print(sorted(weather))\n"
        "try:\n    everything.get_env()\nexcept AttributeError as exc:\n    print('no get_env')"
    )
    result = await run(executor, python)
    assert result.error is None, result
    assert result.stdout.splitlines() == [
        "Echo: from python",
        "The sum of 2 and 3 is 5.",
        "['conditions', 'humidity', 'temperature']",
        "no get_env",
    ]
    javascript = (
        "const { everything } = require('tools');\n"
        "console.log(await everything.echo({ message: 'from javascript' }));\n"
        "console.log(await everything.getSum({ a: 4, b: 5 }));\n"
        "console.log(await everything['get-sum']({ a: 0.5, b: 0.25 }));\n"
        "const weather = await everything.get_structured_content({ location: 'Chicago' });\n"
        "console.log(Object.keys(weather).sort().join(','), typeof weather.temperature);\n"
        "try { await everything['get-env'](); } catch (err) { console.log(err.message); }"
    )
    result = await js(executor, javascript)
    assert result.error is None, result
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "Echo: from javascript",
        "The sum of 4 and 5 is 9.",
        "The sum of 0.5 and 0.25 is 0.75.",
        "conditions,humidity,temperature number",
    ]
    assert lines[4].startswith("everything.get-env is not among the tools code may call"), lines
    assert result.tool_calls == [
        ToolUse(tool="everything.echo", calls=1),
        ToolUse(tool="everything.get-sum", calls=2),
        ToolUse(tool="everything.get-structured-content", calls=1),
    ]
