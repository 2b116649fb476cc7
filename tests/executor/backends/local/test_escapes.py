"""The escape battery: each of these must fail from inside a sandbox.

Network, host files, secrets and the runtime mounts are in test_isolation.py, syscalls in
test_seccomp.py; here: ptrace, setuid binaries, mounting, /proc and /sys, kernel interfaces, and
daemons that try to outlive their session.
"""

import json

import pytest

from executor.backends.local.sandbox import LocalSandbox

from ._helpers import ok, run, wait_gone

pytestmark = pytest.mark.anyio


async def _probe(sandbox: LocalSandbox, code: str) -> dict[str, str]:
    return dict(json.loads(ok(await run(sandbox, code)).strip().splitlines()[-1]))


async def test_ptrace_cannot_reach_any_process_outside_the_sandbox(py: LocalSandbox) -> None:
    """Only the sandbox's own processes are visible, and the seccomp filter refuses ptrace
    anyway (test_seccomp.py); every other pid does not exist from inside."""
    code = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
visible = {int(p) for p in os.listdir('/proc') if p.isdigit()}
attached = []
for pid in range(1, 4000):
    if pid in visible or pid == os.getpid():
        continue
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        attached.append(pid)
        libc.ptrace(PTRACE_DETACH, pid, None, None)
print(json.dumps({"attached": attached, "visible": sorted(visible)}))
"""
    result = await _probe(py, code)
    assert result["attached"] == []
    assert len(result["visible"]) <= 4  # bwrap's init, the runner, this probe's process


async def test_setuid_binaries_give_no_privilege(sh: LocalSandbox) -> None:
    out = ok(
        await run(
            sh,
            "for b in /usr/bin/su /usr/bin/passwd /usr/bin/mount /usr/bin/newgrp; do\n"
            '  [ -e "$b" ] && { "$b" --help >/dev/null 2>&1; echo "$b ran"; }\n'
            "done\n"
            "grep NoNewPrivs /proc/self/status\n"
            "id -u\n"
            "sudo -n true 2>&1 | head -1 || true",
        )
    )
    assert "NoNewPrivs:\t1" in out
    assert "1000" in out.splitlines()


async def test_mounting_and_kernel_interfaces_are_refused(py: LocalSandbox) -> None:
    code = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
result = {}
def attempt(name, fn):
    try:
        rc = fn()
        result[name] = "ok" if rc in (0, None) else os.strerror(ctypes.get_errno())
    except OSError as exc:
        result[name] = exc.__class__.__name__
attempt("mount tmpfs", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
attempt("unshare newns", lambda: libc.unshare(0x00020000))
attempt("sethostname", lambda: libc.sethostname(b"pwned", 5))
attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w").write("h"))
attempt("kmsg", lambda: open("/proc/kmsg", "rb").read(1))
attempt("kcore", lambda: open("/proc/kcore", "rb").read(1))
attempt("sys", lambda: os.listdir("/sys/class/net"))
attempt("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/x"))
attempt("mknod", lambda: os.mknod("/tmp/sda", 0o600 | 0o060000, os.makedev(8, 0)))
print(json.dumps(result))
"""
    result = await _probe(py, code)
    assert all(value != "ok" for value in result.values()), result


async def test_a_daemon_does_not_outlive_its_session(make_sandbox) -> None:  # type: ignore[no-untyped-def]
    sandbox = await make_sandbox("python")
    code = """
import os, subprocess
# Double fork and a new session: the classic way to leave a parent behind.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "3600"])
    os._exit(0)
os.wait()
print("daemon started")
"""
    assert ok(await run(sandbox, code)) == "daemon started\n"
    pids = sandbox.process_ids()
    assert len(pids) >= 4  # bwrap, bwrap, runner, and the daemon
    await sandbox.close()
    assert wait_gone(pids) == [], "a process of the sandbox survived its close"
