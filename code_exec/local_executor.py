"""The local executor `code-exec mcp` shares: started once, reached over a Unix socket,
stopped when idle.

Clients that run one `code-exec mcp` process per call (LangChain's stdio client) or per agent
run would lose every session with the process if the executor lived inside it. So `code-exec
mcp` attaches to one executor per user and state directory, listening on a Unix socket in a
private directory (0700), with a random internal token in a 0600 file beside it. The first
`code-exec mcp` starts it (under a lock, so two starting at once start one); it exits by
itself once it has had no session and no request for `idle_exit_s`.
"""

import contextlib
import fcntl
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from executor.config import ExecutorSettings

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalExecutor:
    """Where the shared executor listens, and its token."""

    socket: Path
    token: str

    def transport(self) -> httpx.AsyncHTTPTransport:
        """An httpx transport to it."""
        return httpx.AsyncHTTPTransport(uds=str(self.socket))


def _directory(settings: ExecutorSettings) -> Path:
    path = settings.state_dir / f"mcp-executor-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _healthy(socket: Path) -> bool:
    if not socket.exists():
        return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as http:
            return http.get("http://executor/health").status_code == 200
    except httpx.TransportError:
        return False


def stop_local_executor(settings: ExecutorSettings, timeout_s: float = 30.0) -> bool:
    """Stop the shared executor of these settings, if one runs; whether it has stopped."""
    pid_file = settings.state_dir / f"mcp-executor-{os.getuid()}" / "executor.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 15)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return True
    return exited(pid, timeout_s)


def exited(pid: int, timeout_s: float) -> bool:
    """Whether the process has gone within timeout_s (reaped, if it is our child)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def ensure_local_executor(settings: ExecutorSettings, idle_exit_s: float) -> LocalExecutor:
    """The running shared executor, started first when there is none."""
    directory = _directory(settings)
    socket, token_file = directory / "executor.sock", directory / "executor.token"
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one `code-exec mcp` starts it; the others wait
        if _healthy(socket) and token_file.exists():
            return LocalExecutor(socket, token_file.read_text().strip())
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        token = secrets.token_urlsafe(32)
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        env = {
            **os.environ,
            "CODE_EXEC_INTERNAL_TOKEN": token,
            "CODE_EXEC_DEV_MODE": "false",
        }
        log = open(directory / "executor.log", "ab")  # noqa: SIM115  (the child keeps it)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "code_exec.cli",
                "--log-level",
                "warning",
                "executor",
                "--unix-socket",
                str(socket),
                "--idle-exit",
                str(idle_exit_s),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # it outlives this process, and its signals
        )
        log.close()
        (directory / "executor.pid").write_text(str(child.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(socket):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the local executor did not start within {START_TIMEOUT_S:g} s; see "
                    f"{directory / 'executor.log'}"
                )
            time.sleep(0.1)
        return LocalExecutor(socket, token)
