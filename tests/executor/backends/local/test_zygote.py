"""The zygote's own promises (the isolation, escape and sandbox tests run on it too, through the
backend fixture's "zygote" case): limits hold, nothing of the zygote reaches a run, each run is
reseeded, the zygote holds no host privilege, and its death loses no answer."""

import asyncio
import os
import signal
from pathlib import Path

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.limits import ZYGOTE_LEAF
from executor.backends.local.sandbox import LocalSandbox
from executor.backends.local.zygote import ZygoteSandbox
from executor.config import ExecutorSettings
from executor.core.service import Executor
from schemas.execution import ExecuteRequest
from schemas.languages import Language

from ._helpers import host_can_spawn, host_uid, ok, run, wait_gone
from .conftest import MakeBackend

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "the zygote needs root (to map its user namespace and give each sandbox a uid); "
            "without it, stateless Python runs use bubblewrap (tested as such)"
        )


async def _zygote_backend(make_backend: MakeBackend, **overrides: object) -> LocalBackend:
    _needs_root()
    backend = await make_backend(zygote="on", **overrides)
    assert backend.health().model_dump()["stateless_python"].startswith("zygote")
    return backend


async def _child(backend: LocalBackend) -> ZygoteSandbox:
    sandbox = await backend.create(Language.PYTHON, stateless=True)
    assert isinstance(sandbox, ZygoteSandbox)
    return sandbox


async def test_a_fork_bomb_is_held_by_the_cgroup_and_leaves_nothing(
    make_backend: MakeBackend,
) -> None:
    backend = await _zygote_backend(make_backend, pids_limit=64)
    sandbox = await _child(backend)
    uid = host_uid(sandbox.pid)
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    task = asyncio.create_task(sandbox.run(code, env={}, timeout=2, keep_state=False))
    most, seen = 0, set()
    while not task.done():
        pids = sandbox.process_ids()
        seen.update(pids)
        most = max(most, len(pids))
        await asyncio.sleep(0.05)
    outcome = await task
    assert outcome.timed_out
    assert 10 < most <= 64
    assert host_can_spawn()
    await sandbox.close()
    assert [p for p in wait_gone(sorted(seen)) if host_uid(p) == uid] == []


async def test_disk_limit_covers_home_and_tmp_together(make_backend: MakeBackend) -> None:
    backend = await _zygote_backend(make_backend, disk_limit_mb=16)
    sandbox = await _child(backend)
    code = (
        "import errno\n"
        "def fill(path):\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            for _ in range(64):\n"
        "                f.write(b'x' * 1024 * 1024)\n"
        "    except OSError as exc:\n"
        "        return exc.errno == errno.ENOSPC\n"
        "    return False\n"
        "print(fill('/home/user/a'), fill('/tmp/b'))\n"
    )
    assert ok(await run(sandbox, code, keep_state=False)) == "True True\n"
    await sandbox.close()


async def test_memory_is_limited(make_backend: MakeBackend) -> None:
    backend = await _zygote_backend(make_backend, memory_limit_mb=256)
    sandbox = await _child(backend)
    outcome = await run(
        sandbox,
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024 * 1024))",
        keep_state=False,
    )
    assert outcome.error is not None and outcome.error.name == "MemoryError"
    await sandbox.close()


async def test_an_emptied_cgroup_holds_the_next_sandbox_but_not_one_that_hit_its_limit(
    make_backend: MakeBackend,
) -> None:
    backend = await _zygote_backend(make_backend, memory_limit_mb=64, disk_limit_mb=256)
    first = await _child(backend)
    cgroup = first._cgroup
    assert cgroup is not None
    assert ok(await run(first, "print(1)", keep_state=False)) == "1\n"
    await first.close()
    assert backend.spare_cgroups.kept == (cgroup,)
    # The next sandbox is held by it, to the same limits: tmpfs pages are charged to it too.
    second = await _child(backend)
    assert second._cgroup is cgroup and backend.spare_cgroups.kept == ()
    fill = (
        "with open('/home/user/big', 'wb') as f:\n"
        "    for _ in range(128):\n"
        "        f.write(b'x' * 1024 * 1024)\n"
    )
    outcome = await run(second, fill, keep_state=False)
    assert outcome.error is not None or outcome.exit_code != 0, outcome
    assert all(d.exists() for d in cgroup.dirs)  # in use
    await second.close()
    # A limit was hit in it: the next sandbox must not be blamed for it, so it is removed.
    assert backend.spare_cgroups.kept == ()
    assert not any(d.exists() for d in cgroup.dirs)
    third = await _child(backend)
    assert third._cgroup is not cgroup and not third.oom_killed()
    assert ok(await run(third, "print(2)", keep_state=False)) == "2\n"
    await third.close()


