"""One bubblewrap sandbox: its life cycle (start, kill, restart, close), its processes, its files.

The runner is started ahead of time and waits on its control pipe (protocol.py), so a run costs
one message and the code's own time; runs.py drives a run and says what its end means. A closed
sandbox never starts again: a run it interrupts ends as killed, and restart() refuses.
"""

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from executor.backends.base import RunAccess, RunOutcome
from executor.backends.capture import StreamCapture
from executor.backends.local import procfs
from executor.backends.local.bwrap import DataFds, bwrap_command, with_args_fd
from executor.backends.local.egress import (
    EgressConfig,
    SandboxEgress,
    egress_channel,
    receive_listener,
)
from executor.backends.local.launcher import above_launcher_fds, launch_prefix
from executor.backends.local.limits import CgroupHandle, CgroupLimiter
from executor.backends.local.policy import SandboxPaths, SandboxPolicy
from executor.backends.local.protocol import ControlChannel, ProtocolError, is_ready
from executor.backends.local.runs import (
    OutputStream,
    RunEnd,
    RunnerChannel,
    RunnerProcess,
    execute,
    interpret,
)
from executor.backends.local.workspace import Workspace
from executor.errors import SandboxFailure
from executor.interface import Download, OutputCallback
from schemas.execution import ExecutionError
from schemas.files import FileInfo
from schemas.languages import Language

_START_TIMEOUT_S = 30.0
_KILLED_EXIT_CODE = 128 + signal.SIGKILL


# What a sandbox that cannot mount its own /proc says, from bubblewrap and from the zygote.
_PROC_MOUNT_REFUSED = ("Can't mount proc", "mount /proc: Operation not permitted")


def start_failure(what: str, stderr: bytes) -> SandboxFailure:
    """The error for a sandbox that sent no ready signal, with its stderr, and what to do
    where the cause is a known one of the host's."""
    detail = stderr.decode(errors="replace").strip() or "no ready signal from the runner"
    if any(sign in detail for sign in _PROC_MOUNT_REFUSED):
        detail += (
            ". A sandbox mounts a /proc of its own pid namespace; the kernel refuses that where "
            "parts of /proc are masked, as a container's runtime does by default: run the "
            "executor's container with --security-opt systempaths=unconfined (Docker, Podman) "
            "or procMount: Unmasked (Kubernetes), as deploy/ does"
        )
    return SandboxFailure(f"{what} failed to start: {detail}")


@dataclass(frozen=True)
class SandboxContext:
    """What a sandbox needs of the backend that made it, and nothing more."""

    policy: SandboxPolicy
    runtime_dir: Path
    files: Mapping[str, bytes]  # the content of the policy's FILE entries
    seccomp: bytes  # the policy's syscall filter, compiled
    cgroups: CgroupLimiter
    max_output_bytes: int
    interrupt_grace_s: float
    release: Callable[["LocalSandbox"], None]  # called once, when the sandbox is closed
    launcher: Path | None = None  # code-exec-launch, when built (else bash and setpriv)
    egress: EgressConfig | None = None  # the egress proxy, when the executor allows a network


def _own_processes(bwrap_pid: int) -> tuple[frozenset[int], int | None]:
    """Bubblewrap's processes and the runner's, as a ready sandbox has them; and the runner's.

    Bubblewrap (bwrap_pid) has one child, the sandbox's pid 1 (bubblewrap too), whose one child
    is the runner: read once, before any code runs, so that no process the code makes is taken
    for one of them (the code may give its processes any name).
    """
    inits = procfs.children(bwrap_pid)
    runners = [pid for init in inits for pid in procfs.children(init)]
    runner = runners[0] if len(inits) == 1 and len(runners) == 1 else None
    return frozenset({bwrap_pid, *inits, *runners[:1]}), runner


@dataclass(frozen=True)
class RunLimits:
    """What every run of a local sandbox is held to, and the cgroups that hold it."""

    cgroups: CgroupLimiter
    max_output_bytes: int
    interrupt_grace_s: float
    memory_limit_mib: int
    egress: EgressConfig | None = None  # the egress proxy, when the executor allows a network


