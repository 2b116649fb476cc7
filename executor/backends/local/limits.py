"""Resource limits of a local sandbox: cgroups (v1 or v2) where the host has them, else rlimits.

A cgroup holds every process of one sandbox, which gives a memory limit the OOM killer enforces,
a process-count limit that keeps a fork bomb inside, a CPU quota (where the host's cgroups have
the cpu controller), a memory reading, and a way to kill all processes at once. Without
cgroups, rlimits on each process are the fallback.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_GROUP_NAME = "code-exec"
# A spare cgroup may still be charged at most this fraction of its memory limit.
_SPARE_USAGE_FRACTION = 16


# The controllers every sandbox's cgroup needs on v2.
_V2_CONTROLLERS = ("memory", "pids")
# The CPU quota's, used where the group above has it (a delegation may leave it out).
_V2_CPU = "cpu"
# The period of the CPU quota, in microseconds (the kernel's default).
_CPU_PERIOD_US = 100_000
# Where the executor's own processes move within a delegated cgroup (see delegated_top).
EXECUTOR_LEAF = "code-exec-executor"
# The zygote's group, beside its sandboxes' groups (see CgroupLimiter.clone_into).
ZYGOTE_LEAF = "zygote"


def _enable(controllers: tuple[str, ...]) -> str:
    return " ".join(f"+{name}" for name in controllers)


def own_cgroup_v2() -> Path:
    """The unified-hierarchy cgroup this process is in, as a path under /sys/fs/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return _CGROUP_ROOT / line[3:].strip().lstrip("/")
    raise OSError("this process is in no cgroup v2 group")


def delegated_top() -> Path:
    """The cgroup this process was started in, set up to hold sandbox groups below it.

    cgroup v2 gives controllers to children only of a group with no process of its own, so
    the processes of that group (the executor, and whatever else its unit started) move to a
    leaf beside the sandboxes, EXECUTOR_LEAF. A process already in such a leaf (an executor
    started by another, or a second backend in one process) uses the leaf's parent. OSError
    when the group is not ours to change (not delegated) or lacks the controllers.
    """
    own = own_cgroup_v2()
    if own.name == EXECUTOR_LEAF:
        return own.parent
    available = (own / "cgroup.controllers").read_text().split()
    missing = [name for name in _V2_CONTROLLERS if name not in available]
    if missing:
        raise OSError(f"{own} has no {' or '.join(missing)} controller to give its children")
    wanted = _wanted_v2(available)
    enabled = (own / "cgroup.subtree_control").read_text().split()
    if not all(name in enabled for name in wanted):
        leaf = own / EXECUTOR_LEAF
        leaf.mkdir(exist_ok=True)
        for pid in (own / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):  # one that exited meanwhile
                (leaf / "cgroup.procs").write_text(pid)
        (own / "cgroup.subtree_control").write_text(_enable(wanted))
    return own


def _wanted_v2(available: list[str]) -> tuple[str, ...]:
    """The controllers to give sandbox groups, of those a group has."""
    return _V2_CONTROLLERS + ((_V2_CPU,) if _V2_CPU in available else ())


def _counters(path: Path) -> dict[str, str]:
    """A cgroup file of `key value` lines."""
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if " " in line)


@dataclass
class CgroupHandle:
    """The cgroup directories of one sandbox (one per controller on v1, one on v2)."""

    dirs: list[Path]
    procs_files: list[str]
    memory_dir: Path | None
    v2: bool


