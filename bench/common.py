"""Shared pieces of the benchmarks: timing stats, a table, an executor process."""

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from tests.processes import code_exec_process

TOKEN = "bench-internal-token"
SECRET = "bench-jwt-secret-" + "x" * 48


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


class Served(str):
    """A server's URL that also knows the server's pid."""

    pid: int


@contextmanager
def served(
    command: str, ready: Callable[[dict[str, Any]], bool], quiet: bool = False, **settings: str
) -> Iterator[Served]:
    """`code-exec COMMAND` on a free loopback port with CODE_EXEC_* settings, once ready."""
    with code_exec_process(command, None, settings, ready, timeout_s=60, quiet=quiet) as (
        url,
        process,
    ):
        handle = Served(url)
        handle.pid = process.pid
        yield handle


def bench_token(user: str = "bench") -> str:
    """A bearer token the benchmark servers (SECRET) accept, valid an hour."""
    now = int(time.time())
    claims = {"sub": user, "aud": "code-exec", "iss": "code-exec", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, "HS256")


def sample_posts(
    url: str, path: str, body: object, headers: dict[str, str], n: int, think_s: float = 0.05
) -> list[float]:
    """Seconds of n POSTs, one at a time, with a user's think time between them (so that
    the pool's refill is not on the measured path)."""
    samples = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for _ in range(n):
            began = time.perf_counter()
            response = http.post(path, json=body)
            samples.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
            time.sleep(think_s)
    return samples


def executor_process(
    pool_sizes: str = '{"python": 8}', zygote: str = "auto"
) -> ContextManager[Served]:
    """A `code-exec executor`, ready once every pool is full (zygote: CODE_EXEC_ZYGOTE)."""
    return served(
        "executor",
        lambda health: all(p["ready"] >= p["size"] for p in health["pools"].values()),
        internal_token=TOKEN,
        pool_sizes=pool_sizes,
        pool_wait_s="60",
        max_concurrent_starts="2",
        zygote=zygote,
    )


def api_process(command: str, **settings: str) -> ContextManager[Served]:
    """`code-exec serve|api` with a test JWT secret, ready once its Python pool is full."""

    def ready(health: dict[str, Any]) -> bool:
        pools = health["executor"]["pools"]
        return bool(pools["python"]["ready"] >= pools["python"]["size"])

    defaults = {
        "jwt_secret": SECRET,
        "pool_sizes": '{"python": 8, "javascript": 0, "bash": 0, "c": 0}',
        "max_concurrent_runs_per_user": "64",
    }
    return served(command, ready, quiet=True, **{**defaults, **settings})
