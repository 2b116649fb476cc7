"""The local backend: bubblewrap sandboxes on this machine, no account needed."""

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executor.backends.local.bwrap import write_etc
from executor.backends.local.limits import CgroupHandle, CgroupLimiter
from executor.backends.local.sandbox import LocalSandbox
from executor.backends.local.workspace import Workspace, tmpfs_supported
from executor.config import ExecutorSettings
from executor.errors import SandboxFailure
from schemas.languages import Language

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
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
        write_etc(self.etc_dir)
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

    def _make_preexec(
        self, language: Language, uid: int, gid: int
    ) -> Callable[[int, int, CgroupHandle | None], Callable[[], None]]:
        settings = self.settings
        drop_privileges = self.is_root
        memory = settings.memory_limit_mb * _MIB
        # V8 reserves far more address space than it uses: no RLIMIT_AS for Node.js.
        limit_address_space = language in (Language.PYTHON, Language.C)
        nproc = settings.pids_limit if (drop_privileges and not self.cgroups.available) else None

        def factory(
            control_in: int, control_out: int, cgroup: CgroupHandle | None
        ) -> Callable[[], None]:
            procs_files = [p.encode() for p in cgroup.procs_files] if cgroup else []

            def preexec() -> None:
                # Runs in the child between fork and exec: only async-signal-safe-ish calls.
                a = fcntl.fcntl(control_in, fcntl.F_DUPFD, 10)
                b = fcntl.fcntl(control_out, fcntl.F_DUPFD, 10)
                os.dup2(a, 3)
                os.dup2(b, 4)
                os.close(a)
                os.close(b)
                for procs in procs_files:
                    fd = os.open(procs, os.O_WRONLY)
                    os.write(fd, b"0")
                    os.close(fd)
                fsize = settings.file_size_limit_mb * _MIB
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                nofile = settings.open_files_limit
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
                if limit_address_space:
                    # Also with cgroups: a MemoryError the code can catch beats an OOM kill.
                    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                if nproc is not None:
                    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
                if drop_privileges:
                    os.setgroups([])
                    os.setgid(gid)
                    os.setuid(uid)
                # After setuid, which clears it: die with the executor.
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

            return preexec

        return factory

    async def create(self, language: Language) -> LocalSandbox:
        """Start a sandbox for language; returns once its runner is ready."""
        self._counter += 1
        sandbox_id = f"sb{self._counter}-{os.urandom(4).hex()}"
        uid, gid = self._allocate_uid()
        workspace = Workspace(self.state_dir / sandbox_id, uid, gid)
        try:
            workspace.create(self.settings.disk_limit_mb * _MIB if self.use_tmpfs else None)
            fonts = self.settings.runtime_dir / "mplconfig"
            if language is Language.PYTHON and fonts.is_dir():
                for cache in fonts.glob("fontlist-*.json"):
                    workspace.copy_in(cache, f".config/matplotlib/{cache.name}")
        except BaseException:
            workspace.destroy()
            if self.is_root:
                self._free_uids.append(uid)
            raise
        sandbox = LocalSandbox(
            self, language, sandbox_id, workspace, self._make_preexec(language, uid, gid)
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
