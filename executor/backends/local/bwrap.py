"""The policy as bubblewrap applies it: its options, and the data it reads from descriptors.

What a sandbox can see and do is decided in policy.py; this module only translates. Data (the
seccomp filter, the files the executor writes into the sandbox, and the options themselves)
reaches bubblewrap through descriptors: the options through --args, so that bubblewrap's
command line, which the sandbox can read as its pid 1's, names no host path.
"""

import os
from collections.abc import Callable, Mapping

from executor.backends.local.launcher import above_launcher_fds
from executor.backends.local.policy import (
    EGRESS_PORT,
    SANDBOX_RUNNERS,
    Mount,
    MountKind,
    SandboxPaths,
    SandboxPolicy,
)
from schemas.languages import Language

# Makes a descriptor bubblewrap can read the data from, and returns its number.
DataFd = Callable[[bytes], int]

_MIB = 1024 * 1024
# The host's Python, without site: the quickest start (about 10 ms).
EGRESS_LISTEN = ("/usr/bin/python3", "-I", "-S", f"{SANDBOX_RUNNERS}/egress_listen.py")
_FILE_PERMS = "0444"

_UNSHARE = {
    "user": ["--unshare-user"],
    "pid": ["--unshare-pid"],
    "net": ["--unshare-net"],
    "ipc": ["--unshare-ipc"],
    "uts": ["--unshare-uts"],
    "mount": [],  # bubblewrap always makes one
    # As --unshare-all has it: kernels without cgroup namespaces still get a sandbox.
    "cgroup": ["--unshare-cgroup-try"],
}


def _mount_args(
    mount: Mount, paths: SandboxPaths, files: Mapping[str, bytes], data_fd: DataFd
) -> list[str]:
    match mount.kind:
        case MountKind.BIND:
            option = "--bind" if mount.writable else "--ro-bind"
            return [
                f"{option}-try" if mount.optional else option,
                mount.host_source(paths),
                mount.target,
            ]
        case MountKind.SYMLINK:
            return ["--symlink", mount.host_source(paths), mount.target]
        case MountKind.DIR:
            return ["--dir", mount.target]
        case MountKind.FILE:
            fd = data_fd(files[mount.content_key])
            return ["--perms", _FILE_PERMS, "--file", str(fd), mount.target]
        case MountKind.TMPFS:
            size = ["--size", str(mount.size_mib * _MIB)] if mount.size_mib is not None else []
            read_only = [] if mount.writable else ["--remount-ro", mount.target]
            return [*size, "--tmpfs", mount.target, *read_only]
        case MountKind.PROC:
            return ["--proc", mount.target]
        case MountKind.DEV:
            # Remounting does not recurse: what is mounted below later (/dev/shm) stays writable.
            read_only = [] if mount.writable else ["--remount-ro", mount.target]
            return ["--dev", mount.target, *read_only]
        case MountKind.REMOUNT_RO:
            return ["--remount-ro", mount.target]


def bwrap_command(
    policy: SandboxPolicy,
    language: Language,
    paths: SandboxPaths,
    *,
    files: Mapping[str, bytes],
    seccomp: bytes,
    data_fd: DataFd,
    egress_fd: int | None = None,
) -> list[str]:
    """Full argv: bwrap, the policy as its options, then the language's runner.

    files holds the content of the policy's FILE entries (SandboxPolicy.file_contents), seccomp
    the compiled filter (seccomp.compile_filter); each is handed over through data_fd. With
    egress_fd (a socket the sandbox inherits), the runner starts behind egress_listen.py, which
    sends the egress proxy's listening socket over it (egress.py).
    """
    args = ["bwrap"]
    for namespace in policy.namespaces:
        args += _UNSHARE[namespace]
    if not policy.nested_user_namespaces:
        args.append("--disable-userns")
    if policy.die_with_parent:
        args.append("--die-with-parent")
    if policy.new_session:
        args.append("--new-session")
    args += ["--cap-drop", "ALL"]
    for capability in policy.capabilities:
        args += ["--cap-add", capability]
    args += ["--seccomp", str(data_fd(seccomp))]
    args += ["--uid", str(policy.uid), "--gid", str(policy.gid), "--hostname", policy.hostname]
    for mount in policy.mounts:
        args += _mount_args(mount, paths, files, data_fd)
    args += ["--chdir", policy.workdir, "--clearenv"]
    for key, value in policy.environment.items():
        args += ["--setenv", key, value]
    args.append("--")
    if egress_fd is not None:
        args += [*EGRESS_LISTEN, str(egress_fd), str(EGRESS_PORT), "--"]
    args += policy.runners[language]
    return args


def with_args_fd(argv: list[str], data_fd: DataFd) -> list[str]:
    """The same command with bubblewrap's options read from a descriptor (--args)."""
    end = argv.index("--")
    options = b"".join(option.encode() + b"\0" for option in argv[1:end])
    return [argv[0], "--args", str(data_fd(options)), *argv[end:]]


class DataFds:
    """Descriptors that hold data for one bubblewrap, each read once; closed once it started.

    memfds, one per datum: bubblewrap reads each to its end, so none can be shared between two.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []

    def __call__(self, data: bytes) -> int:
        """A fresh descriptor positioned at the start of data."""
        fd = above_launcher_fds(os.memfd_create("code-exec-bwrap", os.MFD_CLOEXEC))
        self.fds.append(fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def close(self) -> None:
        """Close this process's copies (bubblewrap has its own)."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
