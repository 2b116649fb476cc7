"""The sandbox policy: all that a local sandbox is and may do, as one frozen data object.

Built once from the settings and a few facts of the host, then rendered, never re-decided:
bwrap.py turns it into bubblewrap's arguments, seccomp.py into the syscall filter, launcher.py
into the command that applies its limits and starts bubblewrap, and report() into what /health
shows (nsjail's config.proto is the model: the policy says what, one renderer per mechanism
says how).

The contract:
- Namespaces: user, pid, net, ipc, uts, mount and cgroup, all new; no user namespace may be
  made inside; every capability dropped; uid and gid 1000 inside, hostname "sandbox".
- Syscalls: a seccomp filter refuses, with the errno listed, what Docker's default profile
  refuses and more (Syscalls below): keyrings, io_uring, bpf, perf, userfaultfd, kernel
  modules, mounting, new namespaces, ptrace, inotify, ...; other architectures' syscalls kill.
- Files: /usr, the runtime and a few /etc files of the host read-only; the runners and the
  executor's own /etc files are files in the sandbox's root, not mounts; /home/user and /tmp
  writable, the workspace (with the disk quota, when there is one); a fresh /proc; a read-only
  /dev with a size-limited /dev/shm; an empty read-only /usr/local; then / remounted read-only.
  Besides the workspace, only /dev/shm (SHM_MIB) and /proc can be written: never the host's.
- What the sandbox sees of the host: bubblewrap takes its options through a file descriptor, so
  its command line (pid 1's, inside) holds no host path. /proc/self/mountinfo still shows the
  path of each bound directory inside its host filesystem: /usr, the /etc files bound from the
  host, and the runtime's (settings.runtime_dir, e.g. <venv>/share/code-exec/runtime) - a
  bind mount's source cannot be hidden. The workspace shows as "/home" and "/tmp" of its own
  tmpfs when the executor is root (tmpfs quota); without root it shows its host path too.
- Network: none but the sandbox's own loopback; no vsock (not network-namespaced).
  Environment: the policy's; none of the executor's.
- Processes: killed when the executor dies; a session of their own, away from any terminal.
- Limits: see Limits.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from executor.backends.local.network import NetworkPolicy
from executor.config import ExecutorSettings
from schemas.languages import Language
from schemas.network import Network

RUNNERS_DIR = Path(__file__).resolve().parent / "runners"
SANDBOX_RUNNERS = "/opt/code-exec/runners"
# Fixed, so that no host path of the runtime (which may lie under /tmp) is shadowed or shown.
SANDBOX_RUNTIME = Path("/opt/code-exec/runtime")
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_HOME = "/home/user"
# /dev/shm holds POSIX shared memory and semaphores (multiprocessing needs it). It is memory the
# disk quota does not cover, so it gets a small size of its own.
SHM_MIB = 64
# The egress proxy's port on each sandbox's loopback (egress.py), when the executor allows any
# network.
EGRESS_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{EGRESS_PORT}"

NAMESPACES = ("user", "pid", "net", "ipc", "uts", "mount", "cgroup")
# V8 reserves far more address space than it uses: no RLIMIT_AS for Node.js. For Python and C it
# applies even with cgroups: a MemoryError beats an OOM kill.
ADDRESS_SPACE_LANGUAGES = frozenset({Language.PYTHON, Language.C})

# Files of the host's /etc the runtimes read; everything else of it stays hidden.
_HOST_ETC_FILES = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
)
# Files of /etc the executor writes for the sandbox (see SandboxPolicy.etc_files).
_OWN_ETC_FILES = ("passwd", "group", "hosts", "hostname", "nsswitch.conf")
# The runners (and what they import), relative to RUNNERS_DIR and SANDBOX_RUNNERS.
RUNNER_FILES = (
    "python_runner.py",
    "pythonpath/code_exec_mpl_backend.py",
    "pythonpath/tools.py",
    "node_runner.js",
    "nodepath/tools.js",
    "bash_runner.sh",
    "egress_listen.py",
)
_MERGED_USR_DIRS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")


class MountKind(StrEnum):
    """How one path of the sandbox is made."""

    BIND = "bind"  # a host path, read-only unless the entry says writable
    SYMLINK = "symlink"  # a symbolic link in the (read-only) root
    DIR = "dir"  # an empty directory in the (read-only) root
    FILE = "file"  # a file in the (read-only) root, its content given by the executor: no mount
    TMPFS = "tmpfs"  # a fresh, empty tmpfs (of size_mib when given), read-only unless writable
    PROC = "proc"  # the pid namespace's own /proc
    # A minimal /dev (null, zero, full, random, urandom, tty, pts, an empty shm) on a tmpfs,
    # read-only unless writable: devices stay usable, nothing can be stored.
    DEV = "dev"
    REMOUNT_RO = "remount-ro"  # make what is mounted at the target read-only (not recursive)


class Slot(StrEnum):
    """A source of the executor's own, named in the policy and given when it is rendered.

    HOME, TMP and RUNTIME are host directories (per sandbox or per executor); ETC and RUNNERS
    are file contents. /health, which anyone may read, shows the name, not the path.
    """

    HOME = "home"  # the sandbox's workspace home
    TMP = "tmp"  # the sandbox's workspace tmp
    RUNTIME = "runtime"  # the sandbox runtime (settings.runtime_dir)
    ETC = "etc"  # the /etc files the executor writes (SandboxPolicy.etc_files)
    RUNNERS = "runners"  # the runners of this installation (RUNNER_FILES)


@dataclass(frozen=True)
class SandboxPaths:
    """The host directories of the slots, for one sandbox."""

    home: Path
    tmp: Path
    runtime: Path

    def of(self, slot: Slot) -> Path:
        """The host path of a directory slot."""
        match slot:
            case Slot.HOME:
                return self.home
            case Slot.TMP:
                return self.tmp
            case Slot.RUNTIME:
                return self.runtime
            case _:
                raise ValueError(f"slot {slot.value} holds file contents, not a host directory")


@dataclass(frozen=True)
class Mount:
    """One entry of the sandbox's filesystem; entries apply in the policy's order."""

    kind: MountKind
    target: str
    # BIND: a host path or a directory slot (with `under`, a path below it); FILE: a file slot
    # and the file's name in it (`under`); SYMLINK: the link's text.
    source: str | Slot | None = None
    under: str = ""
    writable: bool = False  # BIND, TMPFS and DEV; PROC is writable, the other kinds never
    optional: bool = False  # BIND only: skipped when the host has no such source
    size_mib: int | None = None  # TMPFS only: its size (None: unlimited)

    @property
    def mode(self) -> Literal["ro", "rw"]:
        """Whether the sandbox's user may write there (file permissions aside)."""
        if self.kind in (MountKind.BIND, MountKind.TMPFS, MountKind.DEV):
            return "rw" if self.writable else "ro"
        return "rw" if self.kind is MountKind.PROC else "ro"

    @property
    def content_key(self) -> str:
        """FILE only: the key of its content among the files the executor provides."""
        if self.kind is not MountKind.FILE or not isinstance(self.source, Slot):
            raise ValueError(f"{self.target} is not a file the executor provides")
        return f"{self.source.value}/{self.under}"

    def host_source(self, paths: SandboxPaths) -> str:
        """The source as the host names it (slots filled in from paths)."""
        if isinstance(self.source, Slot):
            base = paths.of(self.source)
            return str(base / self.under if self.under else base)
        return self.source or ""

    def report(self) -> dict[str, Any]:
        """The entry for /health: slots shown as <name>, host paths as they are."""
        entry: dict[str, Any] = {"kind": self.kind.value, "target": self.target, "mode": self.mode}
        if isinstance(self.source, Slot):
            entry["source"] = f"<{self.source.value}>" + (f"/{self.under}" if self.under else "")
        elif self.source is not None:
            entry["source"] = self.source
        if self.optional:
            entry["optional"] = True
        if self.size_mib is not None:
            entry["size_mib"] = self.size_mib
        return entry


