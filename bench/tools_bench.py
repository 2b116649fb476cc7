"""Tool-definition cost (issue: work in every real client): o200k tokens of the tool lists a
client sends with every request, MCP tools/list and /v1/tools, for the three main tools and
with read_output. Goal: at most 600 for the three, while they say languages, sessions and
limits. The anchor is the list as it stood before (1,981 tokens over MCP, 760 in /v1/tools).
"""

import json

from bench.common import machine, table
from executor.config import ExecutorSettings
from executor.core.tokens import get_encoding
from executor.tools import ToolSet
from mcp_server.server import tool_definition
from openai_tools.tool_routes import function_tools
from schemas.network import Network

BEFORE = {"MCP tools/list": 1981, "/v1/tools (chat)": 760}


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    encoding = get_encoding()

    def tokens(value: object) -> int:
        return len(encoding.encode_ordinary(json.dumps(value)))

    rows = []
    # With a network, run_code and open_session also take packages and network.
    for network in (Network.NONE, Network.PACKAGES):
        limits = ExecutorSettings.model_construct().limits().model_copy(update={"network": network})
        tools = ToolSet(limits)
        mcp = [tool_definition(tools, t).model_dump(mode="json", exclude_none=True) for t in tools]
        lists = {
            "MCP tools/list": mcp,
            "/v1/tools (chat)": function_tools(tools, "chat"),
            "/v1/tools (responses)": function_tools(tools, "responses"),
        }
        for name, listed in lists.items():
            three, four = tokens(listed[:3]), tokens(listed)
            before = BEFORE.get(name)
            rows.append(
                (
                    f"{name}, network {network.value}: 3 tools / with read_output",
                    f"{three} / {four}",
                    str(before) if before else "-",
                    f"{three / before:.2f}x" if before else "-",
                    "<= 600 (3 tools)",
                )
            )
    print(table(rows))


if __name__ == "__main__":
    main()
