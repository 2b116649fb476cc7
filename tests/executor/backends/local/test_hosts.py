"""What each kind of host gives the sandboxes: cgroup v2 groups (at the root of the hierarchy
as root, in a delegated group otherwise), and a refusal to start where nothing can limit them.

The cgroup v2 tests run where the host is cgroup v2: in the test VM (`make test-vm`, as root and
as an ordinary user with a delegated group); this project's own machine is cgroup v1.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.limits import EXECUTOR_LEAF, ZYGOTE_LEAF, own_cgroup_v2
from executor.backends.local.policy import HostFacts, SandboxPolicy
from executor.backends.local.workspace import on_tmpfs
from executor.config import ExecutorSettings
from schemas.languages import Language
from tests.processes import free_port, new_state_dir

from ._helpers import ok, run

pytestmark = pytest.mark.anyio

V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
NOBODY = 65534
needs_v2 = pytest.mark.skipif(not V2, reason="the host's cgroups are v1 (make test-vm: v2)")


def _executor_as_nobody(**settings: str) -> subprocess.Popen[str]:
    """`code-exec executor` as uid 65534, in a cgroup that is not its own to manage."""
    state = new_state_dir()
    os.chmod(state, 0o777)
    env = {
        **os.environ,
        "CODE_EXEC_STATE_DIR": str(state),
        "CODE_EXEC_INTERNAL_TOKEN": "t" * 32,
        "CODE_EXEC_POOL_SIZES": '{"python": 0, "javascript": 0, "bash": 0, "c": 0}',
        **{f"CODE_EXEC_{k.upper()}": v for k, v in settings.items()},
    }
    command = [sys.executable, "-m", "code_exec.cli", "executor", "--port", str(free_port())]
    return subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to start an executor as uid 65534")
def test_an_executor_that_no_limit_can_hold_refuses_to_start_and_says_how() -> None:
    process = _executor_as_nobody()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "no sandbox could get a process or memory limit here" in stderr, stderr
    assert "Delegate=yes" in stderr and "CODE_EXEC_ALLOW_UNLIMITED_PROCESSES=true" in stderr


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to start an executor as uid 65534")
def test_the_operator_can_run_without_limits_and_health_says_so() -> None:
    import httpx

    process = _executor_as_nobody(allow_unlimited_processes="true")
    try:
        port = process.args[-1]
        health = None
        for _ in range(200):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                subprocess.run(["sleep", "0.1"], check=True)
        assert health is not None
        assert health["backend"]["process_limit"].startswith("none"), health["backend"]
        assert "CODE_EXEC_ALLOW_UNLIMITED_PROCESSES" in health["backend"]["process_limit"]
    finally:
        process.terminate()
        process.wait(20)


@needs_v2
async def test_each_sandbox_gets_a_v2_group_with_its_limits(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(memory_limit_mb=256, pids_limit=32, cpu_limit=1.5)
    assert backend.cgroups.mode == "cgroup v2"
    sandbox = await backend.create(Language.BASH)
    try:
        procs = Path(f"/proc/{sandbox.pid}/cgroup").read_text().strip()
        group = Path("/sys/fs/cgroup") / procs.split("::", 1)[1].lstrip("/")
        assert (group / "memory.max").read_text().strip() == str(256 * 1024 * 1024)
        assert (group / "pids.max").read_text().strip() == "32"
        swap = group / "memory.swap.max"
        assert not swap.exists() or swap.read_text().strip() == "0"
        # The CPU quota, wherever the group above could hand out the cpu controller.
        if "cpu" in (group.parent / "cgroup.controllers").read_text().split():
            assert (group / "cpu.max").read_text().strip() == "150000 100000"
            assert (group / "cpu.weight").read_text().strip() == "100"
        else:
            assert not backend.cgroups.cpu_quota
        # The group is this executor's: under its instance's group, under the top it chose.
        assert group.parent.name == backend.instance
        assert ok(await run(sandbox, "echo hi")).strip() == "hi"
    finally:
        await sandbox.close()


@needs_v2
@pytest.mark.skipif(os.geteuid() == 0, reason="as root the groups go at the hierarchy's root")
async def test_without_root_the_groups_go_in_the_delegated_group(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend()
    assert backend.cgroups.mode == "cgroup v2" and backend.cgroups.delegated
    own = own_cgroup_v2()
    # This process moved to a leaf, so that its group could give controllers to children.
    assert own.name == EXECUTOR_LEAF
    assert (own.parent / backend.instance).is_dir()
    assert "memory" in (own.parent / "cgroup.subtree_control").read_text().split()
    health = backend.health()
    assert "cgroup v2" in health.process_limit and "cgroup v2" in health.memory_limit


@pytest.mark.slow
@needs_v2
@pytest.mark.skipif(os.geteuid() == 0, reason="as root each sandbox gets a tmpfs of its own size")
async def test_without_root_files_on_a_tmpfs_count_against_the_memory_limit() -> None:
    """No tmpfs per sandbox without root; a state dir on a shared tmpfs still bounds a
    sandbox's files: their pages are charged to its cgroup, under its memory limit."""
    state = Path(tempfile.mkdtemp(prefix="code-exec-test-", dir="/dev/shm"))
    backend = LocalBackend(
        ExecutorSettings(state_dir=state, memory_limit_mb=128, file_size_limit_mb=1024)
    )
    await backend.start()
    try:
        assert backend.health().disk_limit.startswith("counted in the memory limit, 128 MiB")
        sandbox = await backend.create(Language.BASH)
        try:
            outcome = await run(
                sandbox, "dd if=/dev/zero of=big bs=1M count=400 status=none; echo rc=$?"
            )
            # dd fails or is killed; either way the file holds no more than the limit.
            assert "rc=0" not in outcome.stdout.text(), outcome
            held = sum(p.stat().st_blocks * 512 for p in state.rglob("*") if p.is_file())
            assert held <= 128 * 1024 * 1024, held
            ok(await run(sandbox, "rm -f big; echo ok > small"))
        finally:
            await sandbox.close()
    finally:
        await backend.close()
        shutil.rmtree(state, ignore_errors=True)