# --- syscalls ---


class Errno(StrEnum):
    """The errno a refused syscall returns."""

    # Refused by policy: what an unprivileged caller gets for most of these anyway.
    EPERM = "EPERM"
    # "This kernel has no such call": callers fall back (glibc's clone3 to clone, libuv's
    # io_uring to its thread pool, NUMA libraries to their no-NUMA path, file watchers to
    # polling), or the kernel has none indeed.
    ENOSYS = "ENOSYS"


class ArgMatch(StrEnum):
    """When a syscall is refused, by its first argument (all that the filter needs here)."""

    ALWAYS = "always"
    ANY_BIT = "any bit"  # it has any of the bits of values[0] set (clone's flags)
    NONE_OF = "none of"  # its low 32 bits are none of values (personality's persona)
    ONE_OF = "one of"  # its low 32 bits are one of values (socket's domain)


@dataclass(frozen=True)
class SyscallDenial:
    """One syscall the seccomp filter refuses, and the errno the caller then gets."""

    syscall: str
    errno: Errno
    match: ArgMatch = ArgMatch.ALWAYS
    values: tuple[int, ...] = ()

    def report(self) -> dict[str, Any]:
        """The entry for /health."""
        entry: dict[str, Any] = {"syscall": self.syscall, "errno": self.errno.value}
        if self.match is not ArgMatch.ALWAYS:
            entry["when"] = f"first argument: {self.match.value} " + ", ".join(
                f"{value:#x}" for value in self.values
            )
        return entry


