"""Shared pieces of the benchmarks: timing stats, a table, an executor process."""

import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx

TOKEN = "bench-internal-token"


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) of samples, nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{seconds * 1000:.2f} ms"


def machine() -> str:
    """One line naming this machine."""
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    """A Markdown table: measure, code-exec, anchor, ratio, goal."""
    header = ("measure", "code-exec", "anchor", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)


def stats(samples: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    return statistics.median(samples), percentile(samples, 99)


@contextmanager
def executor_process(pool_sizes: str = '{"python": 8}') -> Iterator[str]:
    """A `code-exec executor` on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tempfile.mkdtemp(prefix="code-exec-bench-", dir="/tmp")
    os.chmod(state, 0o755)
    env = {
        **os.environ,
        "CODE_EXEC_INTERNAL_TOKEN": TOKEN,
        "CODE_EXEC_STATE_DIR": state,
        "CODE_EXEC_POOL_SIZES": pool_sizes,
        "CODE_EXEC_POOL_WAIT_S": "60",
        "CODE_EXEC_MAX_CONCURRENT_STARTS": "2",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "code_exec.cli",
            "--log-level",
            "warning",
            "executor",
            "--port",
            str(port),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1).json()
                if all(p["ready"] >= p["size"] for p in health["pools"].values()):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("executor did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
