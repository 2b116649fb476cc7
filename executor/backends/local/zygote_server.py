"""The zygote: one preloaded Python that forks an isolated, ready runner per stateless sandbox.

This file runs on its own, in the sandbox runtime's Python, started by the executor
(executor/backends/local/zygote.py, which says who holds which privilege and why); it imports
nothing of the executor. Stdlib only.

Start-up, in this order:
  1. Read the configuration (one JSON line on stdin): the root filesystem as a list of steps
     rendered from the sandbox policy, the sandbox environment, limits, the seccomp program.
  2. Drop supplementary groups, enter a new user namespace, say "userns" on stdout and wait for
     the executor to write its uid/gid maps ("go" on stdin): the zygote's root (uid 0 here) is
     a host uid of its own, never host root; the sandbox uids are mapped to themselves. Then
     become that uid 0: from here the zygote holds capabilities only over namespaces it owns.
  3. A private mount namespace, and in it the sandboxes' read-only root (on a tmpfs), entered
     with pivot_root: the host's filesystem is no longer reachable by path.
  4. Import the Python runner and what a run needs, freeze the heap (gc.freeze), say "ready".
Then it serves requests on the control socket (fd given in argv), a SOCK_SEQPACKET socket
whose other end only the executor holds: nothing of it is on any filesystem. A request is a
JSON header {"uid": N} with descriptors: a connection socket for this sandbox, stdout, stderr,
control-in, control-out, and the cgroup.procs files to join. The zygote clones a child into
new user, mount, pid, ipc, uts and network namespaces (one clone3), writes its id maps, answers
{"pid": N} on the connection, and from then on: EOF on the connection (or anything sent on it)
kills the child; the child's exit is answered {"exit": STATUS} and the connection closed.

The child, pid 1 of its own pid namespace, joins its cgroups, mounts its workspace (one tmpfs,
of the disk limit, holding /home/user and /tmp), a fresh /proc and /dev/shm, sets the hostname,
brings its loopback up, leaves the cgroup namespace, sets its descriptors (0 /dev/null, 1 and 2
output, 3 and 4 control: nothing else of the zygote survives) and rlimits, becomes uid 1000
with no capability in any set (cleared explicitly: changing uid inside a fresh user namespace
does not), no_new_privs, death signal, and the seccomp filter, then runs the Python runner's
main loop (runners/python_runner.py), already imported: a ready runner on the protocol's fds.
The zygote itself never runs a line of user code.

EOF on stdin (the executor is gone) ends the zygote; its children get SIGKILL as it dies.
"""

import base64
import ctypes
import errno
import gc
import json
import os
import selectors
import signal
import socket
import struct
import sys
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc_gil = ctypes.PyDLL(None, use_errno=True)  # clone3 keeps the GIL held, as os.fork does

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PIDFD = 0x00001000
CLONE_INTO_CGROUP = 0x200000000
RUN_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
RUN_NAMESPACES |= CLONE_NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
ST_NOATIME, ST_NODIRATIME, ST_RELATIME = 1024, 2048, 4096
MNT_DETACH = 2
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 24, 38, 22
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2
SYS_clone3, SYS_pivot_root, SYS_pidfd_send_signal, SYS_close_range = 435, 155, 424, 436
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 1
NEWROOT = "/sys"  # covered by a tmpfs in the zygote's own mount namespace: it needs no sysfs
WORKSPACE_MOUNT = "/proc"  # where a child mounts its workspace before /proc covers it
# A child that fails before running the runner exits with this (the executor reports it).
SETUP_FAILED = 121


class Failure(Exception):
    """A step that failed, with the errno's text."""