@dataclass(frozen=True)
class SyscallPolicy:
    """The seccomp filter: everything allowed but the denials; other architectures killed."""

    denials: tuple[SyscallDenial, ...]
    # Syscall numbers added to Linux after this list was written (451, cachestat, onwards; the
    # numbers are the same on every architecture since 424): refused as an older kernel would.
    unreviewed: range
    unreviewed_errno: Errno

    def report(self) -> dict[str, Any]:
        """The filter for /health: every denied syscall with its errno."""
        return {
            "default": "allow",
            "other_architectures": "killed",
            "denied": [denial.report() for denial in self.denials],
            "denied_numbers": {
                "from": self.unreviewed.start,
                "to": self.unreviewed.stop - 1,
                "errno": self.unreviewed_errno.value,
                "why": "syscalls newer than this policy",
            },
        }


def _deny(errno: Errno, *names: str) -> tuple[SyscallDenial, ...]:
    return tuple(SyscallDenial(name, errno) for name in names)


# Every namespace flag clone() takes: CLONE_NEWTIME (0x80, which clone reads as part of the exit
# signal: harmless to refuse), NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = 0x00000080 | 0x00020000 | 0x7E000000
# The personas Docker's profile allows: PER_LINUX, PER_LINUX32, UNAME26 and both, and the query.
ALLOWED_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
AF_VSOCK = 40