class RunnerSandbox:
    """What both kinds of local sandbox share: a runner in a process of its own, in a cgroup.

    LocalSandbox (bubblewrap) and zygote.ZygoteSandbox (a clone of the zygote) differ in how
    the process starts and what it is made of; identity, liveness, the processes and memory
    seen through the cgroup, and the cgroup's removal are the same.
    """

    def __init__(self, sandbox_id: str, language: Language, limits: RunLimits) -> None:
        self._id = sandbox_id
        self._language = language
        self._limits = limits
        self._cgroups = limits.cgroups
        self._process: RunnerProcess | None = None
        self._cgroup: CgroupHandle | None = None
        self._closed = False
        self._killed = True  # until a runner says it is ready
        self._egress: SandboxEgress | None = None
        self._egress_pending: socket.socket | None = None  # until the sandbox is ready

    @property
    def id(self) -> str:
        """Unique id of the sandbox."""
        return self._id

    @property
    def language(self) -> Language:
        """The language its runner speaks."""
        return self._language

    @property
    def alive(self) -> bool:
        """Whether the runner can take another run (False once killed, until restarted)."""
        return (
            not self._closed
            and not self._killed
            and self._process is not None
            and self._process.returncode is None
        )

    @property
    def pid(self) -> int | None:
        """Host pid of the sandbox's outermost process (bubblewrap's, or the zygote child)."""
        return self._process.pid if self._process is not None else None

    def process_ids(self) -> list[int]:
        """Host pids of every process of the sandbox, its outermost one included."""
        process = self._process
        if process is None or process.returncode is not None:
            return []
        if self._cgroup is not None:
            return sorted({process.pid, *self._cgroups.pids_of(self._cgroup)})
        return procfs.tree(process.pid)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer acted in the sandbox (False once it is killed)."""
        return self._cgroup is not None and self._cgroups.oom_killed(self._cgroup)

    async def memory_bytes(self) -> int | None:
        """Resident memory of all processes of the sandbox."""
        return sum(procfs.rss_bytes(pid) for pid in self.process_ids()) or None

    def _egress_channel(self) -> int | None:
        """The sandbox's end of the channel a starting sandbox sends its egress listener
        over, when there is a proxy to serve (egress.egress_channel); the executor's end is
        kept until _serve_egress."""
        if self._limits.egress is None:
            return None
        self._stop_egress()
        self._egress_pending, theirs = egress_channel()
        return theirs

    async def _serve_egress(self) -> None:
        """Serve the egress proxy on the listener the ready sandbox sent."""
        ours, self._egress_pending = self._egress_pending, None
        if ours is None or self._limits.egress is None:
            return
        self._egress = SandboxEgress(self._id, receive_listener(ours), self._limits.egress)
        await self._egress.start()

    def _stop_egress(self) -> None:
        if self._egress_pending is not None:
            self._egress_pending.close()
            self._egress_pending = None
        if self._egress is not None:
            self._egress.abort()
            self._egress = None

    # The run target (runs.RunTarget): each kind says how.

    def runner_pid(self) -> int | None:
        """Host pid of the runner, when it can be found."""
        raise NotImplementedError

    def own_pids(self) -> frozenset[int]:
        """Host pids that are the sandbox itself, not processes the code made."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Kill every process of the sandbox now, without waiting."""
        raise NotImplementedError

    async def kill(self) -> None:
        """Kill every process of the sandbox."""
        raise NotImplementedError

    async def _run_on(
        self,
        channel: RunnerChannel,
        code: str,
        *,
        env: Mapping[str, str],
        timeout: float,
        keep_state: bool,
        on_output: OutputCallback | None,
        stdout: StreamCapture | None,
        stderr: StreamCapture | None,
        access: RunAccess | None = None,
    ) -> tuple[RunEnd, RunOutcome]:
        """One run through channel: how it ended, and what that means (a run the sandbox's
        closing cut short ends as killed)."""
        limits = self._limits
        stdout = stdout or StreamCapture(limits.max_output_bytes)
        stderr = stderr or StreamCapture(limits.max_output_bytes)
        egress = self._egress
        access = access or RunAccess()
        if egress is not None and limits.egress is not None:
            # The request's level was checked against the ceiling by the executor.
            policy = limits.egress.ceiling
            if access.network is not None:
                policy = policy.narrowed(access.network.level, access.network.hosts)
            egress.begin_run(policy, access.allowance, access.tools)
        try:
            end = await execute(
                self,
                channel,
                code,
                env=env,
                timeout=timeout,
                keep_state=keep_state,
                interrupt_grace_s=limits.interrupt_grace_s,
                on_output=on_output,
                stdout=stdout,
                stderr=stderr,
            )
        finally:
            if egress is not None:
                egress.end_run()
        outcome = interpret(
            end,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            keep_state=keep_state,
            memory_limit_mib=limits.memory_limit_mib,
        )
        if self._closed and end.done is None:
            outcome = closed_during(outcome, keep_state)
        return end, outcome

    async def _remove_cgroup(self) -> None:
        """Remove the cgroup, killing what is still in it first (it may take a few tries)."""
        if self._cgroup is None:
            return
        cgroup, self._cgroup = self._cgroup, None
        for _ in range(50):
            # rmdir of a cgroup waits on the kernel (0.4 ms each on v1): off the loop.
            if await asyncio.to_thread(self._cgroups.remove, cgroup):
                break
            self._cgroups.kill_all(cgroup)
            await asyncio.sleep(0.02)


