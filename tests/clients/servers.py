"""The servers the client tests drive: `code-exec mcp` over stdio (with its shared local
executor, stopped and checked after) and a real API server on loopback for streamable HTTP.

Both run the real sandboxes; pools are small so that the client tests stay cheap.
"""

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.openai_tools.conftest import Api, _port, mint, start_api
from tests.processes import new_state_dir

STDIO_POOLS = '{"python": 1, "javascript": 0, "bash": 0, "c": 0}'


@dataclass(frozen=True)
class Stdio:
    """How a client starts `code-exec mcp`: command, arguments, environment."""

    command: str
    args: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Http:
    """Where a client reaches /mcp and the headers it sends."""

    url: str
    headers: dict[str, str]


def stdio_command(state: Path, *extra: str) -> Stdio:
    """`code-exec mcp` as a client configures it, over this state dir."""
    return Stdio(
        sys.executable,
        ["-m", "code_exec.cli", "--log-level", "warning", "mcp", *extra],
        {**os.environ, "CODE_EXEC_STATE_DIR": str(state), "CODE_EXEC_POOL_SIZES": STDIO_POOLS},
    )


@pytest.fixture
def stdio_state() -> Iterator[Path]:
    """A state dir for `code-exec mcp` processes; their shared executor is stopped after."""
    from code_exec.local_executor import stop_local_executor
    from executor.config import ExecutorSettings

    state = new_state_dir()
    yield state
    assert stop_local_executor(ExecutorSettings(state_dir=state, _env_file=None))
    # The shared executor cleaned up after itself: no workspace, no mount.
    assert not list(state.glob("exec-*"))
    assert str(state) not in Path("/proc/self/mounts").read_text()
    shutil.rmtree(state, ignore_errors=True)


def runs_in_progress(health: dict[str, Any]) -> int:
    """Sandboxes that are neither in a pool nor a session's, by an executor's (or the API's)
    /health: the runs going on."""
    executor = health.get("executor", health)
    pooled = sum(pool["ready"] + pool["starting"] for pool in executor["pools"].values())
    return int(executor["backend"]["live_sandboxes"]) - pooled - int(executor["sessions"])


def shared_executor_health(state: Path) -> dict[str, Any]:
    """/health of the shared executor `code-exec mcp` started over this state dir."""
    socket = state / f"mcp-executor-{os.getuid()}" / "executor.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=10) as http:
        health: dict[str, Any] = http.get("http://executor/health").json()
        return health


@pytest.fixture
def stdio(stdio_state: Path) -> Stdio:
    """`code-exec mcp` over a fresh state dir."""
    return stdio_command(stdio_state)


@pytest.fixture(scope="module")
def mcp_api() -> Iterator[Api]:
    """A real `code-exec api` on loopback (real sandboxes)."""
    yield from start_api(_port())


@pytest.fixture
def http(mcp_api: Api, request: pytest.FixtureRequest) -> Http:
    """/mcp of the real API, as a user of this test's own."""
    user = request.node.name[:60]
    return Http(f"{mcp_api.url}/mcp", {"Authorization": f"Bearer {mint(user)}"})