# At least what Docker's default profile refuses to a container without added capabilities
# (moby profiles/seccomp/default.json, x86_64), and more.
DENIED_SYSCALLS: tuple[SyscallDenial, ...] = (
    # Kernel keyrings are not namespaced: keys could pass between sandboxes, or reach the host's.
    *_deny(Errno.EPERM, "add_key", "keyctl", "request_key"),
    # A large kernel attack surface whose operations seccomp cannot see.
    *_deny(Errno.ENOSYS, "io_uring_setup", "io_uring_enter", "io_uring_register"),
    # Kernel attack surface, and observation of the host (perf).
    *_deny(Errno.EPERM, "bpf", "perf_event_open", "userfaultfd"),
    # Code into the kernel, or a new kernel.
    *_deny(
        Errno.EPERM, "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"
    ),
    # Mounts and namespaces are the executor's to make, once, before the code runs.
    *_deny(
        Errno.EPERM,
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsmount",
        "fsconfig",
        "fspick",
        "mount_setattr",
        "unshare",
        "setns",
    ),
    SyscallDenial("clone", Errno.EPERM, ArgMatch.ANY_BIT, (CLONE_NAMESPACE_FLAGS,)),
    # Its flags lie in memory, which a filter cannot read; glibc then uses clone, whose it can.
    SyscallDenial("clone3", Errno.ENOSYS),
    # Other processes' memory and files.
    *_deny(
        Errno.EPERM,
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "kcmp",
        "pidfd_getfd",
    ),
    # Other personas change the address-space layout (ASLR off) or the syscall semantics.
    SyscallDenial("personality", Errno.EPERM, ArgMatch.NONE_OF, ALLOWED_PERSONAS),
    # vsock is not network-namespaced: it would reach the hypervisor and other guests.
    SyscallDenial("socket", Errno.EPERM, ArgMatch.ONE_OF, (AF_VSOCK,)),
    # State of the whole host: accounting, swap, power, kernel log, clocks, quotas, names, tty.
    *_deny(
        Errno.EPERM,
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "quotactl",
        "quotactl_fd",
        "sethostname",
        "setdomainname",
        "vhangup",
    ),
    # Opening files by handle skips the path walk (and so the mount namespace's view).
    SyscallDenial("open_by_handle_at", Errno.EPERM),
    SyscallDenial("name_to_handle_at", Errno.ENOSYS),
    # Raw I/O ports.
    *_deny(Errno.EPERM, "iopl", "ioperm"),
    # NUMA memory policy (CAP_SYS_NICE in Docker's profile).
    *_deny(
        Errno.ENOSYS,
        "mbind",
        "set_mempolicy",
        "get_mempolicy",
        "set_mempolicy_home_node",
        "migrate_pages",
        "move_pages",
    ),
    # Watching the shared read-only runtime would tell one user when another's code reads it
    # (imports pandas, say): a channel between sandboxes.
    *_deny(Errno.ENOSYS, "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch"),
    *_deny(Errno.EPERM, "fanotify_init", "fanotify_mark"),
    # Obsolete, or never implemented: refused as a kernel without them does.
    *_deny(
        Errno.ENOSYS,
        "uselib",
        "vm86",
        "vm86old",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "nfsservctl",
        "lookup_dcookie",
        "_sysctl",
        "sysfs",
        "ustat",
        "afs_syscall",
        "tuxcall",
        "security",
        "vserver",
        "getpmsg",
        "putpmsg",
    ),
)
SYSCALLS = SyscallPolicy(
    denials=DENIED_SYSCALLS, unreviewed=range(451, 1024), unreviewed_errno=Errno.ENOSYS
)
# What the executor itself calls of the denied syscalls, in a container as on a host:
# bubblewrap and the zygote make the sandboxes' namespaces (clone, clone3, unshare), their root
# (mount, umount2, pivot_root) and hostname (sethostname); the executor mounts each workspace's
# tmpfs. The container's seccomp profile (deploy/seccomp-executor.json, `code-exec
# seccomp-profile`) is the sandboxes' policy less these.
EXECUTOR_SYSCALLS = frozenset(
    {"clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "sethostname"}
)


# --- limits ---


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox, and what enforces each."""

    memory_mib: int
    pids: int
    # "cgroup v1" or "cgroup v2": memory and process count for the sandbox as a whole.
    cgroup: str | None
    # RLIMIT_AS of each process, for the languages listed only.
    address_space_mib: int
    address_space_languages: frozenset[Language]
    # RLIMIT_NPROC (counted per host uid): the process limit of root without cgroups.
    nproc: int | None
    file_size_mib: int  # RLIMIT_FSIZE
    open_files: int  # RLIMIT_NOFILE
    core_mib: int  # RLIMIT_CORE
    # The size of the tmpfs holding /home/user and /tmp; None: no total of its own.
    disk_mib: int | None
    shm_mib: int  # the size of the tmpfs of /dev/shm
    # CPU cores a sandbox may use (its cgroup's quota); None: no quota.
    cpus: float | None = None
    # Without a tmpfs of its own, a sandbox's files count against its memory limit (they lie on
    # a shared tmpfs, charged to its cgroup).
    disk_in_memory: bool = False

    def address_space_for(self, language: Language) -> int | None:
        """RLIMIT_AS in MiB for a language's processes, None when it has none."""
        return self.address_space_mib if language in self.address_space_languages else None

    def report(self) -> dict[str, Any]:
        """The limits for /health."""
        return {
            "memory_mib": self.memory_mib,
            "memory_by": self.cgroup or "RLIMIT_AS",
            "address_space_mib": self.address_space_mib,
            "address_space_languages": sorted(lang.value for lang in self.address_space_languages),
            "pids": self.pids if self.cgroup or self.nproc is not None else None,
            "pids_by": self.cgroup or ("RLIMIT_NPROC" if self.nproc is not None else None),
            "file_size_mib": self.file_size_mib,
            "open_files": self.open_files,
            "core_mib": self.core_mib,
            "disk_mib": self.disk_mib,
            "disk_by": "tmpfs"
            if self.disk_mib is not None
            else ("memory limit" if self.disk_in_memory else None),
            "shm_mib": self.shm_mib,
            "cpus": self.cpus,
            "cpus_by": self.cgroup if self.cpus is not None else None,
        }


@dataclass(frozen=True)
class HostFacts:
    """What of the host the policy depends on."""

    is_root: bool  # sandboxes get host uids of their own; RLIMIT_NPROC can count per sandbox
    cgroup_mode: str  # "cgroup v1", "cgroup v2" or "none"
    tmpfs_quota: bool  # each workspace is a tmpfs of the disk limit's size
    cpu_quota: bool = False  # the sandboxes' cgroups have a CPU quota
    # The workspaces lie on a tmpfs (not one per sandbox): with cgroups, a sandbox's files are
    # charged to its memory limit, which is then a bound on its disk too.
    state_on_tmpfs: bool = False


@dataclass(frozen=True)
class SandboxPolicy:
    """The whole isolation contract of a local sandbox (see the module's docstring)."""

    namespaces: tuple[str, ...]
    nested_user_namespaces: bool
    capabilities: tuple[str, ...]  # kept inside the sandbox; the rest are dropped
    syscalls: SyscallPolicy
    uid: int
    gid: int
    own_host_uid: bool  # each sandbox runs as a host uid of its own (else the executor's)
    hostname: str
    mounts: tuple[Mount, ...]
    workdir: str
    environment: Mapping[str, str]
    network: Literal["none"]  # the net namespace's loopback, and nothing else
    # What the egress proxy on that loopback lets runs reach at most (egress.py); level none:
    # no proxy at all.
    egress: NetworkPolicy
    die_with_parent: bool
    new_session: bool
    limits: Limits
    runners: Mapping[Language, tuple[str, ...]]

    def __post_init__(self) -> None:
        # A net namespace of its own is what makes "none" true: it holds a loopback only.
        if "net" not in self.namespaces:
            raise ValueError("a policy without network needs a net namespace of its own")

    @classmethod
    def build(cls, settings: ExecutorSettings, host: HostFacts) -> "SandboxPolicy":
        """The policy of this executor's sandboxes; reads the host's top-level /usr links."""
        cgroup = host.cgroup_mode if host.cgroup_mode != "none" else None
        return cls(
            namespaces=NAMESPACES,
            nested_user_namespaces=False,
            capabilities=(),
            syscalls=SYSCALLS,
            uid=SANDBOX_UID,
            gid=SANDBOX_GID,
            own_host_uid=host.is_root,
            hostname="sandbox",
            mounts=_mounts(),
            workdir=SANDBOX_HOME,
            environment=MappingProxyType(_environment(settings)),
            network="none",
            egress=NetworkPolicy(settings.network, tuple(settings.network_allowlist)),
            die_with_parent=True,
            new_session=True,
            limits=Limits(
                memory_mib=settings.memory_limit_mb,
                pids=settings.pids_limit,
                cgroup=cgroup,
                address_space_mib=settings.memory_limit_mb,
                address_space_languages=ADDRESS_SPACE_LANGUAGES,
                nproc=settings.pids_limit if host.is_root and cgroup is None else None,
                file_size_mib=settings.file_size_limit_mb,
                open_files=settings.open_files_limit,
                core_mib=0,
                disk_mib=settings.disk_limit_mb if host.tmpfs_quota else None,
                shm_mib=SHM_MIB,
                cpus=settings.cpu_limit if host.cpu_quota else None,
                disk_in_memory=not host.tmpfs_quota and cgroup is not None and host.state_on_tmpfs,
            ),
            runners=MappingProxyType(_runners()),
        )

    def etc_files(self) -> dict[str, str]:
        """The /etc files the executor writes for its sandboxes, naming the user inside."""
        return {
            "passwd": (
                f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                f"user:x:{self.uid}:{self.gid}:user:{SANDBOX_HOME}:/bin/bash\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            "group": f"root:x:0:\nuser:x:{self.gid}:\nnogroup:x:65534:\n",
            "hosts": f"127.0.0.1 localhost {self.hostname}\n::1 localhost\n",
            "hostname": f"{self.hostname}\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        }

    def file_contents(self, runners_dir: Path = RUNNERS_DIR) -> dict[str, bytes]:
        """The content of every FILE entry, by its content_key (reads the runners: blocking)."""
        etc = self.etc_files()
        contents: dict[str, bytes] = {}
        for mount in self.mounts:
            if mount.kind is not MountKind.FILE:
                continue
            if mount.source is Slot.ETC:
                contents[mount.content_key] = etc[mount.under].encode()
            elif mount.source is Slot.RUNNERS:
                contents[mount.content_key] = (runners_dir / mount.under).read_bytes()
        return contents

    def report(self) -> dict[str, Any]:
        """The policy as /health shows it (JSON-able; the executor's own paths named by slot)."""
        return {
            "namespaces": list(self.namespaces),
            "nested_user_namespaces": self.nested_user_namespaces,
            "capabilities": list(self.capabilities),
            "syscalls": self.syscalls.report(),
            "uid": self.uid,
            "gid": self.gid,
            "host_uid": "one per sandbox" if self.own_host_uid else "the executor's",
            "hostname": self.hostname,
            "mounts": [mount.report() for mount in self.mounts],
            "workdir": self.workdir,
            "environment": sorted(self.environment),
            "network": self.network,
            "egress": self.egress.report(),
            "die_with_parent": self.die_with_parent,
            "new_session": self.new_session,
            "limits": self.limits.report(),
        }


def _merged_usr() -> list[Mount]:
    # Where /bin, /lib, ... are links into /usr (merged /usr) the sandbox gets the same links;
    # where they are directories, read-only binds of them.
    mounts: list[Mount] = []
    for name in _MERGED_USR_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            mounts.append(Mount(MountKind.SYMLINK, f"/{name}", os.readlink(host)))
        elif host.is_dir():
            mounts.append(Mount(MountKind.BIND, f"/{name}", str(host)))
    return mounts


def _mounts() -> tuple[Mount, ...]:
    return (
        Mount(MountKind.BIND, "/usr", "/usr"),
        # /usr/local holds whatever the host installed by hand; the runtimes do not need it.
        # Read-only: an empty writable tmpfs would be storage outside the disk quota.
        Mount(MountKind.TMPFS, "/usr/local"),
        *_merged_usr(),
        Mount(MountKind.PROC, "/proc"),
        Mount(MountKind.DEV, "/dev"),
        Mount(MountKind.TMPFS, "/dev/shm", writable=True, size_mib=SHM_MIB),
        Mount(MountKind.DIR, "/etc"),
        *(
            Mount(MountKind.BIND, f"/etc/{name}", f"/etc/{name}", optional=True)
            for name in _HOST_ETC_FILES
        ),
        # Files, not binds of the executor's state directory: a bind would show that directory
        # (and the executor's pid in its name) in /proc/self/mountinfo.
        *(Mount(MountKind.FILE, f"/etc/{name}", Slot.ETC, under=name) for name in _OWN_ETC_FILES),
        Mount(MountKind.BIND, str(SANDBOX_RUNTIME), Slot.RUNTIME),
        *(
            Mount(MountKind.FILE, f"{SANDBOX_RUNNERS}/{name}", Slot.RUNNERS, under=name)
            for name in RUNNER_FILES
        ),
        Mount(MountKind.BIND, SANDBOX_HOME, Slot.HOME, writable=True),
        Mount(MountKind.BIND, "/tmp", Slot.TMP, writable=True),
        # Everything not mounted writable above (/, /etc, /opt, ...) becomes read-only. The
        # remount is not recursive: what is mounted below / keeps its own mode.
        Mount(MountKind.REMOUNT_RO, "/"),
    )


def _environment(settings: ExecutorSettings) -> dict[str, str]:
    environment = {
        "PATH": f"{SANDBOX_RUNTIME / 'python' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_HOME,
        "USER": "user",
        "LOGNAME": "user",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        # glibc reserves 64 MiB of address space per malloc arena and thread; with the
        # address-space limit that would make a few threads exhaust it.
        "MALLOC_ARENA_MAX": "2",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "module://code_exec_mpl_backend",
        "PYTHONPATH": f"{SANDBOX_RUNNERS}/pythonpath",
        "NODE_PATH": f"{SANDBOX_RUNNERS}/nodepath",  # require('tools') (code mode)
        "MPLCONFIGDIR": "/tmp/.config/matplotlib",
    }
    if settings.network is not Network.NONE:
        environment.update(_egress_environment(settings.runtime_dir))
    return environment


# Where pip installs what a run asks for: the sandbox's own home (the runtime is read-only).
# python_runner.py puts its site-packages on sys.path; PYTHONPATH gives it to other Pythons.
PACKAGES_PREFIX = f"{SANDBOX_HOME}/.local"


def python_packages(runtime_dir: Path) -> str:
    """The site-packages pip --prefix fills in the sandbox, for the runtime's Python version."""
    versions = sorted(path.name for path in (runtime_dir / "python" / "lib").glob("python3.*"))
    return f"{PACKAGES_PREFIX}/lib/{versions[-1] if versions else 'python3'}/site-packages"


def _egress_environment(runtime_dir: Path) -> dict[str, str]:
    """pip, npm and HTTP clients pointed at the egress proxy (egress.py) and its mirror."""
    environment = dict.fromkeys(
        ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), PROXY_URL
    )
    environment.update(
        {
            # The sandbox's own servers are reached directly, the mirror too.
            "NO_PROXY": "localhost,127.0.0.1,::1",
            "no_proxy": "localhost,127.0.0.1,::1",
            "PIP_INDEX_URL": f"{PROXY_URL}/pypi/simple/",
            "PIP_PREFIX": PACKAGES_PREFIX,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_CACHE_DIR": "1",  # the executor caches; a copy here would fill the disk
            "PIP_ROOT_USER_ACTION": "ignore",
            "PYTHONPATH": f"{SANDBOX_RUNNERS}/pythonpath:{python_packages(runtime_dir)}",
            "npm_config_registry": f"{PROXY_URL}/npm/",
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
            "npm_config_cache": "/tmp/.npm",
        }
    )
    return environment


def _runners() -> dict[Language, tuple[str, ...]]:
    python = str(SANDBOX_RUNTIME / "python" / "bin" / "python")
    runner = f"{SANDBOX_RUNNERS}/python_runner.py"
    return {
        Language.PYTHON: (python, "-I", runner, "python"),
        Language.C: ("/usr/bin/python3", "-I", runner, "c"),
        Language.BASH: ("/bin/bash", "--noprofile", "--norc", f"{SANDBOX_RUNNERS}/bash_runner.sh"),
        Language.JAVASCRIPT: ("/usr/bin/node", f"{SANDBOX_RUNNERS}/node_runner.js"),
    }
