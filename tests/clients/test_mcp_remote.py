"""mcp-remote, the stdio-to-HTTP bridge desktop clients on macOS and Windows use to reach a
code-exec on a Linux host: the README's Claude Desktop config (its arguments and environment
as written, the URL and token this test's), run by the official client over stdio, through
every flow of tests/clients/flows.py, each episode a new bridge process."""

import json
from pathlib import Path

import pytest

from tests.clients.conftest import NPM_BIN, node_env
from tests.clients.servers import Stdio, mcp_api
from tests.clients.test_official_client import play
from tests.openai_tools.conftest import Api, mint

__all__ = ["mcp_api"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_config() -> dict[str, object]:
    """The code-exec entry of the README's config for macOS and Windows."""
    section = README.read_text().split("### From macOS or Windows", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    entry: dict[str, object] = json.loads(block)["mcpServers"]["code-exec"]
    return entry


async def test_every_flow_through_mcp_remote(mcp_api: Api) -> None:
    config = readme_config()
    assert config["command"] == "npx"
    args = list(config["args"])  # type: ignore[call-overload]
    assert args[0] == "mcp-remote" and args[1].startswith("https://")
    args[1] = f"{mcp_api.url}/mcp"  # this test's server, on loopback (mcp-remote allows http there)
    env = dict(config["env"])  # type: ignore[call-overload]
    env["AUTH"] = env["AUTH"].replace("<token from `code-exec token create`>", mint("remote"))
    await play(Stdio(str(NPM_BIN / "mcp-remote"), args[1:], node_env(**env)))
