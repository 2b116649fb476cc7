"""The local backend: bubblewrap sandboxes on this machine, no account needed."""

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import TypeVar

from executor.backends.local.egress import EgressConfig
from executor.backends.local.launcher import LAUNCHER, build_launcher
from executor.backends.local.limits import CgroupLimiter, SpareCgroups
from executor.backends.local.mirror import MirrorConfig, PackageMirror
from executor.backends.local.policy import SANDBOX_RUNTIME, HostFacts, SandboxPolicy
from executor.backends.local.runtime import runtime_ready
from executor.backends.local.sandbox import LocalSandbox, RunLimits, SandboxContext
from executor.backends.local.seccomp import compile_filter
from executor.backends.local.workspace import Workspace, on_tmpfs, tmpfs_supported
from executor.backends.local.zygote import (
    ChildContext,
    ZygoteKeeper,
    ZygoteProcess,
    ZygoteSandbox,
    runtime_python,
    zygote_config,
)
from executor.config import ExecutorSettings
from executor.errors import SandboxFailure
from schemas.health import BackendHealth
from schemas.languages import Language
from schemas.network import Network

log = logging.getLogger(__name__)
SandboxT = TypeVar("SandboxT", LocalSandbox, ZygoteSandbox)

_libc = ctypes.CDLL(None, use_errno=True)
_MIB = 1024 * 1024
# --size (of /dev/shm's tmpfs) came with bubblewrap 0.8.
_BWRAP_MIN_VERSION = (0, 8)
# Emptied zygote cgroups kept for reuse: enough for a full pool turning over at once.
_SPARE_CGROUPS = 32


def missing_runtime(runtime_dir: Path) -> str | None:
    """What to do when the sandbox runtime is not at runtime_dir (None when it is there)."""
    if runtime_ready(runtime_dir):
        return None
    return (
        f"the sandbox runtime is missing at {runtime_dir}: build it with `code-exec setup` "
        "(`make setup` in a checkout), or set CODE_EXEC_RUNTIME_DIR to where it was built"
    )


