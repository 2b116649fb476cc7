"""The executor's container, without an unconfined seccomp profile: deploy/seccomp-executor.json.

Docker does not run on this machine. What can be tried is tried: the profile is loaded as runc
loads it (tests/deploy/under_profile.py) into a real `code-exec executor`, started as root with
only the capabilities the container gets (Docker's default set and SYS_ADMIN, the bounding set
cut with setpriv), and that executor must serve every language, sessions and the zygote. The
profile must also refuse what it says it refuses, and stay what the sandbox policy makes it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from executor.backends.local.policy import EXECUTOR_SYSCALLS, SYSCALLS
from executor.backends.local.seccomp import container_profile, render_profile
from tests.executor.conftest import TOKEN, start_executor_process

PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "seccomp-executor.json"
AUTH = {"Internal-Auth-Token": TOKEN}
# Docker's default capabilities, and the SYS_ADMIN that deploy/ adds.
CONTAINER_CAPS = (
    "chown dac_override fsetid fowner mknod net_raw setgid setuid setfcap setpcap "
    "net_bind_service sys_chroot kill audit_write sys_admin"
).split()
UNDER_PROFILE = (
    "setpriv",
    "--bounding-set=-all," + ",".join(f"+{cap}" for cap in CONTAINER_CAPS),
    "--",
    sys.executable,
    "-m",
    "tests.deploy.under_profile",
    str(PROFILE),
)


def test_the_shipped_profile_is_the_policys() -> None:
    expected = render_profile(container_profile(SYSCALLS, EXECUTOR_SYSCALLS))
    assert PROFILE.read_text() == expected, (
        "deploy/seccomp-executor.json is not what the sandbox policy makes: "
        "run `code-exec seccomp-profile > deploy/seccomp-executor.json`"
    )


def test_the_cli_prints_the_profile() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "code_exec.cli", "seccomp-profile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == PROFILE.read_text()


_PROBE = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    return libc.syscall(nr, *args), errno.errorcode.get(ctypes.get_errno(), "0")
out = {
    "keyctl": call(250, 0, 0, 0, 0),
    "bpf": call(321, 0, 0, 0),
    "perf_event_open": call(298, 0, 0, -1, -1, 0),
    "kexec_load": call(246, 0, 0, 0, 0),
    "personality(ADDR_NO_RANDOMIZE)": call(135, 0x0040000),
    "ptrace(PTRACE_ATTACH, 1)": call(101, 16, 1, 0, 0),
}
try:
    socket.socket(40, socket.SOCK_STREAM)
    out["vsock"] = "allowed"
except OSError as exc:
    out["vsock"] = errno.errorcode[exc.errno]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv --bounding-set needs root")
def test_the_profile_refuses_what_it_names() -> None:
    result = subprocess.run(
        [*UNDER_PROFILE, sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    refused = json.loads(result.stdout)
    assert refused == {
        "keyctl": [-1, "EPERM"],
        "bpf": [-1, "EPERM"],
        "perf_event_open": [-1, "EPERM"],
        "kexec_load": [-1, "EPERM"],
        "personality(ADDR_NO_RANDOMIZE)": [-1, "EPERM"],
        "ptrace(PTRACE_ATTACH, 1)": [-1, "EPERM"],
        "vsock": "EPERM",
    }


def _execute(url: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(f"{url}/execute", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the executor runs as the container's root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_an_executor_with_the_containers_privileges_serves_everything() -> None:
    with start_executor_process(
        wrapper=UNDER_PROFILE,
        pool_sizes='{"python": 1, "javascript": 1, "bash": 1, "c": 1}',
        zygote="on",
    ) as executor:
        health = httpx.get(f"{executor.url}/health", timeout=10).json()
        assert health["backend"]["stateless_python"].startswith("zygote"), health["backend"]
        status = Path(f"/proc/{executor.process.pid}/status").read_text()
        assert "Seccomp:\t2" in status  # the profile is on the executor itself
        runs = {
            "python": "import os; print(6 * 7, os.getuid())",
            "javascript": "console.log(6 * 7)",
            "bash": "echo $((6 * 7))",
            "c": '#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 0; }',
        }
        for language, code in runs.items():
            result = _execute(executor.url, {"code": code, "language": language})
            assert result["exit_code"] == 0, (language, result)
            assert str(result["stdout"]).startswith("42"), (language, result)
        opened = httpx.post(
            f"{executor.url}/sessions", json={"language": "python"}, headers=AUTH, timeout=60
        )
        assert opened.status_code == 200, opened.text
        session = opened.json()["session_id"]
        _execute(executor.url, {"code": "x = 41", "session_id": session})
        result = _execute(executor.url, {"code": "print(x + 1)", "session_id": session})
        assert result["stdout"] == "42\n", result
        # The sandboxes' own limits still hold inside the container's.
        bomb = _execute(
            executor.url,
            {"code": ":(){ :|:& };:\nsleep 5", "language": "bash", "timeout": 2},
        )
        assert bomb["exit_code"] != 0
        assert _execute(executor.url, {"code": "print('after')"})["stdout"] == "after\n"


# A container runtime's default masks over /proc (Docker's and containerd's mask these, with
# /dev/null over files and a read-only tmpfs over folders).
_MASK_PROC = (
    "unshare",
    "--mount",
    "--propagation=private",
    "sh",
    "-c",
    "for f in /proc/keys /proc/timer_list /proc/sched_debug; do "
    "[ -e $f ] && mount --bind /dev/null $f; done; "
    "mount -t tmpfs -o ro tmpfs /proc/acpi 2>/dev/null || mount -t tmpfs -o ro tmpfs /proc/scsi; "
    'exec "$@"',
    "sh",
)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="masking /proc needs root")
@pytest.mark.parametrize("zygote", ["on", "off"])
def test_a_masked_proc_is_named_with_the_setting_that_unmasks_it(zygote: str) -> None:
    """Without systempaths=unconfined (procMount: Unmasked), no sandbox can start: the executor
    says so in /health and in the error, with the setting, instead of a bare EPERM."""
    with start_executor_process(
        wrapper=_MASK_PROC + UNDER_PROFILE,
        pool_sizes='{"python": 1, "javascript": 0, "bash": 0, "c": 0}',
        zygote=zygote,
    ) as executor:
        response = httpx.post(
            f"{executor.url}/execute", json={"code": "print(1)"}, headers=AUTH, timeout=60
        )
        assert response.status_code == 500
        message = response.json()["error"]["message"]
        assert "systempaths=unconfined" in message and "procMount: Unmasked" in message
        health = httpx.get(f"{executor.url}/health", timeout=10).json()
        assert health["status"] == "degraded"
        assert health["pools"]["python"]["failing"] > 0
        assert "systempaths=unconfined" in health["pools"]["python"]["last_error"]
