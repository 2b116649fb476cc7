"""Resource limits of local sandboxes: processes, memory, output, disk, file size."""

import asyncio
import os

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox
from executor.errors import PayloadTooLarge
from schemas.languages import Language

from ._helpers import host_can_spawn, host_uid, ok, run, vm_rss, wait_gone

pytestmark = pytest.mark.anyio

_MIB = 1024 * 1024


async def _run_sampling(sandbox: LocalSandbox, code: str, **kwargs):  # type: ignore[no-untyped-def]
    """Run code while recording every pid of the sandbox and the largest process count."""
    task = asyncio.create_task(run(sandbox, code, **kwargs))
    seen: set[int] = set()
    most = 0
    while not task.done():
        pids = sandbox.process_ids()
        seen.update(pids)
        most = max(most, len(pids))
        await asyncio.sleep(0.05)
    return await task, seen, most


# --- processes ---


async def test_bash_fork_bomb_contained(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(pids_limit=64)
    sandbox = await backend.create(Language.BASH)
    uid = host_uid(sandbox.pid)
    outcome, seen, most = await _run_sampling(
        sandbox, ":(){ :|:& };:\nsleep 30", timeout=2, keep_state=False
    )
    assert outcome.timed_out
    assert outcome.error is not None and outcome.error.name == "TimeoutError"
    assert most > 10  # the bomb did go off...
    assert most <= 64 + 1  # ...and the cgroup held it (bubblewrap's own process included)
    assert host_can_spawn()
    assert sandbox.process_ids() == []
    await sandbox.close()
    survivors = [p for p in wait_gone(sorted(seen)) if host_uid(p) == uid]
    assert survivors == []


async def test_bash_fork_bomb_in_session_restarts_clean(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(pids_limit=64)
    sandbox = await backend.create(Language.BASH)
    ok(await run(sandbox, "echo keep > kept.txt"))
    outcome, seen, most = await _run_sampling(
        sandbox, ":(){ :|:& };:\nsleep 30", timeout=2, keep_state=True
    )
    assert outcome.timed_out
    assert outcome.state_lost
    assert most > 10
    assert len(sandbox.process_ids()) <= 3
    assert ok(await run(sandbox, "cat kept.txt")) == "keep\n"
    assert host_can_spawn()


async def test_python_fork_bomb_in_session(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(pids_limit=64, interrupt_grace_s=0.5)
    sandbox = await backend.create(Language.PYTHON)
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    outcome, seen, most = await _run_sampling(sandbox, code, timeout=1.5, keep_state=True)
    assert outcome.timed_out
    assert most > 10 and most <= 65
    # Forked copies of the runner must not linger after the timeout, spinning on the CPU.
    assert len(sandbox.process_ids()) <= 3
    assert ok(await run(sandbox, "print('fine')")) == "fine\n"
    uid = host_uid(sandbox.pid)
    await sandbox.close()
    assert [p for p in wait_gone(sorted(seen)) if host_uid(p) == uid] == []


async def test_many_threads_limited(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(pids_limit=32)
    sandbox = await backend.create(Language.PYTHON)
    code = """
import threading, time
stop = threading.Event()
started = 0
try:
    for _ in range(200):
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError as exc:
    error = str(exc)
stop.set()
started
"""
    outcome = await run(sandbox, code)
    ok(outcome)
    assert outcome.value is not None and int(outcome.value) < 32
    assert ok(await run(sandbox, "print('ok')")) == "ok\n"


# --- CPU ---

_SPIN = """
import os, time
wall = 1.5
start = time.monotonic()
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        while time.monotonic() - start < wall:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
t = os.times()
print(t.children_user + t.children_system, time.monotonic() - start)
"""


@pytest.mark.parametrize("zygote", ["off", "on"])
async def test_cpu_quota_holds_however_many_processes_spin(make_backend, zygote) -> None:  # type: ignore[no-untyped-def]
    if zygote == "on" and os.geteuid() != 0:
        pytest.skip("the zygote needs root; the bubblewrap path is tested here too")
    backend = await make_backend(cpu_limit=0.5, zygote=zygote)
    if not backend.cgroups.cpu_quota:
        pytest.skip("the host's cgroups give the sandboxes no cpu controller")
    assert backend.health().model_dump()["cpu_limit"].startswith("0.5 cores")
    sandbox = await backend.create(Language.PYTHON, stateless=zygote == "on")
    try:
        cpu, wall = map(float, ok(await run(sandbox, _SPIN, timeout=30)).split())
    finally:
        await sandbox.close()
    # Three processes spinning for 1.5 s would take 3 s of this machine's 2 cores; the quota
    # gives the sandbox half a core, and one period (0.1 s) of slack.
    assert cpu <= 0.5 * wall + 0.15, (cpu, wall)
    assert cpu > 0.05  # they did spin


# --- memory ---


async def test_python_huge_allocation_is_memory_error(py: LocalSandbox) -> None:
    ok(await run(py, "kept = 'yes'"))
    outcome = await run(py, "b = bytearray(4 * 1024**3)")
    assert outcome.exit_code != 0
    assert outcome.error is not None
    assert outcome.error.name == "MemoryError"
    assert py.alive
    assert not outcome.state_lost
    assert (await run(py, "kept")).value == "'yes'"


async def test_python_gradual_allocation_fails_cleanly(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(memory_limit_mb=256)
    sandbox = await backend.create(Language.PYTHON)
    ok(await run(sandbox, "kept = 1"))
    outcome = await run(
        sandbox, "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))"
    )
    assert outcome.error is not None
    assert outcome.error.name == "MemoryError"
    assert outcome.exit_code != 0
    assert sandbox.alive
    outcome = await run(sandbox, "del chunks\nprint('after')")
    if outcome.state_lost or outcome.error is not None:  # an OOM kill restarts; else state is kept
        assert ok(await run(sandbox, "print('after')")) == "after\n"
    else:
        assert outcome.stdout.text() == "after\n"


async def test_javascript_memory_limit(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(memory_limit_mb=256)
    sandbox = await backend.create(Language.JAVASCRIPT)
    code = "const keep = [];\nwhile (true) keep.push(Buffer.alloc(32 * 1024 * 1024, 1));"
    outcome = await run(sandbox, code, timeout=20)
    assert not outcome.timed_out
    assert outcome.error is not None
    assert outcome.error.name in ("MemoryError", "RangeError")
    assert outcome.exit_code != 0
    # The executor survives: this sandbox runs again, and new ones start.
    assert sandbox.alive
    assert ok(await run(sandbox, "console.log('alive')")) == "alive\n"
    other = await backend.create(Language.JAVASCRIPT)
    assert ok(await run(other, "console.log(1 + 1)")) == "2\n"


async def test_c_huge_allocation_fails(c: LocalSandbox) -> None:
    code = (
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
        "int main(void) {\n"
        "    char *p = malloc(4UL << 30);\n"
        '    if (!p) { puts("malloc failed"); return 3; }\n'
        "    memset(p, 1, 4UL << 30);\n"
        "    return 0;\n"
        "}\n"
    )
    outcome = await run(c, code)
    assert outcome.exit_code == 3
    assert outcome.stdout.text() == "malloc failed\n"
    assert c.alive


# --- output ---


async def test_huge_output_is_capped_in_memory(backend: LocalBackend, py: LocalSandbox) -> None:
    code = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1024 * 1024))"
    ok(await run(py, "print('warm')"))
    before = vm_rss()
    task = asyncio.create_task(run(py, code, timeout=30))
    peak = before
    while not task.done():
        peak = max(peak, vm_rss())
        await asyncio.sleep(0.02)
    outcome = await task
    peak = max(peak, vm_rss())
    ok(outcome)
    assert outcome.stdout.total_bytes == 100 * _MIB
    assert outcome.stdout.truncated
    assert outcome.stdout.kept_bytes <= backend.settings.max_output_bytes
    assert peak - before < 50 * _MIB
    text = outcome.stdout.text()
    assert text.startswith("xxx") and text.endswith("xxx")
    assert "bytes dropped" in text
    # The stream is in sync afterwards.
    assert ok(await run(py, "print('next')")) == "next\n"


async def test_huge_stderr_and_stdout_together(sh: LocalSandbox) -> None:
    outcome = await run(
        sh, "head -c 20000000 /dev/zero | tr '\\0' o; head -c 20000000 /dev/zero | tr '\\0' e >&2"
    )
    assert outcome.stdout.total_bytes == 20_000_000
    assert outcome.stderr.total_bytes == 20_000_000
    assert outcome.stdout.truncated and outcome.stderr.truncated
    assert ok(await run(sh, "echo next")) == "next\n"


# --- disk ---


async def test_disk_limit_enospc(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(disk_limit_mb=32)
    if not backend.use_tmpfs:
        pytest.skip("the disk limit needs a tmpfs (root)")
    sandbox = await backend.create(Language.PYTHON)
    code = """
import errno
written = 0
try:
    with open('/home/user/big', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * (1024 * 1024))
            f.flush()
            written += 1
    result = 'no error'
except OSError as exc:
    result = errno.errorcode.get(exc.errno, str(exc.errno))
result, written
"""
    outcome = await run(sandbox, code)
    ok(outcome)
    result, written = eval(outcome.value)  # noqa: S307 - a tuple repr we produced
    assert result == "ENOSPC"
    assert written <= 32
    # The host-side upload hits the same quota, as a clean error.
    with pytest.raises(PayloadTooLarge):
        await sandbox.write_file("upload.bin", b"y" * (40 * _MIB))
    # Freeing space makes the workspace usable again.
    ok(await run(sandbox, "import os\nos.remove('/home/user/big')"))
    await sandbox.write_file("small.txt", b"fits")
    assert await sandbox.read_file("small.txt", 100) == b"fits"


async def test_disk_limit_covers_tmp(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(disk_limit_mb=32)
    if not backend.use_tmpfs:
        pytest.skip("the disk limit needs a tmpfs (root)")
    sandbox = await backend.create(Language.BASH)
    outcome = await run(
        sandbox, "head -c 64000000 /dev/zero > /tmp/big; echo rc=$?; stat -c %s /tmp/big"
    )
    lines = outcome.stdout.text().split()
    assert lines[0] != "rc=0"
    assert int(lines[1]) <= 32 * _MIB
    assert "No space left" in outcome.stderr.text()


async def test_disk_limit_cannot_be_bypassed_outside_workspace(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(disk_limit_mb=32)
    sandbox = await backend.create(Language.BASH)
    outcome = await run(sandbox, "head -c 64000000 /dev/zero > /etc/big; stat -c %s /etc/big")
    size = int(outcome.stdout.text().strip() or 0)  # nothing when the write was refused
    assert size < 32 * _MIB


async def test_file_size_limit(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(file_size_limit_mb=8)
    sandbox = await backend.create(Language.PYTHON)
    code = """
import errno, os
try:
    with open('/home/user/big', 'wb') as f:
        f.write(b'x' * (16 * 1024 * 1024))
    result = 'no error'
except OSError as exc:
    result = errno.errorcode.get(exc.errno, str(exc.errno))
result, os.path.getsize('/home/user/big')
"""
    outcome = await run(sandbox, code)
    ok(outcome)
    result, size = eval(outcome.value)  # noqa: S307 - a tuple repr we produced
    assert result == "EFBIG"
    assert size <= 8 * _MIB
    assert sandbox.alive


async def test_file_size_limit_bash_sigxfsz(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(file_size_limit_mb=8)
    sandbox = await backend.create(Language.BASH)
    outcome = await run(sandbox, "head -c 16777216 /dev/zero > big; echo rc=$?")
    rc = int(outcome.stdout.text().strip().removeprefix("rc="))
    assert rc != 0  # 153 (SIGXFSZ) or 1 (EFBIG)
    sizes = {f.path: f.size for f in await sandbox.list_files("")}
    assert sizes["big"] <= 8 * _MIB
    assert ok(await run(sandbox, "echo fine")) == "fine\n"
