"""Fixtures for executor tests: real Executors, a real executor process on loopback, and an
executor of either kind (the fake backend, or real sandboxes in the slow tier)."""

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from executor.config import ExecutorSettings
from executor.core import Executor
from tests.conftest import fake_settings
from tests.fakes import FakeBackend
from tests.processes import code_exec_process, new_state_dir

TOKEN = "test-internal-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def executor_state_dir() -> Iterator[Path]:
    """A state dir sandbox uids can reach (see tests.processes.new_state_dir)."""
    path = new_state_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def _executors(kind: str) -> AsyncIterator[Any]:
    """A factory of started Executors of one kind ("fake" or "real"), closed on exit."""
    started: list[Executor] = []
    state = new_state_dir()

    async def factory(fake_start_delay_s: float = 0.0, **overrides: Any) -> Executor:
        if kind == "fake":
            backend = FakeBackend(start_delay_s=fake_start_delay_s)
            executor = Executor(fake_settings(state, **overrides), backend)
        else:
            overrides.setdefault("pool_sizes", {"python": 1, "javascript": 0, "bash": 0, "c": 0})
            executor = Executor(ExecutorSettings(state_dir=state, **overrides))
        await executor.start()
        started.append(executor)
        return executor

    try:
        yield factory
    finally:
        for executor in started:
            await executor.aclose()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
async def make_executor() -> AsyncIterator[Any]:
    """Build and start real Executors (bubblewrap sandboxes) with setting overrides."""
    async with _executors("real") as factory:
        yield factory


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.slow)])
async def make_any_executor(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An executor factory over the fake backend, or (slow tier) over real sandboxes."""
    async with _executors(request.param) as factory:
        yield factory


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
    state: Path | None = None,
    wait_ready: bool = False,
    port: int | None = None,
    wrapper: tuple[str, ...] = (),
    **settings: str,
) -> Iterator[ExecutorProcess]:
    """Run `code-exec executor` on a loopback port with CODE_EXEC_* overrides.

    With wait_ready, returns once every pool is full; the state dir is removed at the end
    unless the caller gave one.
    """

    def ready(health: dict[str, Any]) -> bool:
        return not wait_ready or all(p["ready"] >= p["size"] for p in health["pools"].values())

    with code_exec_process(
        "executor",
        port or _free_port(),
        {"internal_token": TOKEN, **settings},
        ready,
        state,
        timeout_s=30,
        wrapper=wrapper,
    ) as (url, process):
        yield ExecutorProcess(url, process)


@pytest.fixture(scope="module")
def executor_process() -> Iterator[ExecutorProcess]:
    """A real executor process (module-wide: it keeps warm pools)."""
    with start_executor_process(
        pool_sizes='{"python": 4, "javascript": 1, "bash": 1, "c": 1}', pool_wait_s="30"
    ) as process:
        yield process
