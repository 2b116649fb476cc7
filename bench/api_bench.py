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
import time

import httpx
import jwt

from bench.common import SECRET, TOKEN, api_process, executor_process, machine, ms, table

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "run_code", "arguments": '{"code": "print(1)"}'},
}


def _sample(url: str, path: str, body: object, headers: dict[str, str], n: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for _ in range(n):
            began = time.perf_counter()
            response = http.post(path, json=body)
            samples.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
            time.sleep(0.05)  # a user's think time: the pool's refill is not on the path
    return samples


def main() -> None:
    """Print the table."""
    n = int(os.environ.get("BENCH_N", "200"))
    print(f"machine: {machine()}")
    now = int(time.time())
    token = jwt.encode(
        {"sub": "bench", "aud": "code-exec", "iss": "code-exec", "iat": now, "exp": now + 3600},
        SECRET,
        "HS256",
    )
    bearer = {"Authorization": f"Bearer {token}"}
    rows = []
    with executor_process('{"python": 8, "javascript": 0, "bash": 0, "c": 0}') as executor_url:
        direct = _sample(
            executor_url, "/execute", {"code": "print(1)"}, {"Internal-Auth-Token": TOKEN}, n
        )
        with api_process("serve") as serve_url:
            served = _sample(serve_url, "/v1/tools/call", CALL, bearer, n)
        with api_process("api", executor_url=executor_url, internal_token=TOKEN) as api_url:
            forwarded = _sample(api_url, "/v1/tools/call", CALL, bearer, n)
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
