"""The sandbox policy: all that a local sandbox is and may do, as one frozen data object.

Built once from the settings and a few facts of the host, then rendered, never re-decided:
bwrap.py turns it into bubblewrap's arguments, launcher.py into the command that applies its
limits and starts bubblewrap, and report() into what /health shows (nsjail's config.proto is
the model: the policy says what, one renderer per mechanism says how).

The contract:
- Namespaces: user, pid, net, ipc, uts, mount and cgroup, all new; no user namespace may be
  made inside; every capability dropped; uid and gid 1000 inside, hostname "sandbox".
- Files: /usr, the runtime, the runners and a few /etc files read-only; /home/user and /tmp
  writable, the workspace (with the disk quota, when there is one); a fresh /proc and /dev; an
  empty tmpfs over /usr/local; then / remounted read-only. Nothing else of the host's. Besides
  the workspace, only /usr/local, /dev and /proc can be written: in memory, never the host's.
- Network: none but the sandbox's own loopback. Environment: the policy's; none of the executor's.
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

from executor.config import ExecutorSettings
from schemas.languages import Language

RUNNERS_DIR = Path(__file__).resolve().parent / "runners"
SANDBOX_RUNNERS = "/opt/code-exec/runners"
# Fixed, so that no host path of the runtime (which may lie under /tmp) is shadowed or shown.
SANDBOX_RUNTIME = Path("/opt/code-exec/runtime")
SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_HOME = "/home/user"

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
_MERGED_USR_DIRS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")


class MountKind(StrEnum):
    """How one path of the sandbox is made."""

    BIND = "bind"  # a host path, read-only unless the entry says writable
    SYMLINK = "symlink"  # a symbolic link in the (read-only) root
    DIR = "dir"  # an empty directory in the (read-only) root
    TMPFS = "tmpfs"  # a fresh, empty, writable tmpfs
    PROC = "proc"  # the pid namespace's own /proc
    DEV = "dev"  # a minimal /dev (null, zero, full, random, urandom, tty, pts, shm) on a tmpfs
    REMOUNT_RO = "remount-ro"  # make what is mounted at the target read-only (not recursive)


class Slot(StrEnum):
    """A host path of the executor's own, named in the policy and given when it is rendered.

    Per sandbox or per executor; and /health, which anyone may read, shows the name, not the path.
    """

    HOME = "home"  # the sandbox's workspace home
    TMP = "tmp"  # the sandbox's workspace tmp
    RUNTIME = "runtime"  # the sandbox runtime (settings.runtime_dir)
    ETC = "etc"  # the executor's directory of written /etc files
    RUNNERS = "runners"  # the runners of this installation


@dataclass(frozen=True)
class SandboxPaths:
    """The host paths of the slots, for one sandbox."""

    home: Path
    tmp: Path
    runtime: Path
    etc: Path
    runners: Path = RUNNERS_DIR

    def of(self, slot: Slot) -> Path:
        """The host path of a slot."""
        match slot:
            case Slot.HOME:
                return self.home
            case Slot.TMP:
                return self.tmp
            case Slot.RUNTIME:
                return self.runtime
            case Slot.ETC:
                return self.etc
            case Slot.RUNNERS:
                return self.runners


@dataclass(frozen=True)
class Mount:
    """One entry of the sandbox's filesystem; entries apply in the policy's order."""

    kind: MountKind
    target: str
    # BIND: a host path or a slot (with `under`, a path below the slot); SYMLINK: the link's text.
    source: str | Slot | None = None
    under: str = ""
    writable: bool = False  # BIND only; the other kinds are what their kind makes them
    optional: bool = False  # BIND only: skipped when the host has no such source

    @property
    def mode(self) -> Literal["ro", "rw"]:
        """Whether the sandbox's user may write there (file permissions aside)."""
        if self.kind is MountKind.BIND:
            return "rw" if self.writable else "ro"
        return "rw" if self.kind in (MountKind.TMPFS, MountKind.PROC, MountKind.DEV) else "ro"

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
        return entry


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
    # The size of the tmpfs holding /home/user and /tmp; None: no total, RLIMIT_FSIZE only.
    disk_mib: int | None

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
            "disk_by": "tmpfs" if self.disk_mib is not None else None,
        }


