"""Code mode (issue 18): tokens a model reads doing one task two ways, and the latency an
upstream call gains from sandbox code; both measured in one run against the same server.

The task: "of the 100 notes, which weather has the most stars in all, and which three notes
have the most?" against tests/upstream_server.py (an MCP server over stdio: search, read).
- Direct (the anchor): the model calls the server's tools through MCP, one call per step, as
  a scripted model would: search, then read for each of the 100 notes.
- Code mode: the model calls search_tools once, then one run_code whose Python calls the same
  tools and prints the answer.
Counted in o200k tokens: the tool definitions the model is given, each call it writes (name
and arguments) and each result it reads, as JSON or text the way the MCP result carries it.
Also the tokens a loop processes in all (each turn reads the whole context so far).
Latency: one call of read(id) from sandbox code (timed in the code), against the same call
made directly with the official MCP client (p50 of 50 each).
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from bench.common import machine, ms, table
from executor.config import ExecutorSettings
from executor.core.service import Executor
from executor.core.tokens import get_encoding
from executor.tools import ToolSet
from mcp_server.server import tool_definition
from schemas.execution import ExecuteRequest
from schemas.render import render_result

ROOT = Path(__file__).resolve().parent.parent
SERVER = StdioServerParameters(
    command=sys.executable, args=[str(ROOT / "tests" / "upstream_server.py")], env={}
)
CODE = """from collections import Counter
from tools import notes
rows = [notes.read(id=i) for i in notes.search(query="")["ids"]]
stars = Counter()
for row in rows:
    stars[row["body"].split()[-1]] += row["stars"]
print("most stars:", stars.most_common(1))
print("best notes:", [r["title"] for r in sorted(rows, key=lambda r: -r["stars"])[:3]])"""
ENCODING = get_encoding()
N_LATENCY = 50


def tokens(value: Any) -> int:
    """o200k tokens of a text, or of a value as JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    return len(ENCODING.encode_ordinary(text))


def result_text(result: types.CallToolResult) -> str:
    """What a model reads of an MCP tool result: its text blocks."""
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


class Tally:
    """The context of a scripted agent loop: definitions, then a call and a result a turn."""

    def __init__(self, definitions: int) -> None:
        self.definitions = definitions
        self.calls = 0
        self.results = 0
        self.turns = 0
        self.processed = 0  # each turn the model reads everything so far

    def turn(self, call: int, result: int) -> None:
        """One tool call the model wrote and the result it then reads."""
        self.processed += self.total
        self.calls += call
        self.results += result
        self.turns += 1

    @property
    def total(self) -> int:
        """The context now."""
        return self.definitions + self.calls + self.results


async def direct() -> tuple[Tally, list[float]]:
    """The anchor: one MCP call per step; and the latency of read(id) called directly."""
    async with stdio_client(SERVER) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        # Only the two tools the task uses (the server also has test tools: fail, hang...).
        listed = [t for t in (await session.list_tools()).tools if t.name in ("search", "read")]
        tally = Tally(tokens([t.model_dump(mode="json", exclude_none=True) for t in listed]))
        found = await session.call_tool("search", {"query": ""})
        tally.turn(
            tokens({"name": "search", "arguments": {"query": ""}}), tokens(result_text(found))
        )
        ids = (found.structuredContent or {})["ids"]
        for i in ids:
            note = await session.call_tool("read", {"id": i})
            tally.turn(tokens({"name": "read", "arguments": {"id": i}}), tokens(result_text(note)))
        seconds = []
        for _ in range(N_LATENCY):
            began = time.perf_counter()
            await session.call_tool("read", {"id": 1})
            seconds.append(time.perf_counter() - began)
    return tally, seconds


async def code_mode(state: Path) -> tuple[Tally, str, list[float]]:
    """One search_tools and one run_code; and the latency of read(id) from sandbox code."""
    config = state / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "notes": {
                        **SERVER.model_dump(include={"command", "args"}),
                        "tools": ["search", "read"],
                    }
                }
            }
        )
    )
    settings = ExecutorSettings(
        state_dir=state,
        upstream_config=config,
        pool_sizes={"python": 1, "javascript": 0, "bash": 0, "c": 0},
        _env_file=None,
    )
    executor = Executor(settings)
    await executor.start()
    try:
        for _ in range(200):
            if executor.upstream and executor.upstream.servers["notes"].error is None:
                break
            await asyncio.sleep(0.05)
        tools = ToolSet(settings.limits())
        definitions = [
            tool_definition(tools, t).model_dump(mode="json", exclude_none=True) for t in tools
        ]
        tally = Tally(tokens(definitions))
        found = await executor.search_tools("notes", "bench")
        search = "\n\n".join(f"{e.server}.{e.function}: {e.description}" for e in found)
        tally.turn(
            tokens({"name": "search_tools", "arguments": {"query": "notes"}}), tokens(search)
        )
        result = await executor.execute(ExecuteRequest(code=CODE), "bench")
        answer = render_result(result)
        tally.turn(tokens({"name": "run_code", "arguments": {"code": CODE}}), tokens(answer))
        timing = (
            "import time\nfrom tools import notes\nnotes.read(id=1)\nout = []\n"
            f"for _ in range({N_LATENCY}):\n    t = time.perf_counter()\n    notes.read(id=1)\n"
            "    out.append(time.perf_counter() - t)\nprint(out)"
        )
        timed = await executor.execute(ExecuteRequest(code=timing), "bench")
        seconds = json.loads(timed.stdout)
    finally:
        await executor.aclose()
    return tally, answer, seconds


async def main_async() -> None:
    """Measure both ways and print the tables."""
    print(f"machine: {machine()}")
    anchor, direct_s = await direct()
    with tempfile.TemporaryDirectory(prefix="code-mode-bench-") as state:
        coded, answer, sandbox_s = await code_mode(Path(state))
    print(f"\nthe code-mode run's result, as the model reads it:\n\n```\n{answer}\n```\n")
    rows = [
        (
            "tool definitions (tokens)",
            str(coded.definitions),
            str(anchor.definitions),
            f"{coded.definitions / anchor.definitions:.2f}x",
            "-",
        ),
        (
            "tool calls the model writes",
            str(coded.calls),
            str(anchor.calls),
            f"{coded.calls / anchor.calls:.2f}x",
            "-",
        ),
        (
            "tool results the model reads",
            str(coded.results),
            str(anchor.results),
            f"{coded.results / anchor.results:.3f}x",
            "-",
        ),
        (
            "context at the end (all of the above)",
            str(coded.total),
            str(anchor.total),
            f"{coded.total / anchor.total:.3f}x",
            "much less",
        ),
        (
            f"tokens processed over the loop ({coded.turns} vs {anchor.turns} turns)",
            f"{coded.processed:,}",
            f"{anchor.processed:,}",
            f"{coded.processed / anchor.processed:.4f}x",
            "-",
        ),
    ]
    print(table(rows))
    d50, s50 = statistics.median(direct_s), statistics.median(sandbox_s)
    print()
    print(
        table(
            [
                (
                    "one upstream call (read), p50",
                    f"{ms(s50)} from sandbox code",
                    f"{ms(d50)} direct MCP client",
                    f"+{(s50 - d50) * 1000:.2f} ms",
                    "-",
                )
            ]
        )
    )


def main() -> None:
    """Run the benchmark."""
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
