"""Code mode (issue 18): sandbox code calls the operator's MCP tools through the executor.

A real upstream MCP server (tests/upstream_server.py, over stdio, the official SDK on both
ends), real sandboxes with no network: calls from Python with structured results, an
upstream error as a catchable exception, allowlists of tools and users, the call budget,
credentials out of the sandbox's reach, a server that hangs or dies mid-run, sessions.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.core import upstream as upstream_module
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.render import render_result
from schemas.upstream import ToolUse

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SECRET = "notes-credential-7f3a9c"
RAINY = list(range(0, 100, 5))  # the notes whose body says rain


def upstream(tmp_path: Path, **notes: Any) -> Path:
    """An mcp.json with the notes server (its token tool not open to code) and an admin
    server (the same program) open to alice only."""
    command = {
        "command": sys.executable,
        "args": ["-m", "tests.upstream_server"],
        "env": {"NOTES_TOKEN": SECRET, "PYTHONPATH": str(ROOT)},
    }
    config = {
        "mcpServers": {
            "notes": {
                **command,
                "tools": ["search", "read", "fail", "hang", "crash", "extra"],
                **notes,
            },
            "admin": {**command, "users": ["alice"], "tools": ["search"]},
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    return path


async def connected(executor: Any, server: str = "notes") -> None:
    """Wait until the hub has listed the server's tools."""
    for _ in range(200):
        if executor.upstream.servers[server].error is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(executor.upstream.servers[server].error)


async def started(make_executor: Any, tmp_path: Path, **settings: Any) -> Any:
    """A real executor with the upstream servers of upstream(), notes connected."""
    executor = await make_executor(upstream_config=upstream(tmp_path), **settings)
    await connected(executor)
    return executor


def read_every_rainy_note(result: Any) -> None:
    """Assert a run read each rainy note once, after one search, and printed count and stars."""
    assert result.error is None, result
    assert result.stdout == f"{len(RAINY)} {sum(i % 7 for i in RAINY)}\n"
    assert result.tool_calls == [
        ToolUse(tool="notes.search", calls=1),
        ToolUse(tool="notes.read", calls=len(RAINY)),
    ]
    assert "tool calls: notes.search x1, notes.read x20" in render_result(result)


async def run(executor: Any, code: str, user: str = "alice", **extra: Any) -> Any:
    return await executor.execute(ExecuteRequest(code=code, **extra), user)


async def test_python_calls_tools_and_only_what_it_prints_comes_back(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path)
    code = (
        "from tools import notes\n"
        "ids = notes.search(query='rain')['ids']\n"
        "rows = [notes.read(id=i) for i in ids]\n"
        "print(len(rows), sum(row['stars'] for row in rows))"
    )
    read_every_rainy_note(await run(executor, code))
    # The functions carry the tools' signatures and descriptions; search finds them.
    code = (
        "import inspect, tools\nfrom tools import notes\n"
        "print(inspect.signature(notes.search))\nprint(notes.read.__doc__.splitlines()[0])\n"
        "print(tools.search_tools('note body'))"
    )
    shown = await run(executor, code)
    assert "(*, query: str = None, limit: int = None, **arguments)" in shown.stdout, shown
    assert "notes.read(*, id: int): One note" in shown.stdout
    assert "notes.search(" in shown.stdout.splitlines()[2]


async def test_a_tool_error_is_an_exception_the_code_catches(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path)
    code = (
        "from tools import notes, ToolError\n"
        "try:\n    notes.fail(message='the disk is full')\n"
        "except ToolError as exc:\n    print('caught:', exc)\n"
        "try:\n    notes.read(id=1000)\n"
        "except ToolError as exc:\n    print('caught:', exc)\n"
        "notes.read(id=3)['title']"
    )
    result = await run(executor, code)
    assert result.error is None, result
    assert "caught: Error executing tool fail: the disk is full" in result.stdout
    assert "no note 1000" in result.stdout
    assert result.value == "'note 3'"
    assert result.tool_calls == [
        ToolUse(tool="notes.fail", calls=1, errors=1),
        ToolUse(tool="notes.read", calls=2, errors=1),
    ]
    uncaught = await run(executor, "from tools import notes\nnotes.fail(message='boom')")
    assert uncaught.error is not None and uncaught.error.name == "ToolError"
    assert "boom" in uncaught.error.value