@dataclass(frozen=True)
class HostFacts:
    """What of the host the policy depends on."""

    is_root: bool  # sandboxes get host uids of their own; RLIMIT_NPROC can count per sandbox
    cgroup_mode: str  # "cgroup v1", "cgroup v2" or "none"
    tmpfs_quota: bool  # each workspace is a tmpfs of the disk limit's size


@dataclass(frozen=True)
class SandboxPolicy:
    """The whole isolation contract of a local sandbox (see the module's docstring)."""

    namespaces: tuple[str, ...]
    nested_user_namespaces: bool
    capabilities: tuple[str, ...]  # kept inside the sandbox; the rest are dropped
    uid: int
    gid: int
    own_host_uid: bool  # each sandbox runs as a host uid of its own (else the executor's)
    hostname: str
    mounts: tuple[Mount, ...]
    workdir: str
    environment: Mapping[str, str]
    network: Literal["none"]  # the net namespace's loopback, and nothing else
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
            uid=SANDBOX_UID,
            gid=SANDBOX_GID,
            own_host_uid=host.is_root,
            hostname="sandbox",
            mounts=_mounts(),
            workdir=SANDBOX_HOME,
            environment=MappingProxyType(_environment()),
            network="none",
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

    def report(self) -> dict[str, Any]:
        """The policy as /health shows it (JSON-able; the executor's own paths named by slot)."""
        return {
            "namespaces": list(self.namespaces),
            "nested_user_namespaces": self.nested_user_namespaces,
            "capabilities": list(self.capabilities),
            "uid": self.uid,
            "gid": self.gid,
            "host_uid": "one per sandbox" if self.own_host_uid else "the executor's",
            "hostname": self.hostname,
            "mounts": [mount.report() for mount in self.mounts],
            "workdir": self.workdir,
            "environment": sorted(self.environment),
            "network": self.network,
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
        Mount(MountKind.TMPFS, "/usr/local"),
        *_merged_usr(),
        Mount(MountKind.PROC, "/proc"),
        Mount(MountKind.DEV, "/dev"),
        Mount(MountKind.DIR, "/etc"),
        *(
            Mount(MountKind.BIND, f"/etc/{name}", f"/etc/{name}", optional=True)
            for name in _HOST_ETC_FILES
        ),
        *(Mount(MountKind.BIND, f"/etc/{name}", Slot.ETC, under=name) for name in _OWN_ETC_FILES),
        Mount(MountKind.BIND, str(SANDBOX_RUNTIME), Slot.RUNTIME),
        Mount(MountKind.BIND, SANDBOX_RUNNERS, Slot.RUNNERS),
        Mount(MountKind.BIND, SANDBOX_HOME, Slot.HOME, writable=True),
        Mount(MountKind.BIND, "/tmp", Slot.TMP, writable=True),
        # Everything not mounted writable above (/, /etc, /opt, ...) becomes read-only. The
        # remount is not recursive: the tmpfs of /usr/local and /dev stay writable.
        Mount(MountKind.REMOUNT_RO, "/"),
    )


def _environment() -> dict[str, str]:
    return {
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
        "MPLCONFIGDIR": "/tmp/.config/matplotlib",
    }


def _runners() -> dict[Language, tuple[str, ...]]:
    python = str(SANDBOX_RUNTIME / "python" / "bin" / "python")
    runner = f"{SANDBOX_RUNNERS}/python_runner.py"
    return {
        Language.PYTHON: (python, "-I", runner, "python"),
        Language.C: ("/usr/bin/python3", "-I", runner, "c"),
        Language.BASH: ("/bin/bash", "--noprofile", "--norc", f"{SANDBOX_RUNNERS}/bash_runner.sh"),
        Language.JAVASCRIPT: ("/usr/bin/node", f"{SANDBOX_RUNNERS}/node_runner.js"),
    }
