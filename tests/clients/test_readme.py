"""The README's client snippets, run as written against a real server on loopback: only the
lines that name the model, the server's URL and token (or the stdio command's state dir) are
swapped, for a scripted model and this test's server. The scripted model computes the
Fibonacci number through run_code and answers "done" once it has seen 6765."""

import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from tests.clients.flows import Play, Step
from tests.clients.servers import mcp_api, stdio_state
from tests.clients.test_agents_sdk import ScriptedModel
from tests.clients.test_langgraph import ScriptedChat
from tests.clients.test_pydantic_ai import scripted
from tests.openai_tools.conftest import Api, mint

__all__ = ["mcp_api", "stdio_state"]
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"<!-- client: (\S+) -->\n```python\n(.*?)```", re.S)
FIBONACCI = "a, b = 0, 1\nfor _ in range(20):\n    a, b = b, a + b\nprint(a)"
STEPS = [Step("fibonacci", "run_code", {"code": FIBONACCI}, (r"stdout:\s6765\b",))]


def snippets() -> dict[str, str]:
    """The README's client snippets by name."""
    return dict(SNIPPET.findall(README.read_text()))


def run(name: str, swaps: dict[str, str], names: dict[str, Any]) -> None:
    """Run a snippet as a script, with the lines starting with each key of swaps replaced."""
    lines = snippets()[name].splitlines()
    for start, line in swaps.items():
        found = [i for i, text in enumerate(lines) if text.startswith(start)]
        assert len(found) == 1, f"the {name} snippet has no single line starting {start!r}"
        lines[found[0]] = line
    code = compile("\n".join(lines), f"README.md ({name})", "exec")
    exec(code, {"__name__": "__main__", **names})  # noqa: S102 (the README's own code)


def test_every_client_of_the_readme_has_a_snippet() -> None:
    assert set(snippets()) == {"agents-sdk", "pydantic-ai", "langgraph", "mcp"}


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("agents-sdk", lambda play: ScriptedModel(STEPS, play)),
        ("pydantic-ai", lambda play: scripted(STEPS, play)),
        ("langgraph", lambda play: ScriptedChat(steps=STEPS, play=play)),
    ],
)
def test_an_agent_snippet_runs_as_written(
    name: str, model: Any, mcp_api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    play = Play()
    swaps = {
        "MODEL = ": "MODEL = scripted_model",
        "URL, TOKEN = ": f"URL, TOKEN = {mcp_api.url + '/mcp'!r}, {mint('readme')!r}",
    }
    run(name, swaps, {"scripted_model": model(play)})
    assert "fibonacci" in play.seen, "the model never saw the run's result"
    assert capsys.readouterr().out.strip().endswith("done")


def test_the_mcp_client_snippet_runs_as_written(
    stdio_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = README.parent
    env = {"CODE_EXEC_STATE_DIR": str(stdio_state), "PATH": os.environ["PATH"]}
    command = str(root / ".venv" / "bin" / "code-exec")
    swap = f"SERVER = StdioServerParameters(command={command!r}, args=['mcp'], env={env!r})"
    run("mcp", {"SERVER = ": swap}, {})
    assert capsys.readouterr().out.strip() == "exit_code: 0\nstdout:\n65536"


def test_the_claude_desktop_config_runs_as_written(stdio_state: Path) -> None:
    """The README's claude_desktop_config.json entry: its arguments as written, its command at
    this checkout's path (the README's placeholder), and the state dir of this test."""
    section = README.read_text().split("### MCP (Claude Desktop", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    entry = json.loads(block)["mcpServers"]["code-exec"]
    assert entry["command"] == "/path/to/code-exec/.venv/bin/code-exec"
    command = str(README.parent / ".venv" / "bin" / "code-exec")
    env = {"CODE_EXEC_STATE_DIR": str(stdio_state), "PATH": os.environ["PATH"]}

    async def call() -> str:
        server = StdioServerParameters(command=command, args=entry["args"], env=env)
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("run_code", {"code": "print(2 ** 16)"})
            return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))

    assert anyio.run(call) == "exit_code: 0\nstdout:\n65536"