async def test_allowlists_hold_whatever_the_code_sends(make_executor: Any, tmp_path: Path) -> None:
    executor = await started(make_executor, tmp_path)
    await connected(executor, "admin")
    # The token tool is not listed to code, and a hand-made call to it is refused.
    raw = (
        "import http.client, json\n"
        "def call(server, tool):\n"
        "    c = http.client.HTTPConnection('127.0.0.1', 3128)\n"
        "    c.request('POST', '/tools/call', json.dumps({'server': server, 'tool': tool}))\n"
        "    r = c.getresponse()\n"
        "    return r.status, json.loads(r.read())['error']\n"
        "print(call('notes', 'token'))\nprint(call('admin', 'search'))\n"
        "from tools import notes\nprint(hasattr(notes, 'token'))"
    )
    bob = await run(executor, raw, user="bob")
    assert bob.error is None, bob
    assert "(403, 'notes.token is not among the tools code may call" in bob.stdout
    assert "(403, \"no upstream server 'admin'; there are: notes\")" in bob.stdout
    assert bob.stdout.endswith("False\n")
    assert SECRET not in bob.stdout
    alice = await run(executor, "from tools import admin\nlen(admin.search(query='sun')['ids'])")
    assert alice.value == "20", alice


async def test_the_credentials_stay_out_of_the_sandbox(make_executor: Any, tmp_path: Path) -> None:
    executor = await started(make_executor, tmp_path)
    # The server has its credential (the executor can see it) ...
    reply = await executor.upstream.call("notes", "token", {})
    assert reply.structured == SECRET
    # ... and nothing the sandbox can read holds it: environment, files, the tool list.
    code = (
        "import os, glob, tools\n"
        "seen = [repr(dict(os.environ)), repr(tools.list_tools())]\n"
        "for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
        "    try:\n        seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n        pass\n"
        f"print({SECRET!r} in '\\n'.join(seen), 'mcp.json' in '\\n'.join(seen))"
    )
    result = await run(executor, code)
    assert result.stdout == "False False\n", result


async def test_the_call_budget_ends_a_run_that_calls_too_much(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path, upstream_calls_per_run=5)
    code = (
        "from tools import notes, ToolError\n"
        "done = 0\n"
        "try:\n    for i in range(10):\n        notes.read(id=i)\n        done += 1\n"
        "except ToolError as exc:\n    print(done, exc)"
    )
    result = await run(executor, code)
    assert result.stdout.startswith("5 this run made its 5 tool calls"), result
    assert result.tool_calls == [ToolUse(tool="notes.read", calls=5)]
    # The budget is per run: a session's next run has its own.
    session = await executor.open_session(Language.PYTHON, "alice")
    for _ in range(2):
        again = await run(
            executor,
            "from tools import notes\nprint([notes.read(id=i)['id'] for i in range(4)])",
            session_id=session.session_id,
        )
        assert again.stdout == "[0, 1, 2, 3]\n", again


async def test_a_server_that_hangs_or_dies_fails_the_call_not_the_executor(
    make_executor: Any, tmp_path: Path
) -> None:
    executor = await started(make_executor, tmp_path, upstream_call_timeout_s=1)
    code = (
        "from tools import notes, ToolError\n"
        "try:\n    notes.hang(seconds=30)\nexcept ToolError as exc:\n    print(exc)\n"
        "print(notes.read(id=1)['id'])"
    )
    hung = await run(executor, code)
    assert hung.stdout == "notes.hang did not answer within 1 s\n1\n", hung
    died = await run(
        executor,
        "from tools import notes, ToolError\n"
        "try:\n    notes.crash()\nexcept ToolError as exc:\n    print('failed:', exc)",
    )
    assert died.stdout.startswith("failed: "), died
    # Connected again (its backoff starts at 1 s), the next run's calls work.
    await asyncio.sleep(0.5)
    await connected(executor)
    after = await run(executor, "from tools import notes\nnotes.read(id=2)['title']")
    assert after.value == "'note 2'", after


async def test_without_upstream_servers_code_gets_a_clear_error(make_executor: Any) -> None:
    executor = await make_executor()
    result = await run(executor, "from tools import notes")
    assert result.error is not None and result.error.name == "ToolError", result
    assert "CODE_EXEC_UPSTREAM_CONFIG" in result.error.value


