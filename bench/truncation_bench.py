"""Token-budget benchmark (issue: token budgets), anchor measured in the same run.

1 MB, 10 MB and 100 MB of output cut to 2,000 tokens the way the executor handles a run's
output (capture while streaming, spill to disk, fit the result), against tokenizing the
whole output with tiktoken. Goal: 100 MB in under 0.3 s at the executor, memory growth under
64 MB.
"""

import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.common import machine, table
from executor.backends.capture import StreamCapture
from executor.core.tokens import get_encoding
from executor.core.truncation import Budget, fit_result
from schemas.execution import ExecuteResult
from schemas.languages import Language

CHUNK = 64 * 1024
LINE = b"2026-11-22 12:00:00 INFO worker-3 processed item 123456 in 0.42 ms (ok)\n"
BLOCK = (LINE * (CHUNK // len(LINE) + 1))[:CHUNK]


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def executor_path(total: int, spill_dir: Path) -> tuple[float, int, int]:
    """Seconds, peak traced bytes and RSS growth of capture + spill + fit for `total` bytes."""
    encoding = get_encoding()
    gc.collect()
    rss_before = _rss()
    tracemalloc.start()
    began = time.perf_counter()
    capture = StreamCapture(1024 * 1024, spill_dir / "out.stdout", 64 * 1024 * 1024)
    for _ in range(total // CHUNK):
        capture.feed(BLOCK)
    capture.close()
    result = ExecuteResult(
        execution_id="exe_bench",
        language=Language.PYTHON,
        stdout=capture.text(),
        exit_code=0,
        duration_ms=0,
    )
    fitted, cut = fit_result(result, Budget(2000, encoding, lambda part, line: "see the API"))
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert cut and len(encoding.encode_ordinary(fitted.stdout)) <= 2000
    growth = _rss() - rss_before
    os.unlink(spill_dir / "out.stdout")
    return seconds, peak, growth


def whole_tiktoken(total: int) -> tuple[float, int]:
    """Seconds and RSS growth of tokenizing the whole output with tiktoken."""
    encoding = get_encoding()
    gc.collect()
    rss_before = _rss()
    began = time.perf_counter()
    text = (BLOCK * (total // CHUNK)).decode()
    tokens = encoding.encode_ordinary(text)
    seconds = time.perf_counter() - began
    growth = _rss() - rss_before
    del text, tokens
    return seconds, growth


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    get_encoding()  # loaded once, as the executor does at start
    rows = []
    with tempfile.TemporaryDirectory() as spill:
        for mb in (1, 10, 100):
            total = mb * 1024 * 1024
            ours, peak, growth = executor_path(total, Path(spill))
            anchor, anchor_growth = whole_tiktoken(total)
            rows.append(
                (
                    f"{mb} MB -> 2,000 tokens: time",
                    f"{ours:.3f} s",
                    f"{anchor:.3f} s (tiktoken, whole)",
                    f"{ours / anchor:.3f}x",
                    "< 0.3 s" if mb == 100 else "",
                )
            )
            rows.append(
                (
                    f"{mb} MB: memory growth",
                    f"{peak / 2**20:.1f} MB traced, {growth / 2**20:.1f} MB RSS",
                    f"{anchor_growth / 2**20:.0f} MB RSS",
                    "",
                    "< 64 MB" if mb == 100 else "",
                )
            )
    print(table(rows))


if __name__ == "__main__":
    main()
