"""CPU per stateless run, by cgroup accounting (issue 14's anchor): every process of a run
counts, those reparented to init after a sandbox is killed included, which the executor's own
rusage never sees.

The executor is started inside a cpuacct cgroup of the benchmark's own (cgroup v1; on v2 a
group whose cpu.stat is read); sandbox processes stay in it, since the backend moves them only
in the memory and pids hierarchies (v1). The benchmark's client stays outside it. The CPU
of N stateless print(1) runs at concurrency 8 through the executor's HTTP API, pool refills
and teardowns included (each run costs one new sandbox), is set against N bare
`python3 -c 'print(1)'` subprocesses (their rusage) in the same run.
"""

import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import TOKEN, executor_process, machine, table
from bench.executor_bench import BARE_PYTHON

AUTH = {"Internal-Auth-Token": TOKEN}
V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup")


@contextmanager
def accounting_group(name: str) -> Iterator[Path]:
    """A fresh cgroup that counts CPU; removed after (its processes moved out first)."""
    group = (V1 if V1.is_dir() else V2) / name
    group.mkdir(exist_ok=True)
    try:
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:  # processes still leaving
                time.sleep(0.1)


def cpu_seconds(group: Path) -> float:
    """CPU the group's processes (and its dead ones') have used."""
    if (group / "cpuacct.usage").exists():
        return int((group / "cpuacct.usage").read_text()) / 1e9
    stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6


@contextmanager
def inside(group: Path) -> Iterator[None]:
    """This process in group for the block (what it starts stays there), then back."""
    before = next(
        line.split(":", 2)[2]
        for line in Path("/proc/self/cgroup").read_text().splitlines()
        if ("cpuacct" in line.split(":")[1]) == V1.is_dir()
    )
    (group / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield
    finally:
        root = group.parent / before.lstrip("/")
        (root / "cgroup.procs").write_text(str(os.getpid()))


def run_many(url: str, total: int, concurrency: int) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:

        def one(_: int) -> None:
            body = http.post("/execute", json={"code": "print(1)"}).json()
            assert body["stdout"] == "1\n", body

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(total)))


def settled(url: str, size: int) -> None:
    """Wait until the pool is full again and nothing is starting (refills are counted)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pool = httpx.get(f"{url}/health").json()["pools"]["python"]
        if pool["ready"] >= size and not pool["starting"]:
            return
        time.sleep(0.1)
    raise RuntimeError("the pool did not refill")


def bare_cpu(total: int, concurrency: int) -> float:
    """CPU seconds of total bare interpreters (their rusage, waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    def one(_: int) -> None:
        subprocess.run([BARE_PYTHON, "-c", "print(1)"], capture_output=True, check=True)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    """Print the table (needs root for the cgroup)."""
    total = int(os.environ.get("BENCH_N", "200"))
    print(f"machine: {machine()}")
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        print("skipped: needs root (a cgroup of its own) and bubblewrap")
        return
    rows = []
    bare = bare_cpu(total, 8) / total
    for name, zygote in (("zygote", "on"), ("bubblewrap", "off")):
        ours, parts = executor_cpu(total, zygote)
        rows.append(
            (
                f"CPU per stateless print(1), concurrency 8 (cgroup), {name}",
                f"{ours * 1000:.1f} ms",
                f"{bare * 1000:.1f} ms (bare python3 -c)",
                f"{ours / bare:.2f}x",
                "<= 0.5x",
            )
        )
        for part, seconds in parts.items():
            rows.append((f"  of which {part}", f"{seconds * 1000:.1f} ms", "", "", ""))
    print(table(rows))


def own_cpu(pid: int) -> float:
    """CPU seconds one process has used itself (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def executor_cpu(total: int, zygote: str) -> tuple[float, dict[str, float]]:
    """CPU seconds per stateless run of an executor (CODE_EXEC_ZYGOTE=zygote), by its cgroup;
    and how much of it the executor process and the zygote used themselves (the rest is the
    sandboxes')."""
    size = 8
    with accounting_group(f"code-exec-bench-{os.getpid()}-{zygote}") as group:
        server = executor_process(f'{{"python": {size}}}', zygote=zygote)
        with inside(group):
            url = server.__enter__()
        try:
            settled(url, size)
            stateless = httpx.get(f"{url}/health").json()["backend"]["stateless_python"]
            found = re.match(r"zygote \(pid (\d+)", stateless)
            processes = {"the executor process": url.pid}
            if found:
                processes["the zygote"] = int(found.group(1))
            idle_before = cpu_seconds(group)
            time.sleep(2)
            idle = (cpu_seconds(group) - idle_before) / 2  # CPU per second at rest
            began, cpu_before = time.monotonic(), cpu_seconds(group)
            own_before = {name: own_cpu(pid) for name, pid in processes.items()}
            run_many(url, total, 8)
            settled(url, size)
            seconds = time.monotonic() - began
            parts = {
                name: (own_cpu(pid) - own_before[name]) / total for name, pid in processes.items()
            }
            whole = (cpu_seconds(group) - cpu_before - idle * seconds) / total
            parts["the sandboxes (the rest)"] = whole - sum(parts.values())
            return whole, parts
        finally:
            server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