@pytest.fixture
def http_upstream() -> Iterator[str]:
    """The notes server over streamable HTTP on a loopback port: its /mcp URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream_server", "--http", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def test_an_http_upstream_gets_its_headers_and_code_never_does(
    make_executor: Any, tmp_path: Path, http_upstream: str
) -> None:
    config = tmp_path / "http.json"
    headers = {"Authorization": f"Bearer {SECRET}"}
    config.write_text(
        json.dumps({"mcpServers": {"web": {"url": http_upstream, "headers": headers}}})
    )
    executor = await make_executor(upstream_config=config)
    await connected(executor, "web")
    assert (await executor.upstream.call("web", "token", {})).structured == f"Bearer {SECRET}"
    code = (
        "import os, tools\nfrom tools import web\n"
        "print(len(web.search(query='fog')['ids']))\n"
        f"print({SECRET!r} in repr(dict(os.environ)) + repr(tools.list_tools()))"
    )
    result = await run(executor, code)
    assert result.stdout == "20\nFalse\n", result


async def test_a_server_is_watched_between_calls(
    make_executor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while idle, it is noticed by a ping and connected again before any call; a tool
    it adds (notifications/tools/list_changed) is open to code at once."""
    monkeypatch.setattr(upstream_module, "PING_INTERVAL_S", 0.2)
    executor = await started(make_executor, tmp_path)
    first = (await executor.upstream.call("notes", "pid", {})).structured
    os.kill(first, signal.SIGKILL)
    for _ in range(100):
        health = (await executor.health()).upstream["notes"]
        if not health.connected:
            break
        await asyncio.sleep(0.05)
    assert not health.connected and "stopped answering" in (health.error or ""), health
    await connected(executor)
    assert (await executor.upstream.call("notes", "pid", {})).structured != first
    assert (await executor.upstream.call("notes", "grow", {})).structured == "grown"
    for _ in range(100):
        if any(t.name == "extra" for t in executor.upstream.servers["notes"].tools):
            break
        await asyncio.sleep(0.05)
    result = await run(executor, "from tools import notes\nnotes.extra()")
    assert result.value == "'extra'", result


async def test_tools_are_closed_between_a_sessions_runs(make_executor: Any, tmp_path: Path) -> None:
    """A thread a run leaves behind calls after the run: refused, nothing counted."""
    executor = await started(make_executor, tmp_path)
    session = await executor.open_session(Language.PYTHON, "alice")
    later = (
        "import threading, time\nfrom tools import notes, ToolError\n"
        "def late():\n    time.sleep(0.5)\n    try:\n        notes.read(id=1)\n"
        "        open('late.txt', 'w').write('answered')\n"
        "    except ToolError as exc:\n        open('late.txt', 'w').write(str(exc))\n"
        "threading.Thread(target=late).start()"
    )
    first = await run(executor, later, session_id=session.session_id)
    assert first.error is None and first.tool_calls == [], first
    await asyncio.sleep(1.5)
    second = await run(executor, "open('late.txt').read()", session_id=session.session_id)
    assert "no tools are open to code now" in (second.value or ""), second
    assert second.tool_calls == []


async def test_a_run_right_after_start_waits_for_the_first_connection(
    make_executor: Any, tmp_path: Path
) -> None:
    slow = f"sleep 1 && exec {sys.executable} -m tests.upstream_server"  # a second to start
    config = upstream(tmp_path, command="/bin/sh", args=["-c", slow])
    executor = await make_executor(upstream_config=config)
    assert not executor.upstream.servers["notes"].tried.is_set()  # still starting
    result = await run(executor, "from tools import notes\nnotes.read(id=4)['title']")
    assert result.value == "'note 4'", result


async def test_the_channel_holds_against_malformed_requests(
    make_executor: Any, tmp_path: Path
) -> None:
    """Requests sandbox code makes by hand: no Content-Length, two of them, too big a body, a
    body that never comes, a path that is not a route. Each gets its answer; the executor and
    the next call are unharmed."""
    executor = await started(make_executor, tmp_path, header_timeout_s=1.0)
    code = r"""
import socket
def ask(raw):
    s = socket.create_connection(('127.0.0.1', 3128))
    s.sendall(raw)
    s.settimeout(10)
    answer = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    s.close()
    return answer.split(b'\r\n', 1)[0].decode()
call = b'{"server": "notes", "tool": "read", "arguments": {"id": 1}}'
print(ask(b'POST /tools/call HTTP/1.1\r\nHost: x\r\n\r\n' + call))
print(ask(b'POST /tools/call HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n'))
print(ask(b'POST /tools/call HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n'))
print(ask(b'POST /tools/call HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"server"'))
print(ask(b'GET /tools/../etc/passwd HTTP/1.1\r\n\r\n'))
from tools import notes
print(notes.read(id=2)['id'])
"""
    result = await run(executor, code)
    assert result.error is None, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("HTTP/1.1 400"), lines  # no length: no body read, no call
    assert lines[1].startswith("HTTP/1.1 400") and "one Content-Length" in lines[1]
    assert lines[2].startswith("HTTP/1.1 413") and "over 1024 KiB" in lines[2]
    assert lines[3].startswith("HTTP/1.1 400") and "did not arrive in time" in lines[3]
    assert lines[4].startswith("HTTP/1.1 404"), lines
    assert lines[5] == "2"
    assert result.tool_calls == [ToolUse(tool="notes.read", calls=1)]
