"""The isolation contract, read from the policy and its renderings; no sandbox is started.

Each test builds the policy as the backend would and checks what bubblewrap would be given
(bwrap.py), what the launcher does before bubblewrap (launcher.py, run for real in front of a
plain command), what the seccomp filter is compiled from (seccomp.py), and that /health reports
the same.
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
from executor.backends.local.bwrap import DataFds, bwrap_command, with_args_fd
from executor.backends.local.launcher import launch_prefix
from executor.backends.local.policy import (
    RUNNER_FILES,
    RUNNERS_DIR,
    SHM_MIB,
    ArgMatch,
    Errno,
    HostFacts,
    MountKind,
    SandboxPaths,
    SandboxPolicy,
    Slot,
)
from executor.backends.local.protocol import CONTROL_IN_FD, CONTROL_OUT_FD
from executor.backends.local.seccomp import compile_filter, complement_blocks
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
        home=tmp_path / "ws" / "home", tmp=tmp_path / "ws" / "tmp", runtime=tmp_path / "runtime"
    )


SECCOMP = b"\x06\x00\x00\x00\x00\x00\xff\x7f"  # a program of one instruction: allow


class Recorder:
    """A data_fd that hands out made-up descriptor numbers and remembers what each holds."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def __call__(self, data: bytes) -> int:
        fd = 1000 + len(self.data)
        self.data[str(fd)] = data
        return fd


def render(
    policy: SandboxPolicy, language: Language, paths: SandboxPaths
) -> tuple[list[str], Recorder]:
    """bubblewrap's argv for the policy, and what its descriptors hold."""
    fds = Recorder()
    argv = bwrap_command(
        policy, language, paths, files=policy.file_contents(), seccomp=SECCOMP, data_fd=fds
    )
    return argv, fds


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


def mount_args(entry: dict[str, Any], paths: SandboxPaths, fds: Recorder) -> list[str]:
    """The bubblewrap options a reported mount entry stands for (written apart from bwrap.py)."""
    kind, target, mode = entry["kind"], entry["target"], entry["mode"]
    if kind == "bind":
        flag = "--bind" if mode == "rw" else "--ro-bind"
        flag += "-try" if entry.get("optional") else ""
        return [flag, host_path(entry["source"], paths), target]
    if kind == "symlink":
        return ["--symlink", entry["source"], target]
    if kind == "file":
        slot, _, name = entry["source"][1:].partition(">/")
        fd = next(fd for fd, data in fds.data.items() if data == file_content(slot, name))
        return ["--perms", "0444", "--file", fd, target]
    size = ["--size", str(entry["size_mib"] << 20)] if "size_mib" in entry else []
    read_only = ["--remount-ro", target] if mode == "ro" and kind in ("tmpfs", "dev") else []
    return [*size, f"--{kind}", target, *read_only]


def file_content(slot: str, name: str) -> bytes:
    """What a FILE entry of a slot holds, read apart from the policy's own reading."""
    if slot == "runners":
        return (RUNNERS_DIR / name).read_bytes()
    return SandboxPolicy.build(SETTINGS, HOSTS["unprivileged"]).etc_files()[name].encode()


# --- namespaces, privileges, identity ---


