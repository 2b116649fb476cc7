"""Sandboxes die with the executor, and a restarted executor cleans what a dead one left."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.executor.conftest import TOKEN, _free_port


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.add(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start(state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CODE_EXEC_INTERNAL_TOKEN": TOKEN,
        "CODE_EXEC_STATE_DIR": str(state),
        "CODE_EXEC_POOL_SIZES": '{"python": 2, "javascript": 0, "bash": 0, "c": 0}',
    }
    proc = subprocess.Popen(
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
            if health["pools"]["python"]["ready"] == 2:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("executor did not start")


def test_sigkilled_executor_takes_its_sandboxes_along_and_restart_cleans_up() -> None:
    state = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp"))
    os.chmod(state, 0o755)
    port = _free_port()
    proc = _start(state, port)
    url = f"http://127.0.0.1:{port}"
    headers = {"Internal-Auth-Token": TOKEN}
    sid = httpx.post(f"{url}/sessions", json={"language": "python"}, headers=headers).json()[
        "session_id"
    ]
    body = {
        "code": "import subprocess\nsubprocess.Popen(['sleep', '300'])\nprint('ok')",
        "session_id": sid,
    }
    assert httpx.post(f"{url}/execute", json=body, headers=headers).json()["stdout"] == "ok\n"
    sandbox_pids = _descendants(proc.pid)
    assert len(sandbox_pids) >= 6  # pools and the session, each bwrap + runner (+ sleep)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in sandbox_pids):
        time.sleep(0.1)
    assert [p for p in sandbox_pids if _alive(p)] == []
    # The dead executor's workspaces (tmpfs mounts) are still there until a restart cleans them.
    stale = f"{state}/exec-{proc.pid}"
    assert any(stale in line for line in Path("/proc/self/mounts").read_text().splitlines())
    again = _start(state, _free_port())
    try:
        mounts = Path("/proc/self/mounts").read_text()
        assert stale not in mounts
        assert not Path(stale).exists()
        assert not Path(f"/sys/fs/cgroup/memory/code-exec/exec-{proc.pid}").exists()
    finally:
        again.terminate()
        again.wait(20)
    # A clean stop leaves nothing behind either.
    assert not Path(f"{state}/exec-{again.pid}").exists()
