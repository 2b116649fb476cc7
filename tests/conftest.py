"""Fixtures for every test, and the line between the fast tier and the slow one.

A test is `slow` when it starts real sandboxes or processes: it says so with the marker, or it
uses one of REAL_FIXTURES and is marked here. `pytest -m "not slow"` (make test-fast) runs the
rest, over the in-memory fake backend (tests/fakes.py); a test in that tier that tries to
start bubblewrap fails, so the tiers cannot drift apart unnoticed.
"""

import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_timeout

from executor.config import ExecutorSettings
from executor.core import Executor
from tests.fakes import FakeBackend

REAL_FIXTURES = {
    "make_executor",
    "executor_process",
    "make_backend",
    "backend",
    "make_sandbox",
    "py",
    "sh",
    "c",
    "js",
    "real_api",
    "http_api",
    "cors_api",
    "fuzzed_api",
    "deployment",
    "e2b_executor",
    "fake_e2b",
}


# Directories and modules whose every test is slow; the fast tier does not even import them
# (the E2B SDK and Hypothesis cost it seconds). A fast test put there runs in `make test` only.
_HERE = Path(__file__).parent
SLOW_ONLY = (_HERE / "executor" / "backends" / "e2b", _HERE / "executor" / "test_tools_fuzz.py")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast tier, skip the places that hold only slow tests."""
    if config.getoption("markexpr", "") != "not slow":
        return None
    return any(collection_path.is_relative_to(d) for d in SLOW_ONLY) or None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test that uses a real sandbox or process through a fixture."""
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's signal method, which also prints the event loop's tasks: a hung async
    test waits in select, so the thread stacks alone do not say on what it waits."""
    if settings.method != "signal":
        return None

    def handler(signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        try:
            tasks = asyncio.all_tasks(asyncio.get_running_loop())
        except RuntimeError:
            tasks = set()
        for task in tasks:
            sys.stderr.write(f"--- task {task.get_name()}, awaiting:\n")
            awaitable: Any = task.get_coro()
            while awaitable is not None:
                frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
                if frame is not None:
                    sys.stderr.write(f"  {frame.f_code.co_filename}:{frame.f_lineno}\n")
                awaitable = getattr(awaitable, "cr_await", None) or getattr(
                    awaitable, "ag_await", None
                )
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.fixture(autouse=True)
def _fast_tests_start_no_sandbox(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("slow") is not None:
        return
    from executor.backends.local.backend import LocalBackend

    async def refuse(self: LocalBackend) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts real sandboxes: mark it slow, or use the fake backend"
        )

    monkeypatch.setattr(LocalBackend, "start", refuse)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_state_dir() -> Iterator[Path]:
    """A state dir for an executor over the fake backend (only its output store uses it)."""
    path = Path(tempfile.mkdtemp(prefix="code-exec-fake-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fake_settings(state_dir: Path, **overrides: Any) -> ExecutorSettings:
    """Executor settings for tests over the fake backend: small pools, fast reaping."""
    overrides.setdefault("pool_sizes", {"python": 1, "javascript": 0, "bash": 0, "c": 0})
    overrides.setdefault("pool_wait_s", 5)
    return ExecutorSettings(state_dir=state_dir, _env_file=None, **overrides)


@pytest.fixture
async def make_fake_executor(fake_state_dir: Path) -> AsyncIterator[Any]:
    """Build and start Executors over FakeBackends; all closed at the end."""
    started: list[Executor] = []

    async def factory(backend: FakeBackend | None = None, **overrides: Any) -> Executor:
        executor = Executor(fake_settings(fake_state_dir, **overrides), backend or FakeBackend())
        await executor.start()
        started.append(executor)
        return executor

    yield factory
    for executor in started:
        await executor.aclose()