class CloneFailure(Failure):
    """clone3 failed; errno says why."""

    def __init__(self, errno_value: int) -> None:
        super().__init__(f"clone3: {os.strerror(errno_value)}")
        self.errno = errno_value


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise Failure(f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _locked_flags(path: str) -> int:
    """The flags a read-only remount of a bind of path must keep (the kernel locks them)."""
    flags = os.statvfs(path).f_flag
    kept = MS_NOSUID | MS_NODEV
    kept |= MS_NOEXEC if flags & os.ST_NOEXEC else 0
    kept |= MS_NOATIME if flags & ST_NOATIME else 0
    kept |= MS_NODIRATIME if flags & ST_NODIRATIME else 0
    kept |= MS_RELATIME if flags & ST_RELATIME else 0
    return kept


def _bind_read_only(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(source))


def _log(text: str) -> None:
    os.write(2, f"zygote: {text}\n".encode(errors="replace"))


# --- start-up ---


def _enter_user_namespace() -> None:
    os.setgroups([])
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    os.write(1, b"userns\n")
    if sys.stdin.buffer.readline().strip() != b"go":
        raise Failure("the executor did not map the user namespace")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # The uid change made it non-dumpable, which would give its children's /proc files (the id
    # maps it writes) to host root. Each child's own uid change makes it non-dumpable again.
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")


def _make_target(path: str, like: str | None) -> None:
    if like is not None and not os.path.isdir(like):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            open(path, "w").close()
    else:
        os.makedirs(path, exist_ok=True)


def _build_dev(root: str) -> None:
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        open(f"{dev}/{name}", "w").close()
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for link, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, f"{dev}/{link}")
    os.mkdir(f"{dev}/shm")
    os.mkdir(f"{dev}/pts")
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _build_root(steps: list[dict[str, Any]]) -> None:
    """The sandboxes' root, from the executor's steps, entered with pivot_root; read-only."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    os.makedirs(NEWROOT, exist_ok=True)
    _mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    root = NEWROOT
    for step in steps:
        op, target = step["op"], root + step["target"]
        if op == "bind":
            source = step["source"]
            if not os.path.exists(source):
                if step.get("optional"):
                    continue
                raise Failure(f"{source} does not exist")
            _make_target(target, source)
            _bind_read_only(source, target)
        elif op == "symlink":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(step["source"], target)
        elif op == "dir":
            os.makedirs(target, exist_ok=True)
        elif op == "file":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(base64.b64decode(step["content"]))
            os.chmod(target, 0o444)
        elif op == "tmpfs":  # read-only and empty (writable ones are the children's)
            os.makedirs(target, exist_ok=True)
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4k")
            _mount(None, target, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        elif op == "proc":
            # The host's /proc, bound: a child may mount a fresh proc of its own pid namespace
            # only where a full one is already visible; each child covers this with its own.
            os.makedirs(target, exist_ok=True)
            _mount("/proc", target, None, MS_BIND | MS_REC)
        elif op == "dev":
            _build_dev(root)
        elif op == "mountpoint":  # made per child (the workspace, /dev/shm)
            os.makedirs(target, exist_ok=True)
        else:
            raise Failure(f"unknown root step {op!r}")
    os.makedirs(f"{root}/.old", exist_ok=True)
    os.chdir(root)
    _check(_libc.syscall(SYS_pivot_root, b".", b".old"), "pivot_root")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/")


def _preload(config: dict[str, Any]) -> object:
    """Import the runner (from the root's runners directory) and what every run uses."""
    host_runtime, runtime = config["host_runtime"], config["runtime"]
    sys.path[:] = [
        p.replace(host_runtime, runtime) for p in sys.path if p.startswith((host_runtime, "/usr"))
    ]
    sys.path.insert(0, config["runners"])
    for name in ("executable", "_base_executable", "prefix", "exec_prefix"):
        value = getattr(sys, name, None)
        if isinstance(value, str):
            setattr(sys, name, value.replace(host_runtime, runtime))
    import ast  # noqa: F401
    import fcntl  # noqa: F401  (the children's own set-up: loopback, rlimits)
    import linecache  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401
    import types  # noqa: F401

    import egress_listen  # type: ignore[import-not-found]  # noqa: F401  (the children's)
    import python_runner  # type: ignore[import-not-found]

    return python_runner


def _retitle(argv: list[str]) -> None:
    """Write argv over this process's own command line: the sandbox must not read the host
    paths the zygote was started with (a child inherits the zygote's as its pid 1's). When the
    new one does not fit, only its first word is written; the rest of the area is zeroed."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    title = "\0".join(argv).encode() + b"\0"
    if len(title) > end - start:
        title = argv[0].encode()[: end - start - 1] + b"\0"
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(title.ljust(end - start, b"\0"))


# --- the child (never returns) ---


def _loopback_up() -> None:
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _workspace(config: dict[str, Any]) -> None:
    """One tmpfs of the disk limit holding /home/user and /tmp; a fresh /proc and /dev/shm."""
    uid, gid = config["uid"], config["gid"]
    top = WORKSPACE_MOUNT
    _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, f"size={config['disk_bytes']},mode=0755")
    os.mkdir(f"{top}/home", 0o755)
    os.chown(f"{top}/home", uid, gid)
    os.mkdir(f"{top}/tmp")
    os.chmod(f"{top}/tmp", 0o1777)
    for name, content in config.get("tmp_files", {}).items():
        path = f"{top}/tmp/{name}"
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        os.chown(directory, uid, gid)
        with open(path, "wb") as f:
            f.write(base64.b64decode(content))
        os.chown(path, uid, gid)
    _mount(f"{top}/home", config["home"], None, MS_BIND)
    _mount(f"{top}/tmp", "/tmp", None, MS_BIND)
    _check(_libc.umount2(top.encode(), MNT_DETACH), "umount the workspace's mount point")
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    shm = f"size={config['shm_bytes']},mode=1777"
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, shm)


def _drop_privileges(config: dict[str, Any]) -> None:
    import resource

    limits = config["rlimits"]
    for name, value in limits.items():
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))
    # The bounding set first: dropping from it takes CAP_SETPCAP, which the uid change ends.
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap <= 40:  # CAP_CHECKPOINT_RESTORE, the last of Linux 5.9: it must have gone that far
        raise Failure(f"could not empty the capability bounding set (stopped at {cap})")
    uid, gid = config["uid"], config["gid"]
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps")
    # Changing uid clears the capabilities only when it leaves the namespace's root uid; this
    # process was never that uid (its user namespace maps only the sandbox's), so clear them.
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # After the uid change, which clears it.
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "death signal")


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp(program: bytes) -> None:
    count = len(program) // ctypes.sizeof(_SockFilter)
    filters = (_SockFilter * count).from_buffer_copy(program)
    fprog = _SockFprog(count, filters)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def _child(config: dict[str, Any], fds: dict[str, Any], maps_ready: int, runner: object) -> None:
    """In the clone: isolate, then become the runner. Never returns."""
    status = SETUP_FAILED
    # Where a set-up failure is told: the run's stderr pipe, which the executor reads when no
    # ready signal comes (and the zygote's own stderr, its log, until the pipe becomes fd 2).
    told = [fds["stderr"], 2]
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "death signal")
        # The command line a bubblewrap runner has, as its pid 1's: no host path.
        python = f"{config['runtime']}/python/bin/python"
        _retitle([python, "-I", config["runner_path"], "python"])
        for fd in fds["cgroups"]:
            os.write(fd, b"0")
        if os.read(maps_ready, 1) != b"1":  # the zygote writes the id maps, then says so
            raise Failure("the zygote did not map the run's user namespace")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        _workspace(config)
        socket.sethostname(config["hostname"])
        _loopback_up()
        if fds["egress"] >= 0:  # the egress proxy's socket, on this loopback, to the executor
            sys.modules["egress_listen"].listen(os.dup(fds["egress"]), config["egress_port"])
        _check(_libc.unshare(CLONE_NEWCGROUP), "unshare(CLONE_NEWCGROUP)")
        null = os.open("/dev/null", os.O_RDONLY)
        for target, source in enumerate(
            (null, fds["stdout"], fds["stderr"], fds["control_in"], fds["control_out"])
        ):
            os.dup2(source, target)
        told = [2]
        _check(_libc.syscall(SYS_close_range, 5, 0xFFFFFFFF, 0), "close_range")
        os.umask(0o022)
        os.chdir(config["home"])
        os.environ.clear()
        os.environ.update(config["environment"])
        _drop_privileges(config)
        _seccomp(config["seccomp"])
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.argv = [config["runner_path"], "python"]
        status = 0
        runner.main()  # type: ignore[attr-defined]
        runner._flush_streams()  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - whatever happens, this process ends here
        if status == SETUP_FAILED:
            for fd in told:
                try:
                    os.write(fd, f"sandbox setup failed: {exc}\n".encode(errors="replace"))
                except OSError:
                    pass
        else:
            status = 1
    os._exit(status)


# --- the zygote's loop ---


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def _clone3(flags: int, cgroup_fd: int = -1) -> tuple[int, int]:
    """fork() into new namespaces (and into the cgroup whose directory cgroup_fd is, if one is
    given): (pid, pidfd) in the zygote, (0, -1) in the child."""
    pidfd = ctypes.c_int(-1)
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    args = _CloneArgs(
        flags=flags | CLONE_PIDFD,
        pidfd=ctypes.addressof(pidfd),
        exit_signal=signal.SIGCHLD,
        cgroup=max(cgroup_fd, 0),
    )
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_gil.syscall(SYS_clone3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0, -1
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise CloneFailure(err)
    return pid, pidfd.value


def _write_maps(pid: int, inside: int, outside: int) -> None:
    for name, text in (
        ("setgroups", "deny"),
        # Its root is the zygote's (so that it can make its workspace's files before it drops
        # to the sandbox's uid, which maps to the sandbox's host uid).
        ("uid_map", f"0 0 1\n{inside} {outside} 1\n"),
        ("gid_map", f"0 0 1\n{inside} {outside} 1\n"),
    ):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)


class Zygote:
    """Serves the executor's requests; one child per request."""

    def __init__(self, config: dict[str, Any], channel: socket.socket, runner: object) -> None:
        self.config = config
        self.channel = channel
        self.runner = runner
        self.selector = selectors.DefaultSelector()
        self.selector.register(channel, selectors.EVENT_READ, None)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        # pidfd -> (pid, connection)
        self.children: dict[int, tuple[int, socket.socket]] = {}
        # Whether CLONE_INTO_CGROUP is still tried (not once the kernel refused it).
        self.clone_into = True

    def serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    self._request()
                elif key.data == "stdin":
                    if not os.read(key.fd, 4096):
                        return
                elif key.data[0] == "connection":
                    self._kill(key.data[1])
                else:
                    self._reap(key.data[1])

    def _request(self) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 65536, 64)
        except OSError as exc:
            raise Failure(f"control socket: {exc}") from exc
        if not message:
            raise SystemExit(0)  # the executor closed it
        if len(fds) < 5:
            for fd in fds:
                os.close(fd)
            _log("a request without its descriptors was ignored")
            return
        connection = socket.socket(fileno=fds[0])
        try:
            request = json.loads(message)
            pid, pidfd, into = self._spawn(
                int(request["uid"]),
                fds,
                bool(request.get("cgroup_dir")),
                bool(request.get("egress")),
            )
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the zygote
            self._answer(connection, {"error": str(exc)})
            connection.close()
            return
        finally:
            for fd in fds[1:]:
                os.close(fd)
        self._answer(connection, {"pid": pid, "into_cgroup": into})
        connection.setblocking(False)
        self.children[pidfd] = (pid, connection)
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", pidfd))
        self.selector.register(connection, selectors.EVENT_READ, ("connection", pidfd))

    def _clone(self, cgroup_fd: int) -> tuple[int, int, bool]:
        """A child, born in its cgroup where the kernel lets the zygote do that; (pid, pidfd,
        whether it was)."""
        if cgroup_fd >= 0 and self.clone_into:
            try:
                return (*_clone3(RUN_NAMESPACES, cgroup_fd), True)
            except CloneFailure as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOSYS):
                    raise
                self.clone_into = False
                _log(f"CLONE_INTO_CGROUP refused ({exc}): children join their cgroups")
        return (*_clone3(RUN_NAMESPACES), False)

    def _spawn(
        self, host_uid: int, fds: list[int], cgroup_dir: bool, egress: bool
    ) -> tuple[int, int, bool]:
        """fds: the connection, stdout, stderr, control in and out, then the egress channel
        (when egress), the cgroup's directory (when cgroup_dir), then its cgroup.procs files
        (to join it otherwise)."""
        maps_read, maps_write = os.pipe()
        rest = fds[5:]
        egress_fd = rest.pop(0) if egress and rest else -1
        cgroup_fd = rest.pop(0) if cgroup_dir and rest else -1
        named = {
            "stdout": fds[1],
            "stderr": fds[2],
            "control_in": fds[3],
            "control_out": fds[4],
            "egress": egress_fd,
            "cgroups": rest,
        }
        try:
            pid, pidfd, into = self._clone(cgroup_fd)
            if pid == 0:
                if into:
                    named["cgroups"] = []  # born in it
                os.close(maps_write)
                _child(self.config, named, maps_read, self.runner)
            try:
                _write_maps(pid, self.config["uid"], host_uid)
                os.write(maps_write, b"1")
            except OSError:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(pidfd)
                raise
        finally:
            os.close(maps_read)
            os.close(maps_write)
        return pid, pidfd, into

    @staticmethod
    def _answer(connection: socket.socket, message: dict[str, Any]) -> None:
        try:
            connection.send(json.dumps(message).encode())
        except OSError:
            pass  # the executor gave up on it; the child, if any, dies with the connection

    def _kill(self, pidfd: int) -> None:
        """The executor closed the connection (or wrote to it): the child goes."""
        entry = self.children.get(pidfd)
        if entry is None:
            return
        _, connection = entry
        try:
            connection.recv(64)
        except OSError:
            pass
        self.selector.unregister(connection)
        _libc.syscall(SYS_pidfd_send_signal, pidfd, signal.SIGKILL, None, 0)

    def _reap(self, pidfd: int) -> None:
        pid, connection = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        try:
            self.selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        self._answer(connection, {"exit": os.waitstatus_to_exitcode(status)})
        connection.close()


def main() -> None:
    """Start up (see the module's docstring), then serve until stdin ends."""
    channel = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(sys.stdin.buffer.readline())
    config["seccomp"] = base64.b64decode(config["seccomp"])
    _enter_user_namespace()
    _build_root(config["root"])
    runner = _preload(config)
    _retitle(["code-exec-zygote"])  # what `ps` on the host shows; each child writes its own
    gc.collect()
    gc.freeze()  # the preloaded heap stays out of the children's collections: fewer COW faults
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.write(1, b"ready\n")
    Zygote(config, channel, runner).serve()


if __name__ == "__main__":
    try:
        main()
    except Failure as exc:
        _log(str(exc))
        sys.exit(1)
