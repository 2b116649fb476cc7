"""One bubblewrap sandbox: its life cycle (start, kill, restart, close), its processes, its files.

The runner is started ahead of time and waits on its control pipe (protocol.py), so a run costs
one message and the code's own time; runs.py drives a run and says what its end means.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from executor.backends.base import RunOutcome
from executor.backends.capture import StreamCapture
from executor.backends.local import procfs
from executor.backends.local.bwrap import bwrap_command
from executor.backends.local.launcher import launch_prefix
from executor.backends.local.limits import CgroupHandle, CgroupLimiter
from executor.backends.local.policy import SandboxPaths, SandboxPolicy
from executor.backends.local.protocol import ProtocolError, control_reader, is_ready, read_line
from executor.backends.local.runs import OutputStream, RunnerChannel, execute, interpret
from executor.backends.local.workspace import Workspace
from executor.errors import SandboxFailure
from executor.interface import OutputCallback
from schemas.files import FileInfo
from schemas.languages import Language

_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SandboxContext:
    """What a sandbox needs of the backend that made it, and nothing more."""

    policy: SandboxPolicy
    runtime_dir: Path
    etc_dir: Path
    cgroups: CgroupLimiter
    max_output_bytes: int
    interrupt_grace_s: float
    release: Callable[["LocalSandbox"], None]  # called once, when the sandbox is closed


class LocalSandbox:
    """A sandbox started by the local backend."""

    def __init__(
        self,
        context: SandboxContext,
        language: Language,
        sandbox_id: str,
        workspace: Workspace,
    ) -> None:
        self._context = context
        self._language = language
        self._id = sandbox_id
        self.workspace = workspace
        self._proc: asyncio.subprocess.Process | None = None
        self._cgroup: CgroupHandle | None = None
        self._channel: RunnerChannel | None = None
        self._runner_pid: int | None = None
        self._closed = False
        self._generation = 0

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
        """Whether the runner process is still there."""
        return not self._closed and self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """Host pid of the outer bubblewrap process."""
        return self._proc.pid if self._proc else None

    # --- life cycle ---

    async def start(self) -> None:
        """Start bubblewrap and wait until the runner says it is ready."""
        loop = asyncio.get_running_loop()
        context = self._context
        self._cgroup = await asyncio.to_thread(
            context.cgroups.create, f"{self._id}-{self._generation}"
        )
        paths = SandboxPaths(
            home=self.workspace.home,
            tmp=self.workspace.tmp,
            runtime=context.runtime_dir,
            etc=context.etc_dir,
        )
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *launch_prefix(
                    context.policy,
                    self._language,
                    uid=self.workspace.uid,
                    gid=self.workspace.gid,
                    control_out=out_w,
                    cgroup_procs=self._cgroup.procs_files if self._cgroup else [],
                ),
                *bwrap_command(context.policy, self._language, paths),
                stdin=in_r,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin"},
                pass_fds=(out_w,),
                start_new_session=True,
            )
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        assert proc.stdout is not None and proc.stderr is not None
        control_out = control_reader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(control_out), os.fdopen(out_r, "rb", buffering=0)
        )
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
        try:
            line = await asyncio.wait_for(read_line(control_out), _START_TIMEOUT_S)
        except (TimeoutError, ProtocolError):
            line = b""
        if not is_ready(line):
            stderr = b""
            await self.kill()
            with contextlib.suppress(TimeoutError):
                stderr = await asyncio.wait_for(proc.stderr.read(4096), 1)
            raise SandboxFailure(
                f"{self._language.value} sandbox failed to start: "
                f"{stderr.decode(errors='replace').strip() or 'no ready signal from the runner'}"
            )

    async def kill(self) -> None:
        """Kill every process of the sandbox, reap bubblewrap and remove the cgroup."""
        proc = self._proc
        if proc is None:
            return
        cgroups = self._context.cgroups
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._cgroup is not None:
            cgroups.kill_all(self._cgroup)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        if self._channel is not None:
            self._channel.control_in.close()
            self._channel = None
        if self._cgroup is not None:
            cgroup, self._cgroup = self._cgroup, None
            for _ in range(50):
                if cgroups.remove(cgroup):
                    break
                cgroups.kill_all(cgroup)
                await asyncio.sleep(0.02)
        self._runner_pid = None

    async def restart(self) -> None:
        """Kill the processes and start a fresh runner on the same workspace (files kept)."""
        await self.kill()
        self._generation += 1
        await self.start()

    async def close(self) -> None:
        """Kill every process, remove the cgroup and the workspace."""
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
    ) -> RunOutcome:
        """Run code; on timeout interrupt it (keep_state) or kill the sandbox."""
        if not self.alive or self._channel is None:
            raise SandboxFailure(f"sandbox {self._id} is not running")
        context = self._context
        stdout = stdout or StreamCapture(context.max_output_bytes)
        stderr = stderr or StreamCapture(context.max_output_bytes)
        end = await execute(
            self,
            self._channel,
            code,
            env=env,
            timeout=timeout,
            keep_state=keep_state,
            interrupt_grace_s=context.interrupt_grace_s,
            on_output=on_output,
            stdout=stdout,
            stderr=stderr,
        )
        outcome = interpret(
            end,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            keep_state=keep_state,
            memory_limit_mib=context.policy.limits.memory_mib,
        )
        if keep_state and (end.done is None or not self.alive):
            # A session must get a runner that answers: a fresh one, on the same files.
            outcome.state_lost = True
            await self.restart()
        return outcome

    # --- processes ---

    def runner_pid(self) -> int | None:
        """Host pid of the runner: the first process below bubblewrap's own."""
        if self._runner_pid is None and self._proc is not None:
            self._runner_pid = procfs.first_descendant_not_named(self._proc.pid, "bwrap")
        return self._runner_pid

    def process_ids(self) -> list[int]:
        """Host pids of every process of the sandbox, bubblewrap included."""
        if self._proc is None or self._proc.returncode is not None:
            return []
        if self._cgroup is not None:
            pids = self._context.cgroups.pids_of(self._cgroup)
            return sorted({self._proc.pid, *pids})
        return procfs.tree(self._proc.pid)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer acted in the sandbox (False once it is killed)."""
        return self._cgroup is not None and self._context.cgroups.oom_killed(self._cgroup)

    async def memory_bytes(self) -> int | None:
        """Resident memory of all processes of the sandbox."""
        return sum(procfs.rss_bytes(pid) for pid in self.process_ids()) or None

    # --- files ---

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file into /home/user (a host Path is copied in)."""
        await asyncio.to_thread(self.workspace.write_file, path, data)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of /home/user."""
        return await asyncio.to_thread(self.workspace.read_file, path, max_bytes)

    async def list_files(self, path: str) -> list[FileInfo]:
        """List /home/user (or a directory in it), recursively."""
        return await asyncio.to_thread(self.workspace.list_files, path)
