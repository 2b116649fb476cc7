"""Helpers shared by the local backend tests."""

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from executor.backends.base import RunOutcome
from executor.backends.local.sandbox import LocalSandbox

# Hosts where everything is slower (the test VM under qemu's emulation: tests/vm/guest.sh)
# scale the runs' timeouts by this.
TIME_SCALE = float(os.environ.get("CODE_EXEC_TEST_TIME_SCALE", "1"))


async def run(
    sandbox: LocalSandbox,
    code: str,
    *,
    timeout: float = 20.0 * TIME_SCALE,
    keep_state: bool = True,
    env: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run code with the usual defaults of these tests."""
    return await sandbox.run(code, env=env or {}, timeout=timeout, keep_state=keep_state)


def ok(outcome: RunOutcome) -> str:
    """Assert a run succeeded and return its stdout."""
    assert outcome.error is None, (outcome.error, outcome.stderr.text())
    assert outcome.exit_code == 0, outcome.stderr.text()
    return outcome.stdout.text()


def pid_exists(pid: int) -> bool:
    """Whether a pid is a live (non-zombie) process on the host."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float = 3.0) -> list[int]:
    """The pids still alive after waiting up to timeout seconds."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_exists(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_exists(p)]
    return alive


def vm_rss() -> int:
    """Resident memory of this (the executor's, in tests) process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def host_uid(pid: int) -> int | None:
    """Real uid of a host process, None when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def host_can_spawn() -> bool:
    """Whether the host (this test process) can still start a process."""
    return subprocess.run(["true"], check=False).returncode == 0


def read_bytes(path: str | Path) -> bytes:
    """A host file's content (blocking; fine in tests)."""
    return Path(path).read_bytes()