def test_every_namespace_is_new_and_none_can_be_made_inside(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    assert set(policy.namespaces) == {"user", "pid", "net", "ipc", "uts", "mount", "cgroup"}
    assert policy.nested_user_namespaces is False
    for language in Language:
        opts = options(render(policy, language, paths)[0])
        for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc"):
            assert flag in opts
        assert "--unshare-uts" in opts
        assert "--unshare-cgroup-try" in opts
        assert "--disable-userns" in opts
        assert not {"--share-net", "--userns", "--pidns", "--netns"} & set(opts)


def test_every_capability_dropped_and_unprivileged_inside(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    opts = options(render(policy, Language.PYTHON, paths)[0])
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
    opts = options(render(policy, Language.PYTHON, paths)[0])
    writable = [
        opts[i + 1 : i + 3] for i, arg in enumerate(opts) if arg in ("--bind", "--bind-try")
    ]
    assert writable == [[str(paths.home), "/home/user"], [str(paths.tmp), "/tmp"]]
    # Every other host path is bound read-only.
    read_only = {opts[i + 2] for i, arg in enumerate(opts) if arg.startswith("--ro-bind")}
    assert {"/usr", "/opt/code-exec/runtime", "/etc/ld.so.cache"} <= read_only
    # What else can be written is memory, not the host's: bubblewrap's /proc, and /dev/shm
    # with a size of its own (remount-ro of / does not recurse, so each says its own mode).
    others = {m.target for m in policy.mounts if m.kind is not MountKind.BIND and m.mode == "rw"}
    assert others == {"/proc", "/dev/shm"}
    assert opts[opts.index("/dev/shm") - 3 : opts.index("/dev/shm")] == [
        "--size",
        str(SHM_MIB << 20),
        "--tmpfs",
    ]
    assert policy.limits.shm_mib == SHM_MIB == 64


def test_dev_and_usr_local_are_read_only(policy: SandboxPolicy, paths: SandboxPaths) -> None:
    opts = options(render(policy, Language.PYTHON, paths)[0])
    usr_local = opts.index("/usr/local")
    assert opts[usr_local - 1 : usr_local + 3] == [
        "--tmpfs",
        "/usr/local",
        "--remount-ro",
        "/usr/local",
    ]
    assert opts.index("/usr") < usr_local  # over the read-only /usr, so it hides its /usr/local
    dev = opts.index("--dev")
    assert opts[dev : dev + 4] == ["--dev", "/dev", "--remount-ro", "/dev"]
    # /dev/shm is mounted after: the remount of /dev does not reach it.
    assert opts.index("/dev/shm") > dev


def test_root_is_remounted_read_only_last(policy: SandboxPolicy, paths: SandboxPaths) -> None:
    assert policy.mounts[-1].kind is MountKind.REMOUNT_RO
    assert policy.mounts[-1].target == "/"
    opts = options(render(policy, Language.PYTHON, paths)[0])
    flags = (
        "--bind",
        "--ro-bind",
        "--ro-bind-try",
        "--symlink",
        "--dir",
        "--file",
        "--tmpfs",
        "--proc",
        "--dev",
    )
    remount = len(opts) - 1 - opts[::-1].index("--remount-ro")
    assert opts[remount + 1] == "/"
    assert remount > max(i for i, arg in enumerate(opts) if arg in flags)


def test_host_etc_limited_and_own_files_are_no_mounts(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    argv, fds = render(policy, Language.PYTHON, paths)
    opts = options(argv)
    binds = {
        opts[i + 2]: opts[i + 1]
        for i, arg in enumerate(opts)
        if arg.startswith("--ro-bind") and opts[i + 2].startswith("/etc/")
    }
    # Of the host's /etc, only what the runtimes read, bound at the same place.
    assert binds == {
        path: path
        for path in (
            "/etc/alternatives",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/localtime",
            "/etc/mime.types",
        )
    }
    # The executor's own /etc files and the runners are files made in the sandbox's root from
    # descriptors, not binds of the executor's directories (which mountinfo would show).
    files = {opts[i + 2]: fds.data[opts[i + 1]] for i, arg in enumerate(opts) if arg == "--file"}
    etc = {
        target.removeprefix("/etc/"): data
        for target, data in files.items()
        if target.startswith("/etc/")
    }
    assert etc == {name: text.encode() for name, text in policy.etc_files().items()}
    runners = {
        target.removeprefix("/opt/code-exec/runners/"): data
        for target, data in files.items()
        if target.startswith("/opt/code-exec/runners/")
    }
    assert runners == {name: (RUNNERS_DIR / name).read_bytes() for name in RUNNER_FILES}
    assert len(files) == len(etc) + len(runners)
    assert not any(str(RUNNERS_DIR) in arg for arg in opts)


# --- environment ---


def test_environment_is_the_policys_only(
    policy: SandboxPolicy, paths: SandboxPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODE_EXEC_SECRET_PROBE", "s3cr3t")
    argv, _ = render(policy, Language.BASH, paths)
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
    if policy.own_host_uid and os.geteuid() != 0:
        pytest.skip("a root executor's launcher changes uid, which needs root; not root here")
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
    argv, fds = render(policy, Language.PYTHON, paths)
    opts = options(argv)
    expected = [arg for entry in report["mounts"] for arg in mount_args(entry, paths, fds)]
    start = opts.index("--hostname") + 2
    assert opts[start : opts.index("--chdir")] == expected
    assert report["environment"] == sorted(setenv_pairs(argv))
    assert (report["uid"], report["gid"], report["hostname"]) == (1000, 1000, "sandbox")
    assert report["namespaces"] == list(policy.namespaces)
    assert report["network"] == "none"
    assert report["capabilities"] == []
    assert report["nested_user_namespaces"] is False
    assert report["limits"]["address_space_languages"] == ["c", "python"]
    assert report["limits"]["shm_mib"] == SHM_MIB
    assert opts[opts.index("--chdir") + 1] == report["workdir"]
    assert fds.data[opts[opts.index("--seccomp") + 1]] == SECCOMP
    # /health is public: the executor's own paths are named, never shown.
    text = json.dumps(report)
    for path in (paths.home, paths.tmp, paths.runtime, RUNNERS_DIR):
        assert str(path) not in text


def test_bubblewrap_reads_its_options_from_a_descriptor(
    policy: SandboxPolicy, paths: SandboxPaths
) -> None:
    argv, fds = render(policy, Language.PYTHON, paths)
    short = with_args_fd(argv, fds)
    # Its own command line names no host path: the sandbox reads it as pid 1's.
    assert short[:2] == ["bwrap", "--args"]
    assert short[3:] == ["--", *policy.runners[Language.PYTHON]]
    assert fds.data[short[2]] == b"".join(arg.encode() + b"\0" for arg in options(argv))
    assert not any(str(paths.home) in arg or str(paths.runtime) in arg for arg in short)


def test_data_fds_are_readable_copies_clear_of_the_launchers_fds() -> None:
    fds = DataFds()
    try:
        first, second = fds(b"one"), fds(b"")
        assert min(first, second) >= 10  # the launcher's prologue takes 3 and 4
        assert os.read(first, 10) == b"one"
        assert os.read(second, 10) == b""
        assert not os.get_inheritable(first)  # passed to bubblewrap only, by pass_fds
    finally:
        fds.close()
    assert fds.fds == []
    with pytest.raises(OSError):
        os.fstat(first)


# --- syscalls ---


def test_the_denials_cover_dockers_and_the_promised_ones(policy: SandboxPolicy) -> None:
    denied = {denial.syscall: denial for denial in policy.syscalls.denials}
    promised = {
        "add_key", "keyctl", "request_key", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
        "kexec_file_load", "init_module", "finit_module", "delete_module", "mount", "umount2",
        "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
        "unshare", "setns", "clone", "clone3", "ptrace", "process_vm_readv", "process_vm_writev",
        "personality", "acct", "swapon", "swapoff", "reboot", "syslog", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "quotactl", "lookup_dcookie", "nfsservctl",
        "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "uselib", "vm86", "vm86old",
        "kcmp", "create_module", "get_kernel_syms", "query_module", "inotify_init",
        "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_init",
        "fanotify_mark",
    }  # fmt: skip
    # What Docker's default profile refuses on x86_64 to a container without added capabilities
    # (syscalls it does not list, or lists only with a capability), up to number 450.
    docker = {
        "_sysctl", "acct", "add_key", "afs_syscall", "bpf", "chroot", "clock_settime",
        "create_module", "delete_module", "fanotify_init", "finit_module", "fsconfig", "fsmount",
        "fsopen", "fspick", "get_kernel_syms", "get_mempolicy", "getpmsg", "init_module",
        "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
        "mbind", "migrate_pages", "mount", "mount_setattr", "move_mount", "move_pages",
        "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pidfd_getfd",
        "pivot_root", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
        "putpmsg", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
        "security", "set_mempolicy", "set_mempolicy_home_node", "setdomainname", "sethostname",
        "setns", "settimeofday", "swapoff", "swapon", "sysfs", "syslog", "tuxcall", "umount2",
        "unshare", "uselib", "userfaultfd", "ustat", "vhangup", "vserver",
    }  # fmt: skip
    assert promised | docker <= set(denied)
    assert all(
        denied[name].match is ArgMatch.ALWAYS
        for name in (promised | docker) - {"clone", "personality"}
    )
    # clone only with a namespace flag, clone3 always (glibc falls back to clone on ENOSYS).
    assert denied["clone"].match is ArgMatch.ANY_BIT
    newtime, newns, newcgroup, newuts, newipc, newuser, newpid, newnet = (
        0x80, 0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000,
    )  # fmt: skip
    assert denied["clone"].values == (
        newtime | newns | newcgroup | newuts | newipc | newuser | newpid | newnet,
    )
    assert denied["clone3"].errno is Errno.ENOSYS
    assert denied["personality"].match is ArgMatch.NONE_OF
    assert denied["personality"].values == (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
    assert denied["socket"].values == (40,)  # AF_VSOCK: Docker refuses it too
    for name in ("io_uring_setup", "inotify_init1", "inotify_init"):
        assert denied[name].errno is Errno.ENOSYS  # libraries fall back
    # Syscalls added after the list (Docker refuses what it does not list) are refused too.
    assert policy.syscalls.unreviewed.start == 451
    assert policy.syscalls.unreviewed_errno is Errno.ENOSYS


def test_personality_is_refused_but_for_dockers_five_personas() -> None:
    allowed = frozenset({0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF})
    blocks = complement_blocks(allowed)

    def refused(persona: int) -> bool:
        return any(persona & mask == value for mask, value in blocks)

    assert not any(refused(persona) for persona in allowed)
    for persona in (0x1, 0x7, 0x9, 0x40000, 0x0040008, 0x20001, 0x1FFFF, 0x80000000, 0xFFFFFFFE):
        assert refused(persona), hex(persona)
    # Blocks are disjoint and cover every other 32-bit number exactly once.
    assert sum(1 << (32 - mask.bit_count()) for mask, _ in blocks) == (1 << 32) - len(allowed)


def test_seccomp_filter_compiles_to_a_loadable_program(policy: SandboxPolicy) -> None:
    program = compile_filter(policy.syscalls)
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 <= 4096  # the kernel's limit on a classic BPF program


def test_seccomp_report_lists_every_denial_with_its_errno(policy: SandboxPolicy) -> None:
    report = policy.report()["syscalls"]
    assert report["default"] == "allow"
    assert report["other_architectures"] == "killed"
    assert [entry["syscall"] for entry in report["denied"]] == [
        denial.syscall for denial in policy.syscalls.denials
    ]
    by_name = {entry["syscall"]: entry for entry in report["denied"]}
    assert by_name["keyctl"] == {"syscall": "keyctl", "errno": "EPERM"}
    assert by_name["clone3"] == {"syscall": "clone3", "errno": "ENOSYS"}
    assert by_name["clone"]["when"] == "first argument: any bit 0x7e020080"
    assert by_name["personality"]["when"].startswith("first argument: none of 0x0, 0x8")
    assert report["denied_numbers"] == {
        "from": 451, "to": 1023, "errno": "ENOSYS", "why": "syscalls newer than this policy",
    }  # fmt: skip


@pytest.mark.anyio
async def test_health_reports_the_policy(executor_state_dir: Path) -> None:
    backend = LocalBackend(ExecutorSettings(state_dir=executor_state_dir))
    try:
        health = backend.health()
        assert health.policy == backend.policy.report()
        fields = health.model_dump()
        refused = len(backend.policy.syscalls.denials)
        assert fields["isolation"] == (
            "bubblewrap: user, pid, net, ipc, uts, mount and cgroup namespaces; "
            f"seccomp ({refused} syscalls refused); no network interface"
        )
        assert fields["network"].startswith("none: the sandbox's own loopback only")
        assert health.policy["egress"] == {"level": "none", "allowlist": []}
        assert health.policy["syscalls"]["denied"][0] == {"syscall": "add_key", "errno": "EPERM"}
        for key in ("memory_limit", "process_limit", "disk_limit", "sandbox_uid"):
            assert isinstance(fields[key], str) and fields[key]
        assert fields["live_sandboxes"] == 0
    finally:
        await backend.close()
