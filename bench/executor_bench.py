"""Executor benchmark (issue: executor with local sandboxes), anchors measured in the same run.

- warm stateless Python print(1) through the executor's HTTP API vs a bare
  `python3 -c 'print(1)'` subprocess (goal: at most 0.25x);
- a session run (x += 1) vs a Jupyter kernel's execute round trip via jupyter_client
  (goal: at most 0.5x);
- stateless throughput at concurrency 8 vs bare subprocesses at concurrency 8 (goal: >= 0.8x);
- memory of one idle Python session (goal: at most 20 MB).
"""

import argparse
import asyncio
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import TOKEN, executor_process, machine, ms, stats, table

BARE_PYTHON = "/usr/bin/python3"  # the interpreter the sandbox runtime is built on
AUTH = {"Internal-Auth-Token": TOKEN}


def bare_latency(n: int) -> list[float]:
    """Wall time of `python3 -c 'print(1)'` subprocesses, one after another."""
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        out = subprocess.run([BARE_PYTHON, "-c", "print(1)"], capture_output=True, check=True)
        samples.append(time.perf_counter() - began)
        assert out.stdout == b"1\n"
    return samples


def bare_throughput(total: int, concurrency: int) -> float:
    """Runs per second of bare subprocesses at a concurrency."""

    def one(_: int) -> None:
        subprocess.run([BARE_PYTHON, "-c", "print(1)"], capture_output=True, check=True)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    return total / (time.perf_counter() - began)


def executor_latency(url: str, n: int, think_s: float = 0.05) -> list[float]:
    """Wall time of stateless print(1) through the executor's HTTP API, sequential, with a
    user's think time between runs (0: back to back, the pool's refill on the path)."""
    samples = []
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        for _ in range(n):
            began = time.perf_counter()
            body = http.post("/execute", json={"code": "print(1)"}).json()
            samples.append(time.perf_counter() - began)
            assert body["stdout"] == "1\n", body
            # Let the pool refill as a user's think time would; the refill is not on the path.
            time.sleep(think_s)
    return samples


async def executor_throughput(url: str, total: int, concurrency: int) -> float:
    """Stateless runs per second at a concurrency through the HTTP API."""
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:

        async def one(i: int) -> None:
            async with semaphore:
                body = (await http.post("/execute", json={"code": f"print({i})"})).json()
                assert body["stdout"] == f"{i}\n", body

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        return total / (time.perf_counter() - began)


def session_latency(url: str, n: int) -> list[float]:
    """Wall time of `x += 1` in a Python session through the HTTP API."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        sid = http.post("/sessions", json={"language": "python"}).json()["session_id"]
        http.post("/execute", json={"code": "x = 0", "session_id": sid})
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            http.post("/execute", json={"code": "x += 1", "session_id": sid})
            samples.append(time.perf_counter() - began)
        value = http.post("/execute", json={"code": "x", "session_id": sid}).json()["value"]
        assert value == str(n), value
        http.delete(f"/sessions/{sid}")
    return samples


def jupyter_latency(n: int) -> list[float]:
    """Wall time of an execute request answered by a Jupyter kernel (jupyter_client)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        client.execute_interactive("x = 0", timeout=30)
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            reply = client.execute_interactive("x += 1", timeout=30, output_hook=lambda m: None)
            samples.append(time.perf_counter() - began)
            assert reply["content"]["status"] == "ok"
        return samples
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


async def idle_session_memory() -> tuple[int, int]:
    """RSS and PSS (bytes) of all processes of one idle Python session's sandbox."""
    import tempfile

    from executor.config import ExecutorSettings
    from executor.core import Executor
    from schemas.languages import Language

    state = tempfile.mkdtemp(prefix="code-exec-bench-", dir="/tmp")
    executor = Executor(ExecutorSettings(state_dir=state, pool_sizes={"python": 1}))
    await executor.start()
    try:
        info = await executor.open_session(Language.PYTHON, "bench")
        sandbox = executor.sessions.get(info.session_id, "bench").sandbox
        await asyncio.sleep(0.5)
        rss = pss = 0
        for pid in sandbox.process_ids():  # type: ignore[attr-defined]
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        return rss, pss
    finally:
        await executor.aclose()


def _row(label: str, ours: float, anchor: float, goal: str) -> tuple[str, str, str, str, str]:
    return (label, ms(ours), ms(anchor), f"{ours / anchor:.2f}x", goal)


def main() -> None:
    """Run every measure and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200, help="samples per latency measure")
    parser.add_argument("--throughput-runs", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows = []
    pools = '{"python": 8, "javascript": 0, "bash": 0, "c": 0}'
    bare = bare_latency(args.n // 2)
    b50, b99 = stats(bare)
    bare_tp = bare_throughput(args.throughput_runs, 8)
    for path, zygote in (("zygote", "on"), ("bubblewrap", "off")):
        with executor_process(pools, zygote=zygote) as url:
            o50, o99 = stats(executor_latency(url, args.n))
            rows.append(_row(f"stateless print(1) p50, {path}", o50, b50, "<= 0.25x"))
            rows.append(_row(f"stateless print(1) p99, {path}", o99, b99, ""))
            t50, _ = stats(executor_latency(url, args.n, think_s=0))
            rows.append(_row(f"{args.n} back to back, p50, {path}", t50, b50, "<= 0.5x"))
            ours_tp = asyncio.run(executor_throughput(url, args.throughput_runs, 8))
            rows.append(
                (
                    f"stateless runs/s, concurrency 8, {path}",
                    f"{ours_tp:.1f}/s",
                    f"{bare_tp:.1f}/s",
                    f"{ours_tp / bare_tp:.2f}x",
                    ">= 1.5x",
                )
            )
            if zygote == "on":  # sessions are bubblewrap sandboxes either way
                jupyter = jupyter_latency(args.n)
                session = session_latency(url, args.n)
                j50 = statistics.median(jupyter)
                s50 = statistics.median(session)
                rows.append(
                    ("session x += 1 p50", ms(s50), ms(j50), f"{s50 / j50:.2f}x", "<= 0.5x")
                )
    rss, pss = asyncio.run(idle_session_memory())
    rows.append(
        (
            "idle Python session memory",
            f"{rss / 2**20:.1f} MB RSS",
            f"PSS {pss / 2**20:.1f} MB",
            "",
            "<= 20 MB",
        )
    )
    print(table(rows))


if __name__ == "__main__":
    main()