def _version_of(text: str) -> tuple[int, ...]:
    """(0, 8, 0) of "bubblewrap 0.8.0"; () when it says no version."""
    words = text.split()
    try:
        return tuple(int(part) for part in words[-1].split(".")) if words else ()
    except ValueError:
        return ()


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
        self.cgroups = CgroupLimiter(
            settings.memory_limit_mb * _MIB,
            settings.pids_limit,
            self.instance,
            cpus=settings.cpu_limit,
        )
        # Emptied cgroups of zygote sandboxes, kept for the next ones.
        self.spare_cgroups = SpareCgroups(self.cgroups, keep=_SPARE_CGROUPS)
        self.is_root = os.geteuid() == 0
        self.use_tmpfs = False
        self.state_on_tmpfs = False
        self._free_uids: list[int] = []
        self._live: dict[str, LocalSandbox | ZygoteSandbox] = {}
        self._counter = 0
        self._bwrap_version = ""
        self._font_caches: list[Path] = []
        self.policy = self._build_policy()
        # Made by start(): what every sandbox gets handed, prepared once.
        self._files: dict[str, bytes] = {}
        self._seccomp = b""
        self._launcher: Path | None = None
        self._zygote: ZygoteKeeper | None = None
        self._zygote_error: str | None = None
        self._mirror: PackageMirror | None = None
        self._egress: EgressConfig | None = None

    def _build_policy(self) -> SandboxPolicy:
        host = HostFacts(
            is_root=self.is_root,
            cgroup_mode=self.cgroups.mode,
            tmpfs_quota=self.use_tmpfs,
            cpu_quota=self.cgroups.cpu_quota,
            state_on_tmpfs=self.state_on_tmpfs,
        )
        return SandboxPolicy.build(self.settings, host)

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
        if _version_of(self._bwrap_version) < _BWRAP_MIN_VERSION:
            raise SandboxFailure(
                f"{self._bwrap_version or 'bubblewrap'} is too old: 0.8 or newer is needed "
                "(Debian 12 has it); upgrade the bubblewrap package"
            )
        missing = missing_runtime(self.settings.runtime_dir)
        if missing is not None:
            raise SandboxFailure(missing)
        if not self.cgroups.available and not self.is_root:
            if not self.settings.allow_unlimited_processes:
                raise SandboxFailure(
                    "no sandbox could get a process or memory limit here: there is no cgroup "
                    "this user may manage, and it is not root. Run the executor in a cgroup v2 "
                    "group delegated to it (`systemd-run --user --scope -p Delegate=yes "
                    "code-exec ...`, or Delegate=yes in its unit), or as root; or set "
                    "CODE_EXEC_ALLOW_UNLIMITED_PROCESSES=true to run without them (a fork bomb "
                    "can then take the host down)"
                )
            log.warning(
                "no process or memory limit for sandboxes (CODE_EXEC_ALLOW_UNLIMITED_PROCESSES)"
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
        self._font_caches = self._relocate_font_caches()
        self.use_tmpfs = self.is_root and tmpfs_supported(self.state_dir)
        self.state_on_tmpfs = on_tmpfs(self.state_dir)
        self.policy = self._build_policy()
        self._files = await asyncio.to_thread(self.policy.file_contents)
        # Compiled once; each sandbox gets the same program on a descriptor of its own.
        self._seccomp = await asyncio.to_thread(compile_filter, self.policy.syscalls)
        # Kept in the state dir every executor of this user shares, when only this user can
        # write there (else in this executor's own).
        owner = state_base.stat()
        shared = owner.st_uid == os.geteuid() and not owner.st_mode & 0o022
        self._launcher = await asyncio.to_thread(
            build_launcher, state_base if shared else self.state_dir
        )
        self._start_egress()
        if self.is_root:
            start = random.randrange(self.settings.sandbox_uid_count)
            base, count = self.settings.sandbox_uid_base, self.settings.sandbox_uid_count
            self._free_uids = [base + (start + i) % count for i in range(count)]
        await self._start_zygote()
        health = self.health()
        log.info(
            "local backend: %s; memory limit %s, process limit %s, disk limit %s, uid %s",
            getattr(health, "isolation", ""),
            getattr(health, "memory_limit", ""),
            getattr(health, "process_limit", ""),
            getattr(health, "disk_limit", ""),
            getattr(health, "sandbox_uid", ""),
        )

    def _start_egress(self) -> None:
        """The egress proxy's shared parts, when the settings allow sandboxes any network."""
        settings = self.settings
        if self.policy.egress.level is Network.NONE:
            if settings.upstream_config is not None:
                # Code mode needs the channel (the listener on the sandbox's loopback) even
                # where no network is allowed: only /tools/ is served then.
                self._egress = EgressConfig(
                    ceiling=self.policy.egress,
                    mirror=None,
                    run_bytes=settings.egress_run_mb * _MIB,
                    head_timeout_s=settings.header_timeout_s,
                )
            return
        self._mirror = PackageMirror(
            MirrorConfig(
                pypi_url=settings.pypi_index_url,
                npm_url=settings.npm_registry_url,
                cache_dir=settings.state_dir / "package-cache",
                cache_bytes=settings.package_cache_mb * _MIB,
                page_ttl_s=settings.package_index_ttl_s,
                max_file_bytes=settings.package_max_file_mb * _MIB,
            )
        )
        self._egress = EgressConfig(
            ceiling=self.policy.egress,
            mirror=self._mirror.serve,
            run_bytes=settings.egress_run_mb * _MIB,
            head_timeout_s=settings.header_timeout_s,
        )

    def _run_limits(self) -> RunLimits:
        return RunLimits(
            self.cgroups,
            self.settings.max_output_bytes,
            self.settings.interrupt_grace_s,
            self.policy.limits.memory_mib,
            egress=self._egress,
        )

    async def _start_zygote(self) -> None:
        """The zygote for stateless Python runs, where the settings and the host allow it."""
        mode = self.settings.zygote
        if mode == "off":
            self._zygote_error = "off (CODE_EXEC_ZYGOTE=off)"
            return
        why_not = None
        if not self.is_root:
            why_not = "needs root (to map its user namespace and give each sandbox a uid)"
        elif not self.cgroups.available:
            why_not = "needs cgroups (the memory and process limits of each sandbox)"
        if why_not is None:
            keeper = ZygoteKeeper(self._make_zygote)
            try:
                await keeper.start()
            except SandboxFailure as exc:
                why_not = exc.message
            else:
                self._zygote = keeper
                return
        self._zygote_error = why_not
        if mode == "on":
            raise SandboxFailure(f"the zygote cannot run here: {why_not} (CODE_EXEC_ZYGOTE=on)")
        log.warning("no zygote: stateless Python runs use bubblewrap sandboxes (%s)", why_not)

    def _make_zygote(self) -> ZygoteProcess:
        settings = self.settings
        tmp_files = {
            f".config/matplotlib/{cache.name}": cache.read_bytes() for cache in self._font_caches
        }
        config = zygote_config(
            self.policy, self._files, self._seccomp, settings.runtime_dir, tmp_files
        )
        root_uid = settings.sandbox_uid_base - 1
        return ZygoteProcess(
            runtime_python(settings.runtime_dir),
            config,
            root_uid=root_uid,
            uid_base=settings.sandbox_uid_base,
            uid_count=settings.sandbox_uid_count,
            cgroup=self.cgroups.clone_into(root_uid),
        )

    def separate_stateless(self, language: Language) -> bool:
        """Stateless Python sandboxes come from the zygote, when there is one."""
        return language is Language.PYTHON and self._zygote is not None

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

    def health(self) -> BackendHealth:
        """What isolation and limits are in force: the policy, and the same in a few words."""
        policy = self.policy
        limits = policy.limits
        *namespaces, last = policy.namespaces
        if limits.cgroup:
            memory = f"{limits.memory_mib} MiB ({limits.cgroup})"
            processes = f"{limits.pids} ({limits.cgroup})"
        else:
            memory = f"{limits.memory_mib} MiB (RLIMIT_AS, Python and C only)"
            processes = (
                f"{limits.nproc} (RLIMIT_NPROC per sandbox uid)"
                if limits.nproc is not None
                else "none (no cgroups and not root; CODE_EXEC_ALLOW_UNLIMITED_PROCESSES)"
            )
        if limits.disk_mib is not None:
            disk = f"{limits.disk_mib} MiB (tmpfs)"
        elif limits.disk_in_memory:
            disk = (
                f"counted in the memory limit, {limits.memory_mib} MiB (the state dir is a "
                f"tmpfs, charged to each sandbox's cgroup); {limits.file_size_mib} MiB per file"
            )
        else:
            disk = (
                f"{limits.file_size_mib} MiB per file (RLIMIT_FSIZE); no total: put "
                "CODE_EXEC_STATE_DIR on a tmpfs to count a sandbox's files in its memory limit"
            )
        if limits.cpus is not None:
            cores = "core" if limits.cpus == 1 else "cores"
            cpu = f"{limits.cpus:g} {cores} per sandbox, equal weights ({limits.cgroup})"
        elif self.settings.cpu_limit:
            cpu = "none (no cgroup cpu controller for the sandboxes)"
        else:
            cpu = "none (CODE_EXEC_CPU_LIMIT=0)"
        bwrap = self._bwrap_version or "bubblewrap"
        uid = "one host uid per sandbox" if policy.own_host_uid else "the executor's uid"
        return BackendHealth.model_validate(
            {
                "backend": self.name,
                "isolation": f"{bwrap}: {', '.join(namespaces)} and {last} namespaces; "
                f"seccomp ({len(policy.syscalls.denials)} syscalls refused); no network interface",
                "network": self._network(),
                "memory_limit": memory,
                "process_limit": processes,
                "cpu_limit": cpu,
                "disk_limit": disk,
                "sandbox_uid": uid,
                "live_sandboxes": len(self._live),
                "launcher": LAUNCHER if self._launcher is not None else "bash and setpriv",
                "stateless_python": self._stateless_python(),
                "policy": policy.report(),
            }
        )

    def _network(self) -> str:
        egress = self.policy.egress
        match egress.level:
            case Network.NONE:
                return "none: the sandbox's own loopback only (CODE_EXEC_NETWORK=none)"
            case Network.PACKAGES:
                reach = "the package indexes"
            case Network.ALLOWLIST:
                reach = f"the package indexes and {', '.join(egress.hosts) or 'no other host'}"
        return (
            f"{egress.level.value}: {reach}, through the executor's proxy on each sandbox's "
            f"loopback ({self.settings.egress_run_mb} MiB per run); pip from "
            f"{self.settings.pypi_index_url}, npm from {self.settings.npm_registry_url}"
        )

    def _stateless_python(self) -> str:
        keeper = self._zygote
        if keeper is None:
            return f"bubblewrap sandboxes; no zygote: {self._zygote_error or 'not started'}"
        zygote = keeper.ready
        if zygote is None:
            return "bubblewrap sandboxes while the zygote restarts"
        restarts = f", restarted {keeper.restarts} times" if keeper.restarts else ""
        born = ", born in its cgroup (CLONE_INTO_CGROUP)" if zygote.clones_into_cgroup else ""
        return f"zygote (pid {zygote.pid}{restarts}): a clone per sandbox{born}"

    def _allocate_uid(self) -> tuple[int, int]:
        if not self.is_root:
            return os.getuid(), os.getgid()
        if not self._free_uids:
            raise SandboxFailure("no free sandbox uid; raise CODE_EXEC_SANDBOX_UID_COUNT")
        uid = self._free_uids.pop(0)
        return uid, uid

    def release(self, sandbox: LocalSandbox | ZygoteSandbox) -> None:
        """Forget a closed sandbox and recycle its uid."""
        self._live.pop(sandbox.id, None)
        if self.is_root:
            uid = sandbox.uid if isinstance(sandbox, ZygoteSandbox) else sandbox.workspace.uid
            self._free_uids.append(uid)

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

    async def create(
        self, language: Language, *, stateless: bool = False
    ) -> LocalSandbox | ZygoteSandbox:
        """Start a sandbox for language; returns once its runner is ready.

        A stateless Python sandbox comes from the zygote while it runs (else bubblewrap).
        """
        if not self._seccomp:
            raise SandboxFailure("the local backend is not started: call start() first")
        zygote = self._zygote.ready if self._zygote is not None else None
        if stateless and language is Language.PYTHON and zygote is not None:
            try:
                return await self._fork(zygote)
            except SandboxFailure as exc:
                if zygote.alive:
                    raise
                # It died under this request, before its keeper noticed: not this caller's
                # problem, a bubblewrap sandbox serves as well.
                log.warning("the zygote died (%s); a bubblewrap sandbox instead", exc.message)
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
        return await self._started(
            LocalSandbox(self._sandbox_context(), language, sandbox_id, workspace)
        )

    async def _started(self, sandbox: SandboxT) -> SandboxT:
        """The sandbox, counted live and started (closed again if it does not start)."""
        self._live[sandbox.id] = sandbox
        try:
            await sandbox.start()
        except BaseException:
            await sandbox.close()
            raise
        return sandbox

    async def _fork(self, zygote: ZygoteProcess) -> ZygoteSandbox:
        self._counter += 1
        uid, gid = self._allocate_uid()
        context = ChildContext(
            zygote=zygote,
            limits=self._run_limits(),
            release=self.release,
            spare_cgroups=self.spare_cgroups,
        )
        sandbox_id = f"zy{self._counter}-{os.urandom(4).hex()}"
        return await self._started(ZygoteSandbox(context, sandbox_id, uid, gid))

    def _sandbox_context(self) -> SandboxContext:
        return SandboxContext(
            policy=self.policy,
            runtime_dir=self.settings.runtime_dir,
            files=self._files,
            seccomp=self._seccomp,
            cgroups=self.cgroups,
            max_output_bytes=self.settings.max_output_bytes,
            interrupt_grace_s=self.settings.interrupt_grace_s,
            release=self.release,
            launcher=self._launcher,
            egress=self._egress,
        )

    async def close(self) -> None:
        """Close every sandbox still open and remove this executor's state."""
        for sandbox in list(self._live.values()):
            with contextlib.suppress(Exception):
                await sandbox.close()
        if self._zygote is not None:
            await self._zygote.close()
        self.spare_cgroups.close()
        self.cgroups.close()
        if self._mirror is not None:
            await self._mirror.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
