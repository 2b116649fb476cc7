"""Real code-exec processes on loopback for the tests: spawn, wait for /health, stop."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def new_state_dir() -> Path:
    """A state dir under /tmp: pytest's tmp_path lies in a 0700 directory that sandbox uids
    cannot cross to reach the mounts."""
    path = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@contextmanager
def code_exec_process(
    command: str,
    port: int,
    settings: dict[str, str],
    ready: Callable[[dict[str, Any]], bool],
    state: Path | None = None,
    timeout_s: float = 40,
) -> Iterator[tuple[str, "subprocess.Popen[bytes]"]]:
    """`code-exec COMMAND --port PORT` with CODE_EXEC_* settings, once ready(/health) holds.

    Yields (url, process). The state dir is created and removed here unless one is given.
    """
    owned = state is None
    state = state or new_state_dir()
    env = {
        **os.environ,
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
            command,
            "--port",
            str(port),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready(httpx.get(f"{url}/health", timeout=1).json()):
                break
        except (httpx.TransportError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError(f"code-exec {command} did not start")
        time.sleep(0.1)
    try:
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        if owned:
            shutil.rmtree(state, ignore_errors=True)