def test_a_tmpfs_state_dir_is_told_apart_from_a_disk() -> None:
    assert on_tmpfs(Path("/dev/shm/code-exec/state"))
    assert not on_tmpfs(Path(__file__))
    settings = ExecutorSettings()
    for cgroup, shared_tmpfs, by in (
        ("cgroup v2", True, "memory limit"),
        ("cgroup v2", False, None),
        ("none", True, None),  # no cgroup to charge the pages to
    ):
        host = HostFacts(
            is_root=False, cgroup_mode=cgroup, tmpfs_quota=False, state_on_tmpfs=shared_tmpfs
        )
        assert SandboxPolicy.build(settings, host).limits.report()["disk_by"] == by


@needs_v2
@pytest.mark.skipif(os.geteuid() != 0, reason="the zygote needs root")
async def test_on_v2_a_zygote_child_is_born_in_its_own_group(make_backend) -> None:  # type: ignore[no-untyped-def]
    backend = await make_backend(zygote="on", memory_limit_mb=256)
    sandbox = await backend.create(Language.PYTHON, stateless=True)
    try:
        assert "CLONE_INTO_CGROUP" in backend.health().model_dump()["stateless_python"]
        zygote_pid = int(backend.health().model_dump()["stateless_python"].split()[2][:-2])
        zygote_group = Path(f"/proc/{zygote_pid}/cgroup").read_text().strip()
        assert zygote_group.endswith(f"/{backend.instance}/{ZYGOTE_LEAF}"), zygote_group
        child = sandbox.runner_pid()
        assert child is not None
        procs = Path(f"/proc/{child}/cgroup").read_text().strip()
        group = Path("/sys/fs/cgroup") / procs.split("::", 1)[1].lstrip("/")
        assert group.parent.name == backend.instance and group.name != ZYGOTE_LEAF
        # The zygote's uid may spawn into the group; its limits stay root's.
        zygote_uid = backend.settings.sandbox_uid_base - 1
        assert (group / "cgroup.procs").stat().st_uid == zygote_uid
        for limit in ("memory.max", "pids.max", "cgroup.subtree_control"):
            assert (group / limit).stat().st_uid == 0
        assert (group / "memory.max").read_text().strip() == str(256 * 1024 * 1024)
        assert ok(await run(sandbox, "print(open('/proc/self/cgroup').read())")) == "0::/\n\n"
    finally:
        await sandbox.close()
