"""The isolation contract, read from the policy and its renderings; no sandbox is started.

Each test builds the policy as the backend would and checks what bubblewrap would be given
(bwrap.py), what the launcher does before bubblewrap (launcher.py, run for real in front of a
plain command), and that /health reports the same.
"""

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.bwrap import bwrap_command
from executor.backends.local.launcher import launch_prefix
from executor.backends.local.policy import (
    RUNNERS_DIR,
    HostFacts,
    MountKind,
    SandboxPaths,
    SandboxPolicy,
    Slot,
)
from executor.backends.local.protocol import CONTROL_IN_FD, CONTROL_OUT_FD
from executor.config import ExecutorSettings
from schemas.languages import Language

HOSTS = {
    "root, cgroups, tmpfs quota": HostFacts(
        is_root=True, cgroup_mode="cgroup v2", tmpfs_quota=True
    ),
    "root, no cgroups": HostFacts(is_root=True, cgroup_mode="none", tmpfs_quota=False),
    "unprivileged": HostFacts(is_root=False, cgroup_mode="none", tmpfs_quota=False),
}
SETTINGS = ExecutorSettings(
    memory_limit_mb=300, pids_limit=40, disk_limit_mb=70, file_size_limit_mb=9, open_files_limit=77
)


@pytest.fixture(params=list(HOSTS), ids=list(HOSTS))
def host(request: pytest.FixtureRequest) -> HostFacts:
    return HOSTS[request.param]


@pytest.fixture
def policy(host: HostFacts) -> SandboxPolicy:
    return SandboxPolicy.build(SETTINGS, host)


@pytest.fixture
def paths(tmp_path: Path) -> SandboxPaths:
    return SandboxPaths(
        home=tmp_path / "ws" / "home",
        tmp=tmp_path / "ws" / "tmp",
        runtime=tmp_path / "runtime",
        etc=tmp_path / "etc",
    )


def options(argv: list[str]) -> list[str]:
    """bubblewrap's options: argv without "bwrap" and the runner after "--"."""
    return argv[1 : argv.index("--")]


def setenv_pairs(argv: list[str]) -> dict[str, str]:
    opts = options(argv)
    return {opts[i + 1]: opts[i + 2] for i, arg in enumerate(opts) if arg == "--setenv"}


def host_path(source: str, paths: SandboxPaths) -> str:
    """A reported mount source as bubblewrap is given it (<slot>/below filled in)."""
    if not source.startswith("<"):
        return source
    slot, _, below = source[1:].partition(">")
    base = paths.of(Slot(slot))
    return str(base / below.lstrip("/")) if below else str(base)


def mount_args(entry: dict[str, Any], paths: SandboxPaths) -> list[str]:
    """The bubblewrap options a reported mount entry stands for (written apart from bwrap.py)."""
    kind = entry["kind"]
    if kind == "bind":
        flag = "--bind" if entry["mode"] == "rw" else "--ro-bind"
        flag += "-try" if entry.get("optional") else ""
        return [flag, host_path(entry["source"], paths), entry["target"]]
    if kind == "symlink":
        return ["--symlink", entry["source"], entry["target"]]
    return [f"--{kind}", entry["target"]]


# --- namespaces, privileges, identity ---


