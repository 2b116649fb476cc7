"""Real code-exec processes on loopback, for the tests and the benchmarks: spawn, wait for
/health, stop. (bench/common.py starts its servers through code_exec_process too.)"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def new_state_dir(prefix: str = "code-exec-test-") -> Path:
    """A state dir under /tmp: pytest's tmp_path lies in a 0700 directory that sandbox uids
    cannot cross to reach the mounts."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def _cap_open_files(limit: int | None) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20, what: str = "timed out") -> None:
    """Poll predicate (another process's state, say) every 0.1 s until it holds, or fail."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def code_exec_process(
    command: str,
    port: int | None,
    settings: dict[str, str],
    ready: Callable[[dict[str, Any]], bool],
    state: Path | None = None,
    timeout_s: float = 40,
    quiet: bool = False,
    open_files: int | None = None,
    wrapper: tuple[str, ...] = (),
) -> Iterator[tuple[str, "subprocess.Popen[bytes]"]]:
    """`code-exec COMMAND --port PORT` with CODE_EXEC_* settings, once ready(/health) holds.

    Yields (url, process). The port is a free one when None; the state dir is created and
    removed here unless one is given; quiet sends the process's stderr to /dev/null;
    open_files caps the process's open files (soft and hard), as a small host would; wrapper
    is a command that execs the rest of its arguments (setpriv, say), put in front.
    """
    owned = state is None
    state = state or new_state_dir()
    port = port or free_port()
    env = {
        **os.environ,
        "CODE_EXEC_STATE_DIR": str(state),
        **{f"CODE_EXEC_{k.upper()}": v for k, v in settings.items()},
    }
    process = subprocess.Popen(
        [
            *wrapper,
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
        stderr=subprocess.DEVNULL if quiet else None,
        preexec_fn=(lambda: _cap_open_files(open_files)) if open_files else None,  # noqa: PLW1509
    )
    url = f"http://127.0.0.1:{port}"
    # Under emulation (the test VM, tests/vm) a start takes several times longer.
    scale = float(os.environ.get("CODE_EXEC_TEST_TIME_SCALE", "1"))
    deadline = time.monotonic() + timeout_s * scale
    try:
        while True:
            try:
                if ready(httpx.get(f"{url}/health", timeout=1).json()):
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"code-exec {command} did not start")
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if owned:
            shutil.rmtree(state, ignore_errors=True)
