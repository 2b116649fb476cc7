"""API benchmark (issue: API service): the API layer's overhead, measured in one run.

A warm Python print(1) through POST /v1/tools/call (JWT check, tool-call parsing, rendering)
against the same run through the executor's own POST /execute:
- `code-exec serve` (API with the executor in process) against a `code-exec executor`;
- `code-exec api` forwarding over HTTP to that executor (the two-machine layout), which adds
  a second HTTP hop on top.
Goal: the API layer adds at most 1 ms at p50.
"""

import os
import statistics

from bench.common import (
    TOKEN,
    api_process,
    bench_token,
    executor_process,
    machine,
    ms,
    sample_posts,
    table,
)

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "run_code", "arguments": '{"code": "print(1)"}'},
}


def main() -> None:
    """Print the table."""
    n = int(os.environ.get("BENCH_N", "200"))
    print(f"machine: {machine()}")
    bearer = {"Authorization": f"Bearer {bench_token()}"}
    rows = []
    with executor_process('{"python": 8, "javascript": 0, "bash": 0, "c": 0}') as executor_url:
        direct = sample_posts(
            executor_url, "/execute", {"code": "print(1)"}, {"Internal-Auth-Token": TOKEN}, n
        )
        with api_process("serve") as serve_url:
            served = sample_posts(serve_url, "/v1/tools/call", CALL, bearer, n)
        with api_process("api", executor_url=executor_url, internal_token=TOKEN) as api_url:
            forwarded = sample_posts(api_url, "/v1/tools/call", CALL, bearer, n)
    d50 = statistics.median(direct)
    for name, samples in (
        ("serve: /v1/tools/call (executor in process)", served),
        ("api -> executor over HTTP: /v1/tools/call", forwarded),
    ):
        p50 = statistics.median(samples)
        rows.append(
            (
                f"{name} p50",
                ms(p50),
                f"{ms(d50)} (executor /execute)",
                f"+{(p50 - d50) * 1000:.2f} ms",
                "<= +1 ms",
            )
        )
    print(table(rows))


if __name__ == "__main__":
    main()
