"""Fixtures for executor tests: a real Executor, and a real executor process on loopback."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from executor.config import ExecutorSettings
from executor.service import Executor

TOKEN = "test-internal-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def executor_state_dir() -> Iterator[Path]:
    """A state dir under /tmp: pytest's tmp_path lies in a 0700 directory sandbox uids cannot
    cross to reach the mounts."""
    path = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def make_executor(executor_state_dir: Path) -> AsyncIterator[Any]:
    """Build and start Executors with setting overrides; all closed at the end."""
    started: list[Executor] = []

    async def factory(**overrides: Any) -> Executor:
        overrides.setdefault("pool_sizes", {"python": 1, "javascript": 0, "bash": 0, "c": 0})
        executor = Executor(ExecutorSettings(state_dir=executor_state_dir, **overrides))
        await executor.start()
        started.append(executor)
        return executor

    yield factory
    for executor in started:
        await executor.close()


@dataclass
class ExecutorProcess:
    """A `code-exec executor` process listening on loopback."""

    url: str
    process: subprocess.Popen[bytes]

    def rss_bytes(self) -> int:
        """Resident memory of the executor process."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextmanager
def start_executor_process(
    state: Path | None = None, wait_ready: bool = False, port: int | None = None, **settings: str
) -> Iterator[ExecutorProcess]:
    """Run `code-exec executor` on a free loopback port with CODE_EXEC_* overrides.

    With wait_ready, returns once every pool is full; the state dir is removed at the end
    unless the caller gave one.
    """
    port = port or _free_port()
    owned = state is None
    if state is None:
        state = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp"))
        os.chmod(state, 0o755)
    env = {
        **os.environ,
        "CODE_EXEC_INTERNAL_TOKEN": TOKEN,
        "CODE_EXEC_STATE_DIR": str(state),
        **{f"CODE_EXEC_{k.upper()}": v for k, v in settings.items()},
    }
    process = subprocess.Popen(
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=1).json()
            pools = health["pools"].values()
            if not wait_ready or all(p["ready"] >= p["size"] for p in pools):
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError("executor did not start")
    try:
        yield ExecutorProcess(url, process)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        if owned:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def executor_process() -> Iterator[ExecutorProcess]:
    """A real executor process (module-wide: it keeps warm pools)."""
    with start_executor_process(
        pool_sizes='{"python": 4, "javascript": 1, "bash": 1, "c": 1}', pool_wait_s="30"
    ) as process:
        yield process
