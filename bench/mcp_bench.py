"""MCP benchmark (issue: MCP server): run_code round trips, against the OpenAI endpoint.

A warm Python print(1) through `run_code` over stdio (a real `code-exec mcp` process) and over
streamable HTTP (/mcp on `code-exec serve`), against POST /v1/tools/call on the same server,
in the same run.
"""

import asyncio
import os
import shutil
import statistics
import sys
import time

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench.api_bench import CALL
from bench.common import api_process, bench_token, machine, ms, sample_posts, table
from code_exec.local_executor import stop_local_executor
from executor.config import ExecutorSettings
from tests.mcp_wire import ACCEPT, PROTOCOL_VERSION, initialize
from tests.processes import new_state_dir

POOLS = '{"python": 8, "javascript": 0, "bash": 0, "c": 0}'


async def _mcp_samples(session: ClientSession, n: int) -> list[float]:
    await session.initialize()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        result = await session.call_tool("run_code", {"code": "print(1)"})
        samples.append(time.perf_counter() - began)
        assert not result.isError
        await asyncio.sleep(0.05)
    return samples


async def stdio_samples(n: int) -> list[float]:
    """run_code over stdio against a `code-exec mcp` process (and the shared local executor
    it starts, over its Unix socket; stopped after)."""
    state = new_state_dir("code-exec-bench-")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "code_exec.cli", "--log-level", "warning", "mcp"],
        env={**os.environ, "CODE_EXEC_POOL_SIZES": POOLS, "CODE_EXEC_STATE_DIR": str(state)},
    )
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await asyncio.sleep(3)  # let the pool fill
            return await _mcp_samples(session, n)
    finally:
        stop_local_executor(ExecutorSettings(state_dir=state, _env_file=None))
        shutil.rmtree(state, ignore_errors=True)


async def http_samples(url: str, token: str, n: int) -> list[float]:
    """run_code over streamable HTTP."""
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        return await _mcp_samples(session, n)


def raw_http_samples(url: str, token: str, n: int) -> list[float]:
    """tools/call as bare JSON-RPC over HTTP: the server's cost without the SDK client's."""
    headers = {
        "Authorization": f"Bearer {token}",
        **ACCEPT,
        "MCP-Protocol-Version": PROTOCOL_VERSION,
    }
    samples = []
    with httpx.Client(headers=headers, timeout=60) as http:
        init = http.post(f"{url}/mcp", json=initialize(0, "bench"))
        http.headers["mcp-session-id"] = init.headers["mcp-session-id"]
        http.post(f"{url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(n):
            began = time.perf_counter()
            response = http.post(
                f"{url}/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": i + 1,
                    "method": "tools/call",
                    "params": {"name": "run_code", "arguments": {"code": "print(1)"}},
                },
            )
            samples.append(time.perf_counter() - began)
            assert '"isError":false' in response.text, response.text
            time.sleep(0.05)
    return samples


def main() -> None:
    """Print the table."""
    n = int(os.environ.get("BENCH_N", "200"))
    print(f"machine: {machine()}")
    token = bench_token()
    with api_process("serve") as url:
        openai = sample_posts(url, "/v1/tools/call", CALL, {"Authorization": f"Bearer {token}"}, n)
        http = asyncio.run(http_samples(url, token, n))
        raw = raw_http_samples(url, token, n)
    stdio = asyncio.run(stdio_samples(n))
    o50 = statistics.median(openai)
    rows = []
    for name, samples in (
        ("MCP over stdio (SDK client)", stdio),
        ("MCP over streamable HTTP (SDK client)", http),
        ("MCP over streamable HTTP (bare JSON-RPC)", raw),
    ):
        p50 = statistics.median(samples)
        rows.append(
            (
                f"{name}: run_code print(1) p50",
                ms(p50),
                f"{ms(o50)} (/v1/tools/call)",
                f"{p50 / o50:.2f}x",
                "",
            )
        )
    print(table(rows))


if __name__ == "__main__":
    main()