class LocalSandbox(RunnerSandbox):
    """A sandbox started by the local backend."""

    def __init__(
        self,
        context: SandboxContext,
        language: Language,
        sandbox_id: str,
        workspace: Workspace,
    ) -> None:
        super().__init__(
            sandbox_id,
            language,
            RunLimits(
                context.cgroups,
                context.max_output_bytes,
                context.interrupt_grace_s,
                context.policy.limits.memory_mib,
                context.egress,
            ),
        )
        self._context = context
        self.workspace = workspace
        self._process: asyncio.subprocess.Process | None = None
        self._channel: RunnerChannel | None = None
        self._runner_pid: int | None = None
        self._own_pids: frozenset[int] = frozenset()
        self._generation = 0

    # --- life cycle ---

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SandboxFailure(
                f"sandbox {self._id} is closed and never starts again; create a new one"
            )

    async def _stop_if_closed(self) -> None:
        """After each wait of start(): a close() meanwhile means nothing may be left running."""
        if self._closed:
            await self.kill()
            self._refuse_if_closed()

    async def start(self) -> None:
        """Start bubblewrap and wait until the runner says it is ready."""
        self._refuse_if_closed()
        loop = asyncio.get_running_loop()
        context = self._context
        self._cgroup = await asyncio.to_thread(
            context.cgroups.create, f"{self._id}-{self._generation}"
        )
        await self._stop_if_closed()
        paths = SandboxPaths(
            home=self.workspace.home, tmp=self.workspace.tmp, runtime=context.runtime_dir
        )
        data = DataFds()
        theirs = self._egress_channel()
        egress_fd = above_launcher_fds(theirs) if theirs is not None else None
        in_r, in_w = os.pipe()
        out_r, pipe_w = os.pipe()
        out_w = -1
        try:
            out_w = above_launcher_fds(pipe_w)
            bwrap = bwrap_command(
                context.policy,
                self._language,
                paths,
                files=context.files,
                seccomp=context.seccomp,
                data_fd=data,
                egress_fd=egress_fd,
            )
            self._process = proc = await asyncio.create_subprocess_exec(
                *launch_prefix(
                    context.policy,
                    self._language,
                    uid=self.workspace.uid,
                    gid=self.workspace.gid,
                    control_out=out_w,
                    cgroup_procs=self._cgroup.procs_files if self._cgroup else [],
                    launcher=context.launcher,
                ),
                *with_args_fd(bwrap, data),
                stdin=in_r,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
                pass_fds=(out_w, *data.fds, *([egress_fd] if egress_fd is not None else [])),
                start_new_session=True,
            )
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            self._stop_egress()
            raise
        finally:
            os.close(in_r)
            if out_w >= 0:
                os.close(out_w)
            if egress_fd is not None:
                os.close(egress_fd)
            data.close()
        assert proc.stdout is not None and proc.stderr is not None
        control_out = ControlChannel()
        await loop.connect_read_pipe(lambda: control_out, os.fdopen(out_r, "rb", buffering=0))
        transport, flow = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(in_w, "wb", buffering=0)
        )
        self._channel = RunnerChannel(
            process=proc,
            control_in=asyncio.StreamWriter(transport, flow, None, loop),
            control_out=control_out,
            stdout=OutputStream("stdout", proc.stdout),
            stderr=OutputStream("stderr", proc.stderr),
        )
        await self._stop_if_closed()
        try:
            line = await asyncio.wait_for(control_out.readline(), _START_TIMEOUT_S)
        except (TimeoutError, ProtocolError):
            line = b""
        await self._stop_if_closed()
        if not is_ready(line):
            stderr = b""
            await self.kill()
            with contextlib.suppress(TimeoutError):
                stderr = await asyncio.wait_for(proc.stderr.read(4096), 1)
            raise start_failure(f"{self._language.value} sandbox", stderr)
        try:
            await self._serve_egress()
        except SandboxFailure:
            await self.kill()
            raise
        self._own_pids, self._runner_pid = _own_processes(proc.pid)
        self._killed = False

    def abandon(self) -> None:
        """Kill every process of the sandbox now, without waiting (kill() tidies up later).

        What a cancelled run does last: nothing here awaits, so nothing can interrupt it.
        """
        self._killed = True
        self._stop_egress()
        proc = self._process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._cgroup is not None:
            self._context.cgroups.kill_all(self._cgroup)
        if self._channel is not None:
            self._channel.control_in.close()
            self._channel.control_out.close()
            self._channel = None
        self._runner_pid = None
        self._own_pids = frozenset()

    async def kill(self) -> None:
        """Kill every process of the sandbox, reap bubblewrap and remove the cgroup."""
        self.abandon()
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)
        await self._remove_cgroup()

    async def restart(self) -> None:
        """Kill the processes and start a fresh runner on the same workspace (files kept).

        SandboxFailure once the sandbox is closed: it never starts again.
        """
        self._refuse_if_closed()
        await self.kill()
        self._generation += 1
        await self.start()

    async def close(self) -> None:
        """Kill every process, remove the cgroup and the workspace; for good."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.kill()
        finally:
            await asyncio.to_thread(self.workspace.destroy)
            self._context.release(self)

    # --- running code ---

    async def run(
        self,
        code: str,
        *,
        env: Mapping[str, str],
        timeout: float,
        keep_state: bool,
        on_output: OutputCallback | None = None,
        stdout: StreamCapture | None = None,
        stderr: StreamCapture | None = None,
        access: RunAccess | None = None,
    ) -> RunOutcome:
        """Run code; on timeout interrupt it (keep_state) or kill the sandbox."""
        self._refuse_if_closed()
        if not self.alive or self._channel is None:
            raise SandboxFailure(f"sandbox {self._id} is not running; restart it first")
        end, outcome = await self._run_on(
            self._channel,
            code,
            env=env,
            timeout=timeout,
            keep_state=keep_state,
            on_output=on_output,
            stdout=stdout,
            stderr=stderr,
            access=access,
        )
        if self._closed and end.done is None:
            return outcome
        if keep_state and (end.done is None or not self.alive):
            # A session must get a runner that answers: a fresh one, on the same files.
            outcome.state_lost = True
            try:
                await self.restart()
            except SandboxFailure:
                if self._closed:
                    return closed_during(outcome, keep_state)
                raise
        return outcome

    # --- processes ---

    def runner_pid(self) -> int | None:
        """Host pid of the runner (found when it said it was ready)."""
        return self._runner_pid

    def own_pids(self) -> frozenset[int]:
        """Host pids that are the sandbox itself: bubblewrap's two processes and the runner."""
        return self._own_pids

    # --- files ---

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file into /home/user (a host Path is copied in)."""
        await asyncio.to_thread(self.workspace.write_file, path, data)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of /home/user."""
        return await asyncio.to_thread(self.workspace.read_file, path, max_bytes)

    async def open_file(self, path: str, max_bytes: int) -> Download:
        """A file of /home/user, read in chunks (off the event loop) as the download is sent."""
        file, size = await asyncio.to_thread(self.workspace.open_regular, path, max_bytes)
        return Download.from_file(file, size)

    async def list_files(self, path: str) -> list[FileInfo]:
        """List /home/user (or a directory in it), recursively."""
        return await asyncio.to_thread(self.workspace.list_files, path)


def closed_during(outcome: RunOutcome, keep_state: bool) -> RunOutcome:
    """The outcome of a run whose sandbox was closed under it: killed, whatever it was doing."""
    outcome.exit_code = _KILLED_EXIT_CODE
    outcome.state_lost = keep_state
    outcome.error = ExecutionError(
        name="SandboxError",
        value="the sandbox was closed during the run (its session ended, or the executor is "
        "shutting down), so every process of the run was killed; run it again in a new one",
    )
    return outcome
