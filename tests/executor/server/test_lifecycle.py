"""Sandboxes die with the executor, and a restarted executor cleans what a dead one left."""

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.executor.conftest import TOKEN, start_executor_process

# Real executor processes, killed and restarted.
pytestmark = pytest.mark.slow


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


def test_sigkilled_executor_takes_its_sandboxes_along_and_restart_cleans_up() -> None:
    state = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp"))
    os.chmod(state, 0o755)
    pools = '{"python": 2, "javascript": 0, "bash": 0, "c": 0}'
    with start_executor_process(state, wait_ready=True, pool_sizes=pools) as executor:
        proc = executor.process
        url = executor.url
        headers = {"Internal-Auth-Token": TOKEN}
        opened = httpx.post(f"{url}/sessions", json={"language": "python"}, headers=headers)
        sid = opened.json()["session_id"]
        code = "import subprocess\nsubprocess.Popen(['sleep', '300'])\nprint('ok')"
        body = {"code": code, "session_id": sid}
        assert httpx.post(f"{url}/execute", json=body, headers=headers).json()["stdout"] == "ok\n"
        sandbox_pids = _descendants(proc.pid)
        assert len(sandbox_pids) >= 6  # pools and the session: bwrap + runner each, and sleep
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in sandbox_pids):
        time.sleep(0.1)
    assert [p for p in sandbox_pids if _alive(p)] == []
    # The dead executor's workspaces (tmpfs mounts, as root) are still there until a restart
    # cleans them.
    stale = f"{state}/exec-{proc.pid}"
    assert Path(stale).is_dir()
    if os.geteuid() == 0:
        assert any(stale in line for line in Path("/proc/self/mounts").read_text().splitlines())
    with start_executor_process(state, wait_ready=True, pool_sizes=pools) as again:
        mounts = Path("/proc/self/mounts").read_text()
        assert stale not in mounts
        assert not Path(stale).exists()
        assert not Path(f"/sys/fs/cgroup/memory/code-exec/exec-{proc.pid}").exists()
        again_pid = again.process.pid
    # A clean stop leaves nothing behind either.
    assert not Path(f"{state}/exec-{again_pid}").exists()
    shutil.rmtree(state, ignore_errors=True)