async def test_a_run_holds_no_descriptor_of_the_zygote_and_no_capability(
    make_backend: MakeBackend,
) -> None:
    backend = await _zygote_backend(make_backend)
    sandbox = await _child(backend)
    code = (
        "import os\n"
        "links = []\n"
        "for f in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        "        links.append(os.readlink(f'/proc/self/fd/{f}').split(':')[0])\n"
        "    except OSError:\n"
        "        pass  # the listing's own\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines()"
        " if l.startswith(('Cap', 'NoNewPrivs', 'Seccomp:', 'Uid', 'Gid', 'Groups')))\n"
        "print(links)\n"
        "print(sorted(status.items()))\n"
    )
    out = ok(await run(sandbox, code, keep_state=False)).splitlines()
    # /dev/null, the output and control pipes, the runner's copies of stdout and stderr: no
    # socket (the zygote's control socket), no pidfd, no file of the zygote's.
    assert eval(out[0]) == ["/dev/null", *["pipe"] * 6], out[0]  # noqa: S307
    status = dict(eval(out[1]))  # noqa: S307 - our own print of a list of str pairs
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[field] == "0000000000000000", (field, status)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert status["Uid"].split() == ["1000"] * 4 and status["Gid"].split() == ["1000"] * 4
    assert status["Groups"].strip() == ""
    await sandbox.close()


async def test_each_run_is_reseeded(make_backend: MakeBackend) -> None:
    backend = await _zygote_backend(make_backend)
    code = "import random, os, uuid\nprint(random.random(), os.urandom(8).hex(), uuid.uuid4())"
    seen = set()
    for _ in range(3):
        sandbox = await _child(backend)
        seen.add(ok(await run(sandbox, code, keep_state=False)))
        await sandbox.close()
    assert len(seen) == 3


