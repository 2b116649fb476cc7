"""The MCP Inspector's CLI against code-exec, as its users run it: over stdio (it starts
`.venv/bin/code-exec mcp`) and over streamable HTTP (a real `code-exec api`, with the
Authorization header). The commands are read from the README's "Checking with the MCP
Inspector" section, so each one it shows is run here as written (the pinned Inspector for
`npx @modelcontextprotocol/inspector`, this test's server and token for `make serve`'s).
"""

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import node_env
from tests.clients.servers import STDIO_POOLS, Http, http, mcp_api, stdio_state

__all__ = ["http", "mcp_api", "stdio_state"]
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NPX = "npx @modelcontextprotocol/inspector"
README_URL = "http://127.0.0.1:8000/mcp"
TOOL_IS_ERROR = 5  # the Inspector's exit status for a result with isError


def readme_commands() -> list[str]:
    """The Inspector commands of the README's section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Checking with the MCP Inspector", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith(f"{NPX} --cli ")]


COMMANDS = readme_commands()


@dataclass
class Answer:
    """What the Inspector printed (stdout parsed as JSON), and how it exited."""

    status: int
    json: dict[str, Any]
    stderr: str

    @property
    def text(self) -> str:
        """A tool result's text content."""
        return "\n".join(c["text"] for c in self.json["content"] if c["type"] == "text")


@dataclass
class Inspector:
    """Runs README commands (and variants of them) against this test's server."""

    transport: str
    bin: Path
    env: dict[str, str]
    url: str = README_URL
    token: str = ""
    options: list[str] = field(default_factory=list)

    def readme(self, method: str) -> str:
        """The README's command for this transport and method."""
        return command(self.transport, method)

    def run(self, command: str, *extra: str, timeout: float = 120) -> Answer:
        """The README command, with extra Inspector options before its `--` (if any)."""
        words = shlex.split(command.replace(README_URL, self.url))
        words = [word.replace("$TOKEN", self.token) for word in words]
        assert words[:3] == [*NPX.split(), "--cli"], command
        end = words.index("--") if "--" in words else len(words)
        words = [str(self.bin), *words[2:end], *self.options, *extra, *words[end:]]
        done = subprocess.run(
            words, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.stdout.strip(), f"exit {done.returncode}, no output:\n{done.stderr}"
        return Answer(done.returncode, json.loads(done.stdout), done.stderr)


def command(transport: str, method: str) -> str:
    """The README's command for a transport (stdio or http) and method."""
    for line in COMMANDS:
        if (README_URL in line) == (transport == "http") and f"--method {method} " in f"{line} ":
            return line
    raise AssertionError(f"the README shows no {transport} command for {method}")


@pytest.fixture(params=["stdio", "http"])
def inspector(
    request: pytest.FixtureRequest, npm_bin: Callable[[str], Path], tmp_path: Path
) -> Inspector:
    """The Inspector CLI over stdio (a state dir of its own, whose shared executor is stopped
    after) or over streamable HTTP (the real API, a user of this test's own)."""
    env = node_env(MCP_CATALOG_PATH=str(tmp_path / "mcp.json"))
    if request.param == "stdio":
        state: Path = request.getfixturevalue("stdio_state")
        # The Inspector gives the server a minimal environment of its own (HOME, PATH, ...)
        # plus its -e options: the state dir must go as one, or the server uses the default.
        server_env = {"CODE_EXEC_STATE_DIR": str(state), "CODE_EXEC_POOL_SIZES": STDIO_POOLS}
        options = [word for item in server_env.items() for word in ("-e", "=".join(item))]
        return Inspector("stdio", npm_bin("mcp-inspector"), env, options=options)
    where: Http = request.getfixturevalue("http")
    token = where.headers["Authorization"].removeprefix("Bearer ")
    return Inspector("http", npm_bin("mcp-inspector"), env, where.url, token)


def test_the_readme_shows_each_flow_over_each_transport() -> None:
    assert len(COMMANDS) == 4
    for transport in ("stdio", "http"):
        for method in ("tools/list", "tools/call"):
            command(transport, method)


def test_tools_list(inspector: Inspector) -> None:
    answer = inspector.run(inspector.readme("tools/list"), "--strict")
    assert answer.status == 0, answer.stderr
    tools = {tool["name"]: tool for tool in answer.json["tools"]}
    assert list(tools) == ["run_code", "open_session", "close_session", "read_output"]
    assert tools["run_code"]["inputSchema"]["required"] == ["code"]
    # --strict reports every tool-schema portability finding on stderr (exit 6 for errors):
    # none here. (Nor any log line of `code-exec mcp`, at --log-level warning.)
    assert answer.stderr == ""


def test_run_code_prints_1(inspector: Inspector) -> None:
    answer = inspector.run(inspector.readme("tools/call"))
    assert answer.status == 0, answer.stderr
    assert answer.json["isError"] is False
    assert answer.text == "exit_code: 0\nstdout:\n1"
    assert answer.json["structuredContent"]["stdout"] == "1\n"
    if inspector.transport == "stdio":  # the server ran where the test said: its state dir
        state = inspector.options[inspector.options.index("-e") + 1].split("=", 1)[1]
        assert (Path(state) / f"mcp-executor-{os.getuid()}" / "executor.pid").exists()


def test_a_number_as_code_needs_its_own_quotes(inspector: Inspector) -> None:
    answer = inspector.run(
        inspector.readme("tools/call"), "--tool-arg", 'code="42"'
    )
    assert answer.status == 0, answer.stderr
    assert answer.json["structuredContent"]["value"] == "42"


def test_a_bad_argument_is_a_result_that_says_what_to_fix(inspector: Inspector) -> None:
    answer = inspector.run(
        inspector.readme("tools/call"), "--tool-arg", "language=rust"
    )
    assert answer.status == TOOL_IS_ERROR, answer.stderr
    assert answer.json["isError"] is True
    assert answer.text == (
        "error: invalid arguments for run_code: language: unsupported language 'rust'; "
        "supported: python (python3, py), javascript (node, nodejs, js), bash (shell, sh), c"
    )
    assert "tool_is_error" in answer.stderr  # the Inspector's own verdict, not a crash


def test_an_error_in_the_code_is_an_error_result_with_its_traceback(
    inspector: Inspector,
) -> None:
    answer = inspector.run(
        inspector.readme("tools/call"), "--tool-arg", "code=1/0"
    )
    assert answer.status == TOOL_IS_ERROR, answer.stderr
    assert answer.json["isError"] is True
    assert answer.text.startswith("exit_code: 1\nerror: ZeroDivisionError: division by zero\n")
    assert re.search(r'File "<cell-1>", line 1', answer.text)
    assert answer.json["structuredContent"]["error"]["name"] == "ZeroDivisionError"


def test_the_log_level_can_be_set(inspector: Inspector) -> None:
    answer = inspector.run(
        inspector.readme("tools/list").replace(
            "--method tools/list", "--method logging/setLevel --log-level info"
        )
    )
    assert answer.status == 0, answer.stderr
    assert answer.json == {}