class CgroupLimiter:
    """Creates one cgroup per sandbox under a code-exec parent group."""

    def __init__(self, memory_bytes: int, pids: int, instance: str, cpus: float = 0.0) -> None:
        self.instance = instance
        self.memory_bytes = memory_bytes
        self.pids = pids
        # CPU cores a sandbox may use (0: no quota); `cpu_quota` says whether it is enforced.
        self.cpus = cpus
        self.cpu_quota = False
        # The host uid that may spawn processes into the sandboxes' groups (clone_into).
        self._spawner_uid: int | None = None
        self.mode = "none"
        # On v2: the sandboxes' groups are under a cgroup delegated to the executor.
        self.delegated = False
        self._tops: dict[str, Path] = {}
        self._parents: dict[str, Path] = {}
        self._detect()

    def _detect(self) -> None:
        v1_memory = _CGROUP_ROOT / "memory"
        v1_pids = _CGROUP_ROOT / "pids"
        v1_cpu = _CGROUP_ROOT / "cpu"
        try:
            if (v1_memory / "memory.limit_in_bytes").exists() and (
                v1_pids / "cgroup.procs"
            ).exists():
                hierarchies = [("memory", v1_memory), ("pids", v1_pids)]
                if self.cpus and (v1_cpu / "cpu.cfs_quota_us").exists():
                    hierarchies.append(("cpu", v1_cpu))
                for controller, base in hierarchies:
                    (base / _GROUP_NAME).mkdir(exist_ok=True)
                    self._tops[controller] = base / _GROUP_NAME
                    parent = base / _GROUP_NAME / self.instance
                    parent.mkdir(exist_ok=True)
                    self._parents[controller] = parent
                self.cpu_quota = "cpu" in self._parents
                self.mode = "cgroup v1"
                return
            if (_CGROUP_ROOT / "cgroup.controllers").exists():
                top = self._v2_top()
                wanted = _wanted_v2((top / "cgroup.subtree_control").read_text().split())
                parent = top / self.instance
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text(_enable(wanted))
                self._tops["unified"] = top
                self._parents["unified"] = parent
                self.cpu_quota = bool(self.cpus) and _V2_CPU in wanted
                self.mode = "cgroup v2"
                return
        except OSError as exc:
            log.info("cgroups not usable (%s); falling back to rlimits", exc)
        self._parents.clear()
        self._tops.clear()
        self.mode = "none"

    def _v2_top(self) -> Path:
        """Where this executor's sandbox cgroups go on a unified hierarchy.

        As root, a group of code-exec's own at the top of the hierarchy, as on v1. Where that
        cannot be (not root; a container whose cgroup namespace makes its own group the root,
        which then holds processes and cannot enable controllers for children), the cgroup
        the executor was started in, when it is delegated to it: a systemd unit with
        Delegate=yes, `systemd-run --user --scope -p Delegate=yes`, a container's own group.
        """
        if os.geteuid() == 0:
            try:
                root_controllers = (_CGROUP_ROOT / "cgroup.controllers").read_text().split()
                if not set(_V2_CONTROLLERS) <= set(root_controllers):
                    raise OSError(f"the hierarchy has no {' or '.join(_V2_CONTROLLERS)} controller")
                top = _CGROUP_ROOT / _GROUP_NAME
                wanted = _wanted_v2(root_controllers)
                (_CGROUP_ROOT / "cgroup.subtree_control").write_text(_enable(wanted))
                top.mkdir(exist_ok=True)
                (top / "cgroup.subtree_control").write_text(_enable(wanted))
                return top
            except OSError as exc:
                log.info("no code-exec group at the cgroup root (%s); trying our own cgroup", exc)
        self.delegated = True
        return delegated_top()

    def clone_into(self, uid: int) -> Path | None:
        """Let uid (the zygote's host uid) clone children straight into their sandboxes' groups
        (clone3's CLONE_INTO_CGROUP, cgroup v2 only); the group it must run in, or None.

        The kernel checks the caller's own credentials for it: write access to the cgroup.procs
        of the child's group and of the closest group holding both; so the zygote runs in a
        leaf of this executor's group, and that group's cgroup.procs and each sandbox group's
        are given to its uid. It can then move processes between those groups, and nothing
        else: every limit file stays root's. Not where the groups are delegated (not root).
        """
        if self.mode != "cgroup v2" or self.delegated:
            return None
        parent = self._parents["unified"]
        leaf = parent / ZYGOTE_LEAF
        leaf.mkdir(exist_ok=True)
        os.chown(parent / "cgroup.procs", uid, -1)
        self._spawner_uid = uid
        return leaf

    @property
    def available(self) -> bool:
        """Whether sandboxes get cgroups."""
        return self.mode != "none"

    def create(self, name: str) -> CgroupHandle | None:
        """A fresh cgroup for one sandbox, limits set; None without cgroups."""
        if not self.available:
            return None
        dirs: list[Path] = []
        try:
            if self.mode == "cgroup v1":
                mem = self._parents["memory"] / name
                pids = self._parents["pids"] / name
                mem.mkdir()
                dirs.append(mem)
                pids.mkdir()
                dirs.append(pids)
                (mem / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
                swap = mem / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    with contextlib.suppress(OSError):
                        swap.write_text(str(self.memory_bytes))
                (pids / "pids.max").write_text(str(self.pids))
                if self.cpu_quota:
                    cpu = self._parents["cpu"] / name
                    cpu.mkdir()
                    dirs.append(cpu)
                    (cpu / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
                    (cpu / "cpu.cfs_quota_us").write_text(str(self._quota_us()))
                procs = [str(d / "cgroup.procs") for d in dirs]
                return CgroupHandle(dirs, procs, mem, v2=False)
            group = self._parents["unified"] / name
            group.mkdir()
            dirs.append(group)
            (group / "memory.max").write_text(str(self.memory_bytes))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
            (group / "pids.max").write_text(str(self.pids))
            if self.cpu_quota:
                # cpu.weight stays at its default, the same for every sandbox: under
                # contention each sandbox gets a like share, whatever its thread count.
                (group / "cpu.max").write_text(f"{self._quota_us()} {_CPU_PERIOD_US}")
            if self._spawner_uid is not None:
                os.chown(group / "cgroup.procs", self._spawner_uid, -1)
            return CgroupHandle(dirs, [str(group / "cgroup.procs")], group, v2=True)
        except OSError:
            for d in reversed(dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise

    def _quota_us(self) -> int:
        # The kernel refuses a quota under 1 ms.
        return max(1000, round(self.cpus * _CPU_PERIOD_US))

    @staticmethod
    def pids_of(handle: CgroupHandle) -> list[int]:
        """Every process in the sandbox's cgroup."""
        pids: set[int] = set()
        for procs in handle.procs_files:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(procs).read_text().split())
        return sorted(pids)

    def kill_all(self, handle: CgroupHandle) -> None:
        """SIGKILL every process of the sandbox (even ones that left its process group)."""
        if handle.v2:
            kill = handle.dirs[0] / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
                    return
        for pid in self.pids_of(handle):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def oom_killed(handle: CgroupHandle) -> bool:
        """Whether the kernel's OOM killer acted in this cgroup."""
        if handle.memory_dir is None:
            return False
        try:
            if handle.v2:
                return int(_counters(handle.memory_dir / "memory.events")["oom_kill"]) > 0
            oom = _counters(handle.memory_dir / "memory.oom_control")
            if int(oom.get("oom_kill", "0")) > 0:
                return True
            return (
                int((handle.memory_dir / "memory.failcnt").read_text()) > 0
                and oom.get("under_oom") == "1"
            )
        except (OSError, ValueError, KeyError):
            return False

    def as_good_as_new(self, handle: CgroupHandle) -> bool:
        """Whether an emptied cgroup can hold another sandbox as if it were new: no process
        left in it, no trace of a limit hit that the next sandbox would be blamed for (an OOM
        kill, a charge refused at the limit), and next to no memory still charged to it (page
        cache its last sandbox read in is reclaimable, but it would count against the next)."""
        if self.pids_of(handle) or handle.memory_dir is None:
            return False
        memory = handle.memory_dir
        try:
            if handle.v2:
                events = _counters(memory / "memory.events")
                hits = sum(int(events.get(key, "1")) for key in ("max", "oom", "oom_kill"))
                usage = int((memory / "memory.current").read_text())
            else:
                hits = int((memory / "memory.failcnt").read_text())
                hits += int(_counters(memory / "memory.oom_control").get("oom_kill", "1"))
                usage = int((memory / "memory.usage_in_bytes").read_text())
        except (OSError, ValueError):
            return False
        return hits == 0 and usage <= self.memory_bytes // _SPARE_USAGE_FRACTION

    @staticmethod
    def remove(handle: CgroupHandle) -> bool:
        """Remove the cgroup once empty; False when processes are still in it."""
        ok = True
        for d in reversed(handle.dirs):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok

    def cleanup_stale(self, is_alive: Callable[[str], bool]) -> int:
        """Kill and remove the cgroups of executors that died; returns how many sandboxes."""
        removed = 0
        for top in self._tops.values():
            for instance in top.iterdir():
                if (
                    not instance.is_dir()
                    or instance.name == self.instance
                    or is_alive(instance.name)
                ):
                    continue
                for child in [*instance.iterdir(), instance]:
                    if not child.is_dir():
                        continue
                    handle = CgroupHandle([child], [str(child / "cgroup.procs")], None, v2=False)
                    self.kill_all(handle)
                    if self.remove(handle) and child != instance:
                        removed += 1
        return removed

    def close(self) -> None:
        """Remove this executor's own parent groups (its sandboxes are gone by now)."""
        for parent in self._parents.values():
            with contextlib.suppress(OSError):
                (parent / ZYGOTE_LEAF).rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


class SpareCgroups:
    """Emptied sandbox cgroups, kept to hold the next sandbox instead of being made anew.

    Making a cgroup costs 0.4-0.6 ms of CPU here (the memory controller's share of it most),
    removing one 0.1-0.4 ms, each on a worker thread: for a zygote run, whose whole cost is a
    few milliseconds, that is worth keeping. Only a cgroup as good as new comes back (no
    process in it, no limit hit, next to nothing charged); any other is removed as before.
    A cgroup carries no file or data of the sandbox it held, only its limits and counters.
    """

    def __init__(self, limiter: CgroupLimiter, keep: int) -> None:
        self.limiter = limiter
        self.keep = keep
        self._spare: list[CgroupHandle] = []

    @property
    def kept(self) -> tuple[CgroupHandle, ...]:
        """The cgroups kept now."""
        return tuple(self._spare)

    def take(self) -> CgroupHandle | None:
        """A kept cgroup, if there is one (else the caller makes a new one)."""
        return self._spare.pop() if self._spare else None

    def give_back(self, handle: CgroupHandle) -> bool:
        """Keep handle for a later sandbox; False when it is not kept (the caller removes it)."""
        if len(self._spare) >= self.keep or not self.limiter.as_good_as_new(handle):
            return False
        self._spare.append(handle)
        return True

    def close(self) -> None:
        """Remove every kept cgroup (they are empty)."""
        while self._spare:
            self.limiter.remove(self._spare.pop())