async def test_the_zygote_holds_no_host_privilege(make_backend: MakeBackend) -> None:
    backend = await _zygote_backend(make_backend)
    zygote = backend._zygote.ready if backend._zygote else None
    assert zygote is not None and zygote.pid is not None
    status = _proc(zygote.pid, "status").decode()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(backend.settings.sandbox_uid_base - 1)] * 4  # never host root
    uid_map = [line.split() for line in _proc(zygote.pid, "uid_map").decode().splitlines()]
    assert uid_map[0] == ["0", str(backend.settings.sandbox_uid_base - 1), "1"]
    assert all(outside != "0" for _, outside, _ in uid_map)  # host root is mapped nowhere
    # Its own user namespace: the host's is another.
    assert os.readlink(f"/proc/{zygote.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    # It started with the sandbox environment: nothing of the executor's.
    environ = _proc(zygote.pid, "environ").split(b"\0")
    assert not any(e.startswith((b"CODE_EXEC_INTERNAL", b"OPENAI", b"E2B")) for e in environ)


async def test_when_the_zygote_dies_runs_are_answered_and_it_comes_back(
    make_backend: MakeBackend,
) -> None:
    backend = await _zygote_backend(make_backend)
    keeper = backend._zygote
    assert keeper is not None and keeper.ready is not None
    first_pid = keeper.ready.pid
    assert first_pid is not None
    sandbox = await _child(backend)
    spare = await _child(backend)
    task = asyncio.create_task(
        run(sandbox, "import time\nprint('started', flush=True)\ntime.sleep(60)", keep_state=False)
    )
    await asyncio.sleep(0.5)
    pids = sandbox.process_ids()
    os.kill(first_pid, signal.SIGKILL)
    outcome = await asyncio.wait_for(task, 10)  # an answer, not a hang or an exception
    assert outcome.exit_code != 0 and outcome.error is not None
    assert wait_gone(pids) == []
    assert not spare.alive
    # Meanwhile stateless Python sandboxes come from bubblewrap; then from a new zygote.
    during = await backend.create(Language.PYTHON, stateless=True)
    assert ok(await run(during, "print(1)", keep_state=False)) == "1\n"
    await during.close()
    for _ in range(300):
        if keeper.ready is not None:
            break
        await asyncio.sleep(0.1)
    assert keeper.ready is not None and keeper.ready.pid != first_pid and keeper.restarts == 1
    after = await _child(backend)
    assert ok(await run(after, "print(2)", keep_state=False)) == "2\n"
    for each in (sandbox, spare, after):
        await each.close()


async def test_stateless_runs_use_the_zygote_and_sessions_bubblewrap(
    executor_state_dir: Path,
) -> None:
    _needs_root()
    settings = ExecutorSettings(
        state_dir=executor_state_dir,
        pool_sizes={"python": 1, "javascript": 0, "bash": 0, "c": 0},
        zygote="on",
    )
    executor = Executor(settings)
    await executor.start()
    try:
        backend = executor.backend
        assert isinstance(backend, LocalBackend)
        result = await executor.execute(
            ExecuteRequest(code="open('in.txt').read()", files={"in.txt": "given"}), "alice"
        )
        assert result.value == "'given'" and result.exit_code == 0
        info = await executor.open_session(Language.PYTHON, "alice")
        session = executor.sessions.get(info.session_id, "alice")
        assert isinstance(session.sandbox, LocalSandbox)
        health = (await executor.health()).model_dump()
        assert "python-sessions" in health["pools"]
        assert health["backend"]["stateless_python"].startswith("zygote")
        kinds = {type(s).__name__ for s in backend._live.values()}
        assert kinds == {"ZygoteSandbox", "LocalSandbox"}
    finally:
        await executor.aclose()


async def test_many_runs_leak_no_descriptor_cgroup_or_process(make_backend: MakeBackend) -> None:
    backend = await _zygote_backend(make_backend)
    warm = await _child(backend)  # the first sandbox's one-time costs (threads, caches)
    await warm.close()
    fds_before = len(os.listdir("/proc/self/fd"))
    parents = [Path(p) for p in backend.cgroups._parents.values()]
    zygote = backend._zygote.ready if backend._zygote else None
    assert zygote is not None and zygote.pid is not None
    for i in range(30):
        sandbox = await _child(backend)
        code = "import subprocess\nsubprocess.Popen(['sleep', '60'])\nprint('x')"
        if i % 3 == 0:  # some end by their timeout, with a child process still running
            code += "\nimport time\ntime.sleep(60)"
        await sandbox.run(code, env={}, timeout=0.5 if i % 3 == 0 else 10, keep_state=False)
        await sandbox.close()
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2  # the loop's own, at most
    # What is left of the sandboxes' cgroups is kept for the next ones, empty.
    kept = backend.spare_cgroups.kept
    # (On cgroup v2 the zygote's own group is there too, for as long as it runs.)
    left = {
        d for parent in parents for d in parent.iterdir() if d.is_dir() and d.name != ZYGOTE_LEAF
    }
    assert left == {d for handle in kept for d in handle.dirs}
    assert all(backend.cgroups.pids_of(handle) == [] for handle in kept)
    assert _proc(zygote.pid, f"task/{zygote.pid}/children").split() == []
    await backend.close()
    assert [parent for parent in parents if parent.exists()] == []


async def test_the_zygote_is_named_on_the_host_and_a_run_sees_a_runner(
    make_backend: MakeBackend,
) -> None:
    backend = await _zygote_backend(make_backend)
    zygote = backend._zygote.ready if backend._zygote else None
    assert zygote is not None and zygote.pid is not None
    assert _proc(zygote.pid, "cmdline").split(b"\0")[0] == b"code-exec-zygote"
    sandbox = await _child(backend)
    seen = ok(
        await run(
            sandbox, "print(open('/proc/1/cmdline').read().split('\\0')[:4])", keep_state=False
        )
    )
    assert seen.strip() == str(
        [
            "/opt/code-exec/runtime/python/bin/python",
            "-I",
            "/opt/code-exec/runners/python_runner.py",
            "python",
        ]
    )
    await sandbox.close()
