"""The local backend: bubblewrap sandboxes on this machine, no account needed."""

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executor.backends.local.bwrap import SANDBOX_RUNTIME, write_etc
from executor.backends.local.limits import CgroupHandle, CgroupLimiter
from executor.backends.local.sandbox import LocalSandbox
from executor.backends.local.workspace import Workspace, tmpfs_supported
from executor.config import ExecutorSettings
from executor.errors import SandboxFailure
from schemas.languages import Language

log = logging.getLogger(__name__)

# Runs in the child before bubblewrap: control pipes to fds 3 and 4 (the control input
# arrives as stdin), join the sandbox's cgroups, set rlimits, then exec the rest of argv.
_PROLOGUE = r"""
exec 3<&0 4>&"$1" 0</dev/null && eval "exec $1>&-"
ulimit -f "$2" -n "$3" -c 0
[ -n "$4" ] && ulimit -v "$4"
[ -n "$5" ] && ulimit -u "$5"
n=$6; shift 6
while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n - 1)); done
exec "$@"
"""
_libc = ctypes.CDLL(None, use_errno=True)
_MIB = 1024 * 1024


def _pid_alive(instance: str) -> bool:
    if not instance.startswith("exec-"):
        return True  # not ours to judge
    try:
        os.kill(int(instance.removeprefix("exec-")), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class LocalBackend:
    """Starts bubblewrap sandboxes with cgroup or rlimit limits."""

    name = "local"

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.instance = f"exec-{os.getpid()}"
        self.state_dir = settings.state_dir / self.instance
        self.etc_dir = self.state_dir / "etc"
        self.cgroups = CgroupLimiter(
            settings.memory_limit_mb * _MIB, settings.pids_limit, self.instance
        )
        self.is_root = os.geteuid() == 0
        self.use_tmpfs = False
        self._free_uids: list[int] = []
        self._live: dict[str, LocalSandbox] = {}
        self._counter = 0
        self._bwrap_version = ""
        self._font_caches: list[Path] = []

    async def start(self) -> None:
        """Check the host, clean what a dead executor left, and say which limits apply."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxFailure(
                "bubblewrap is not installed: run `make setup` (or apt-get install bubblewrap)"
            )
        version = await asyncio.to_thread(
            subprocess.run, [bwrap, "--version"], capture_output=True, text=True, check=False
        )
        self._bwrap_version = version.stdout.strip()
        python = self.settings.runtime_dir / "python" / "bin" / "python"
        if not python.exists():
            raise SandboxFailure(
                f"the sandbox Python runtime is missing at {python}: run `make setup`, "
                "or set CODE_EXEC_RUNTIME_DIR to where it was built"
            )
        self._cleanup_stale()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o711)
        state_base = self.settings.state_dir
        if state_base.stat().st_uid == os.geteuid():
            os.chmod(state_base, state_base.stat().st_mode | 0o011)
        if self.is_root:
            # Sandboxes run as other uids: bubblewrap must be able to walk to what they mount.
            for needed in (self.state_dir, self.settings.runtime_dir):
                for directory in (needed, *needed.parents):
                    if not directory.stat().st_mode & 0o001:
                        raise SandboxFailure(
                            f"{directory} is not traversable by sandbox users, so {needed} "
                            "cannot be mounted: chmod o+x it, or set CODE_EXEC_STATE_DIR / "
                            "CODE_EXEC_RUNTIME_DIR to a path whose parents are"
                        )
        write_etc(self.etc_dir)
        self._font_caches = self._relocate_font_caches()
        self.use_tmpfs = self.is_root and tmpfs_supported(self.state_dir)
        if self.is_root:
            start = random.randrange(self.settings.sandbox_uid_count)
            base, count = self.settings.sandbox_uid_base, self.settings.sandbox_uid_count
            self._free_uids = [base + (start + i) % count for i in range(count)]
        health = self.health()
        log.info(
            "local backend: %s; memory limit %s, process limit %s, disk limit %s, uid %s",
            health["isolation"],
            health["memory_limit"],
            health["process_limit"],
            health["disk_limit"],
            health["sandbox_uid"],
        )

    def _cleanup_stale(self) -> None:
        removed = self.cgroups.cleanup_stale(_pid_alive)
        base = self.settings.state_dir
        if base.is_dir():
            mounts = Path("/proc/self/mounts").read_text().splitlines()
            for entry in base.iterdir():
                if entry.name == self.instance or _pid_alive(entry.name):
                    continue
                for line in mounts:
                    target = line.split()[1]
                    if target.startswith(str(entry) + "/"):
                        _libc.umount2(target.encode(), 2)
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        if removed:
            log.warning("cleaned %d sandboxes left by an executor that died", removed)

    def health(self) -> dict[str, Any]:
        """What isolation and limits are in force."""
        mib = self.settings.memory_limit_mb
        return {
            "backend": self.name,
            "isolation": f"{self._bwrap_version or 'bubblewrap'}: user, pid, net, ipc, uts, "
            "mount and cgroup namespaces; no network",
            "memory_limit": f"{mib} MiB ({self.cgroups.mode})"
            if self.cgroups.available
            else f"{mib} MiB (RLIMIT_AS, Python and C only)",
            "process_limit": f"{self.settings.pids_limit} ({self.cgroups.mode})"
            if self.cgroups.available
            else f"{self.settings.pids_limit} (RLIMIT_NPROC per sandbox uid)"
            if self.is_root
            else "none (no cgroups and not root)",
            "disk_limit": f"{self.settings.disk_limit_mb} MiB (tmpfs)"
            if self.use_tmpfs
            else f"{self.settings.file_size_limit_mb} MiB per file (RLIMIT_FSIZE); no total",
            "sandbox_uid": "one host uid per sandbox" if self.is_root else "the executor's uid",
            "live_sandboxes": len(self._live),
        }

    def _allocate_uid(self) -> tuple[int, int]:
        if not self.is_root:
            return os.getuid(), os.getgid()
        if not self._free_uids:
            raise SandboxFailure("no free sandbox uid; raise CODE_EXEC_SANDBOX_UID_COUNT")
        uid = self._free_uids.pop(0)
        return uid, uid

    def release(self, sandbox: LocalSandbox) -> None:
        """Forget a closed sandbox and recycle its uid."""
        self._live.pop(sandbox.id, None)
        if self.is_root:
            self._free_uids.append(sandbox.workspace.uid)

    def _launcher(
        self, language: Language, uid: int, gid: int
    ) -> Callable[[int, CgroupHandle | None], list[str]]:
        """How to start bubblewrap with limits applied: a command prefix, not a preexec_fn.

        A preexec_fn would force a full fork() of the executor and run Python in the child,
        blocking the event loop for tens of milliseconds per sandbox; a small bash prologue
        keeps the spawn on the vfork path and does the child-side work in the child.
        """
        settings = self.settings
        memory_kib = settings.memory_limit_mb * 1024
        # V8 reserves far more address space than it uses: no RLIMIT_AS for Node.js.
        # For Python and C it applies even with cgroups: a MemoryError beats an OOM kill.
        address_space = str(memory_kib) if language in (Language.PYTHON, Language.C) else ""
        nproc = str(settings.pids_limit) if (self.is_root and not self.cgroups.available) else ""
        identity = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"] if self.is_root else []

        def prefix(control_out: int, cgroup: CgroupHandle | None) -> list[str]:
            procs = cgroup.procs_files if cgroup else []
            return [
                "/bin/bash",
                "--noprofile",
                "--norc",
                "-c",
                _PROLOGUE,
                "code-exec-launch",
                str(control_out),
                str(settings.file_size_limit_mb * 1024),
                str(settings.open_files_limit),
                address_space,
                nproc,
                str(len(procs)),
                *procs,
                # setpriv applies the death signal after changing uid (which would clear it).
                "setpriv",
                *identity,
                "--pdeathsig",
                "KILL",
                "--",
            ]

        return prefix

    def _relocate_font_caches(self) -> list[Path]:
        """matplotlib's prebuilt font cache, with the runtime's paths as the sandbox sees them."""
        built = self.settings.runtime_dir / "mplconfig"
        relocated = []
        for cache in sorted(built.glob("fontlist-*.json")) if built.is_dir() else []:
            text = cache.read_text().replace(
                str(self.settings.runtime_dir.resolve()), str(SANDBOX_RUNTIME)
            )
            target = self.state_dir / cache.name
            target.write_text(text)
            relocated.append(target)
        return relocated

    def _prepare_workspace(self, workspace: Workspace, language: Language) -> None:
        workspace.create(self.settings.disk_limit_mb * _MIB if self.use_tmpfs else None)
        if language is Language.PYTHON:
            for cache in self._font_caches:
                workspace.copy_in(cache, f".config/matplotlib/{cache.name}")

    async def create(self, language: Language) -> LocalSandbox:
        """Start a sandbox for language; returns once its runner is ready."""
        self._counter += 1
        sandbox_id = f"sb{self._counter}-{os.urandom(4).hex()}"
        uid, gid = self._allocate_uid()
        workspace = Workspace(self.state_dir / sandbox_id, uid, gid)
        try:
            # Mounting can wait on the kernel tearing down another sandbox's namespaces:
            # off the event loop, so that it never delays a run in progress.
            await asyncio.to_thread(self._prepare_workspace, workspace, language)
        except BaseException:
            await asyncio.to_thread(workspace.destroy)
            if self.is_root:
                self._free_uids.append(uid)
            raise
        sandbox = LocalSandbox(
            self, language, sandbox_id, workspace, self._launcher(language, uid, gid)
        )
        self._live[sandbox_id] = sandbox
        try:
            await sandbox.start()
        except BaseException:
            await sandbox.close()
            raise
        return sandbox

    async def close(self) -> None:
        """Close every sandbox still open and remove this executor's state."""
        for sandbox in list(self._live.values()):
            with contextlib.suppress(Exception):
                await sandbox.close()
        self.cgroups.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
