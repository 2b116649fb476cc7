"""Load (issue: prove it): 500 tool calls at concurrency 64 against `code-exec serve`.

Every request must get the right output or a clear 429/503; p50/p99 are reported; afterwards
the server's memory must be back near its start and no sandbox process may be left beyond
the warm pool.
"""

import asyncio
import json
import os
import statistics
import time
from collections import Counter

import httpx

from bench.common import api_process, bench_token, machine, ms, percentile, table

TOTAL = 500
CONCURRENCY = 64
USERS = 16  # 4 runs in progress per user are allowed: 64 in all


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _sandbox_processes() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    uid = next(int(ln.split()[1]) for ln in f if ln.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            count += uid >= 200_000
    return count


async def _load(url: str, tokens: list[str]) -> tuple[list[float], Counter[str]]:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def one(i: int) -> None:
            call = {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": "run_code", "arguments": json.dumps({"code": f"print({i})"})},
            }
            headers = {"Authorization": f"Bearer {tokens[i % USERS]}"}
            async with semaphore:
                began = time.perf_counter()
                response = await http.post("/v1/tools/call", json=call, headers=headers)
                elapsed = time.perf_counter() - began
            if response.status_code in (429, 503):
                outcomes[str(response.status_code)] += 1
                return
            content = response.json()[0]["content"]
            if content == f"exit_code: 0\nstdout:\n{i}":
                outcomes["right output"] += 1
                latencies.append(elapsed)
            elif "retry" in content or "at capacity" in content:
                outcomes["clear busy message"] += 1
            else:
                outcomes[f"WRONG: {content[:80]!r}"] += 1

        await asyncio.gather(*(one(i) for i in range(TOTAL)))
    return latencies, outcomes


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    tokens = [bench_token(f"load{u}") for u in range(USERS)]
    baseline_sandboxes = _sandbox_processes()
    with api_process("serve", pool_sizes='{"python": 8}', pool_wait_s="30") as url:
        time.sleep(2)
        warm_processes = _sandbox_processes()
        rss_before = _rss(url.pid)
        began = time.perf_counter()
        latencies, outcomes = asyncio.run(_load(url, tokens))
        wall = time.perf_counter() - began
        time.sleep(5)  # let the pool refill and the used sandboxes be torn down
        rss_after = _rss(url.pid)
        after_processes = _sandbox_processes()
    time.sleep(2)  # killed sandboxes finish exiting
    left = _sandbox_processes() - baseline_sandboxes
    rows = [
        ("requests", str(TOTAL), "", "", ""),
        (
            "outcomes",
            ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())),
            "",
            "",
            "right output or 429/503",
        ),
        (
            "p50 / p99 (right outputs)",
            f"{ms(statistics.median(latencies))} / {ms(percentile(latencies, 99))}",
            "",
            "",
            "",
        ),
        ("throughput", f"{len(latencies) / wall:.1f} runs/s", "", "", ""),
        (
            "server RSS before / after",
            f"{rss_before / 2**20:.0f} / {rss_after / 2**20:.0f} MB",
            "",
            "",
            "back near start",
        ),
        (
            "sandbox processes: warm pool / after load / after stop",
            f"{warm_processes - baseline_sandboxes} / {after_processes - baseline_sandboxes} / "
            f"{left}",
            "",
            "",
            "after = warm, stop = 0",
        ),
    ]
    print(table(rows))


if __name__ == "__main__":
    main()