def test_every_namespace_is_new_and_none_can_be_made_inside(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    assert set(policy.namespaces) == {"user", "pid", "net", "ipc", "uts", "mount", "cgroup"}
    assert policy.nested_user_namespaces is False
    for language in Language:
        opts = options(bwrap_command(policy, language, paths))
        for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"):
            assert flag in opts
        assert "--unshare-uts" in opts
        assert "--unshare-cgroup-try" in opts
        assert "--disable-userns" in opts
        assert not {"--share-net", "--userns", "--pidns", "--netns"} & set(opts)


def test_every_capability_dropped_and_unprivileged_inside(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    opts = options(bwrap_command(policy, Language.PYTHON, paths))
    assert policy.capabilities == ()
    assert opts[opts.index("--cap-drop") + 1] == "ALL"
    assert "--cap-add" not in opts
    assert (policy.uid, policy.gid) == (1000, 1000)
    assert opts[opts.index("--uid") + 1] == "1000"
    assert opts[opts.index("--gid") + 1] == "1000"
    assert opts[opts.index("--hostname") + 1] == policy.hostname == "sandbox"
    assert "--die-with-parent" in opts
    assert "--new-session" in opts
    assert "user:x:1000:1000:user:/home/user:/bin/bash" in policy.etc_files()["passwd"]


def test_no_network_but_a_private_loopback(policy: SandboxPolicy) -> None:
    assert policy.network == "none"
    assert "net" in policy.namespaces


# --- files ---


def test_only_the_workspace_is_writable_host_storage(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    binds = [m for m in policy.mounts if m.kind is MountKind.BIND]
    assert {m.target for m in binds if m.mode == "rw"} == {"/home/user", "/tmp"}
    opts = options(bwrap_command(policy, Language.PYTHON, paths))
    writable = [
        opts[i + 1 : i + 3] for i, arg in enumerate(opts) if arg in ("--bind", "--bind-try")
    ]
    assert writable == [[str(paths.home), "/home/user"], [str(paths.tmp), "/tmp"]]
    # Every other host path is bound read-only.
    read_only = {opts[i + 2] for i, arg in enumerate(opts) if arg.startswith("--ro-bind")}
    assert {"/usr", "/opt/code-exec/runtime", "/opt/code-exec/runners", "/etc/passwd"} <= read_only
    # What else can be written is in memory and empty at start, not the host's: bubblewrap's
    # /dev and /proc, and the tmpfs that hides /usr/local (remount-ro of / does not recurse).
    others = {m.target for m in policy.mounts if m.kind is not MountKind.BIND and m.mode == "rw"}
    assert others == {"/usr/local", "/proc", "/dev"}


def test_root_is_remounted_read_only_last(policy: SandboxPolicy, paths: SandboxPaths) -> None:
    assert policy.mounts[-1].kind is MountKind.REMOUNT_RO
    assert policy.mounts[-1].target == "/"
    opts = options(bwrap_command(policy, Language.PYTHON, paths))
    flags = (
        "--bind",
        "--ro-bind",
        "--ro-bind-try",
        "--symlink",
        "--dir",
        "--tmpfs",
        "--proc",
        "--dev",
    )
    remount = opts.index("--remount-ro")
    assert opts[remount + 1] == "/"
    assert remount > max(i for i, arg in enumerate(opts) if arg in flags)


def test_usr_local_hidden_and_host_etc_limited(policy: SandboxPolicy, paths: SandboxPaths) -> None:
    opts = options(bwrap_command(policy, Language.PYTHON, paths))
    usr_local = opts.index("/usr/local")
    assert opts[usr_local - 1] == "--tmpfs"
    assert opts.index("/usr") < usr_local  # over the read-only /usr, so it hides its /usr/local
    etc = {
        opts[i + 2]: opts[i + 1]
        for i, arg in enumerate(opts)
        if arg.startswith("--ro-bind") and opts[i + 2].startswith("/etc/")
    }
    # Of the host's /etc, only what the runtimes read; the rest is the executor's own files.
    from_host = {target for target, source in etc.items() if source == target}
    assert from_host == {
        "/etc/alternatives",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/localtime",
        "/etc/mime.types",
    }
    own = {Path(source).name for target, source in etc.items() if target not in from_host}
    assert own == set(policy.etc_files())
    assert all(Path(etc[f"/etc/{name}"]).parent == paths.etc for name in own)


# --- environment ---


def test_environment_is_the_policys_only(
    policy: SandboxPolicy, paths: SandboxPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODE_EXEC_SECRET_PROBE", "s3cr3t")
    argv = bwrap_command(policy, Language.BASH, paths)
    opts = options(argv)
    first_setenv = opts.index("--setenv")
    assert "--clearenv" in opts[:first_setenv]
    assert setenv_pairs(argv) == dict(policy.environment)
    assert not any("s3cr3t" in arg or "CODE_EXEC" in arg for arg in argv)
    assert policy.environment["HOME"] == "/home/user"
    assert not [name for name in policy.environment if name.startswith("CODE_EXEC")]


# --- limits ---


def test_address_space_limit_for_python_and_c_only(policy: SandboxPolicy) -> None:
    for language in Language:
        prefix = launch_prefix(policy, language, uid=0, gid=0, control_out=9, cgroup_procs=[])
        address_space = prefix[prefix.index("code-exec-launch") + 5]
        if language in (Language.PYTHON, Language.C):
            assert address_space == str(SETTINGS.memory_limit_mb * 1024)
        else:
            assert address_space == ""


def test_limits_follow_the_host(host: HostFacts, policy: SandboxPolicy) -> None:
    limits = policy.limits
    assert limits.memory_mib == 300 and limits.file_size_mib == 9 and limits.open_files == 77
    assert limits.core_mib == 0
    assert limits.cgroup == (None if host.cgroup_mode == "none" else host.cgroup_mode)
    # RLIMIT_NPROC counts per host uid: a process limit only where each sandbox has its own uid.
    assert limits.nproc == (40 if host.is_root and host.cgroup_mode == "none" else None)
    assert limits.disk_mib == (70 if host.tmpfs_quota else None)
    assert policy.own_host_uid is host.is_root


@pytest.fixture
def cgroup_files(tmp_path: Path) -> list[str]:
    files = [tmp_path / "memory.procs", tmp_path / "pids.procs"]
    for file in files:
        file.write_text("")
    return [str(f) for f in files]


@pytest.fixture
def control_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose write end is far from fds 3 and 4, which the launcher takes over."""
    r, w = os.pipe()
    high = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(w)
    yield r, high
    os.close(r)
    os.close(high)


@pytest.mark.parametrize("language", [Language.PYTHON, Language.JAVASCRIPT])
def test_launcher_applies_limits_and_joins_cgroups(
    host: HostFacts,
    policy: SandboxPolicy,
    language: Language,
    cgroup_files: list[str],
    control_pipe: tuple[int, int],
) -> None:
    control_r, control_w = control_pipe
    prefix = launch_prefix(
        policy,
        language,
        uid=os.getuid(),
        gid=os.getgid(),
        control_out=control_w,
        cgroup_procs=cgroup_files,
    )
    probe = (
        "echo $(ulimit -f) $(ulimit -n) $(ulimit -c) $(ulimit -v) $(ulimit -u);"
        f'read -r line <&{CONTROL_IN_FD}; echo "got $line" >&{CONTROL_OUT_FD}'
    )
    done = subprocess.run(
        [*prefix, "/bin/bash", "-c", probe],
        input="hello\n",
        capture_output=True,
        text=True,
        pass_fds=(control_w,),
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fsize, nofile, core, address_space, nproc = done.stdout.split()
    assert (fsize, nofile, core) == (str(9 * 1024), "77", "0")
    expected_as = str(300 * 1024) if language is Language.PYTHON else "unlimited"
    assert address_space == expected_as
    if policy.limits.nproc is not None:
        assert nproc == "40"
    # Each cgroup file it was given had the launcher's pid written to it ("0": itself).
    assert [Path(f).read_text() for f in cgroup_files] == ["0\n", "0\n"]
    # Its stdin became the control input, control_out the control output.
    assert os.read(control_r, 100) == b"got hello\n"


# --- the report ---


def test_report_says_what_bubblewrap_is_given(policy: SandboxPolicy, paths: SandboxPaths) -> None:
    report = policy.report()
    argv = bwrap_command(policy, Language.PYTHON, paths)
    opts = options(argv)
    expected = [arg for entry in report["mounts"] for arg in mount_args(entry, paths)]
    start = opts.index("--hostname") + 2
    assert opts[start : opts.index("--chdir")] == expected
    assert report["environment"] == sorted(setenv_pairs(argv))
    assert (report["uid"], report["gid"], report["hostname"]) == (1000, 1000, "sandbox")
    assert report["namespaces"] == list(policy.namespaces)
    assert report["network"] == "none"
    assert report["capabilities"] == []
    assert report["nested_user_namespaces"] is False
    assert report["limits"]["address_space_languages"] == ["c", "python"]
    assert opts[opts.index("--chdir") + 1] == report["workdir"]
    # /health is public: the executor's own paths are named, never shown.
    text = json.dumps(report)
    for path in (paths.home, paths.tmp, paths.runtime, paths.etc, RUNNERS_DIR):
        assert str(path) not in text


@pytest.mark.anyio
async def test_health_reports_the_policy(executor_state_dir: Path) -> None:
    backend = LocalBackend(ExecutorSettings(state_dir=executor_state_dir))
    try:
        health = backend.health()
        assert health.policy == backend.policy.report()
        fields = health.model_dump()
        assert fields["isolation"] == (
            "bubblewrap: user, pid, net, ipc, uts, mount and cgroup namespaces; no network"
        )
        for key in ("memory_limit", "process_limit", "disk_limit", "sandbox_uid"):
            assert isinstance(fields[key], str) and fields[key]
        assert fields["live_sandboxes"] == 0
    finally:
        await backend.close()
