"""One bubblewrap sandbox: its processes, its runner protocol, its limits.

The runner (see runners/) is started ahead of time and waits on its control pipe, so a run
costs one message and the code's own time. Output is read from the sandbox's stdout and stderr
pipes as it is produced, capped in memory; a per-run sentinel written by the runner marks where
a run's output ends.
"""

import asyncio
import codecs
import contextlib
import json
import logging
import os
import secrets
import shlex
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from executor.backends.base import OutputCallback, RunOutcome, signal_error
from executor.backends.local.bwrap import SandboxPaths, bwrap_command
from executor.backends.local.limits import CgroupHandle
from executor.backends.local.workspace import Workspace
from executor.capture import StreamCapture
from executor.errors import SandboxFailure
from schemas.execution import ExecutionError, Image
from schemas.files import FileInfo
from schemas.languages import Language

if TYPE_CHECKING:
    from executor.backends.local.backend import LocalBackend

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_DRAIN_TIMEOUT_S = 2.0
_CONTROL_LIMIT = 64 * 1024 * 1024


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class LocalSandbox:
    """A sandbox started by the local backend."""

    def __init__(
        self,
        backend: "LocalBackend",
        language: Language,
        sandbox_id: str,
        workspace: Workspace,
        launcher: Callable[[int, CgroupHandle | None], list[str]],
    ) -> None:
        self._backend = backend
        self._language = language
        self._id = sandbox_id
        self.workspace = workspace
        self._launcher = launcher
        self._proc: asyncio.subprocess.Process | None = None
        self._cgroup: CgroupHandle | None = None
        self._control_writer: asyncio.StreamWriter | None = None
        self._control_reader: asyncio.StreamReader | None = None
        self._leftover: dict[str, bytes] = {"stdout": b"", "stderr": b""}
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
        self._cgroup = await asyncio.to_thread(
            self._backend.cgroups.create, f"{self._id}-{self._generation}"
        )
        paths = SandboxPaths(
            home=self.workspace.home,
            tmp=self.workspace.tmp,
            runtime=self._backend.settings.runtime_dir,
            etc=self._backend.etc_dir,
        )
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._launcher(out_w, self._cgroup),
                *bwrap_command(self._language, paths),
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
        self._control_reader = asyncio.StreamReader(limit=_CONTROL_LIMIT)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._control_reader),  # type: ignore[arg-type]
            os.fdopen(out_r, "rb", buffering=0),
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(in_w, "wb", buffering=0)
        )
        self._control_writer = asyncio.StreamWriter(transport, protocol, None, loop)
        try:
            line = await asyncio.wait_for(self._control_reader.readline(), _START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if not line.startswith(b'{"op":'):
            stderr = b""
            await self._kill()
            if self._proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    stderr = await asyncio.wait_for(self._proc.stderr.read(4096), 1)
            raise SandboxFailure(
                f"{self._language.value} sandbox failed to start: "
                f"{stderr.decode(errors='replace').strip() or 'no ready signal from the runner'}"
            )

    async def _kill(self) -> None:
        """Kill every process of the sandbox and reap bubblewrap."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._cgroup is not None:
            self._backend.cgroups.kill_all(self._cgroup)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        if self._control_writer is not None:
            self._control_writer.close()
            self._control_writer = None
        if self._cgroup is not None:
            cgroup, self._cgroup = self._cgroup, None
            for _ in range(50):
                if self._backend.cgroups.remove(cgroup):
                    break
                self._backend.cgroups.kill_all(cgroup)
                await asyncio.sleep(0.02)
        self._runner_pid = None

    async def restart(self) -> None:
        """Kill the processes and start a fresh runner on the same workspace (files kept)."""
        await self._kill()
        self._generation += 1
        self._leftover = {"stdout": b"", "stderr": b""}
        await self.start()

    async def close(self) -> None:
        """Kill every process, remove the cgroup and the workspace."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._kill()
        finally:
            await asyncio.to_thread(self.workspace.destroy)
            self._backend.release(self)

    # --- running code ---

    def _encode_run(self, run_id: str, code: str, env: Mapping[str, str]) -> bytes:
        if self._language is Language.BASH:
            code_bytes = code.replace("\x00", "").encode()
            env_bytes = "".join(
                f"export {name}={shlex.quote(value)}\n" for name, value in env.items()
            ).encode()
            header = f"{run_id} {len(code_bytes)} {len(env_bytes)}\n".encode()
            return header + code_bytes + env_bytes
        message = {"op": "run", "id": run_id, "code": code, "env": dict(env)}
        return (json.dumps(message) + "\n").encode()

    def _interrupt(self) -> None:
        """SIGINT to the runner: the language's own way to stop the current run."""
        pid = self._runner_pid or self._find_runner_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)

    async def _kill_strays(self) -> None:
        """After an interrupted run, kill what it started (children, forks) but the runner."""
        keep = {self._runner_pid or self._find_runner_pid()}
        # Strays may still be forking: repeat until none is left (the pids limit bounds it).
        for _ in range(100):
            strays = [p for p in self.process_ids() if p not in keep and _comm(p) != "bwrap"]
            if not strays:
                return
            for pid in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)

    def _find_runner_pid(self) -> int | None:
        if self._proc is None:
            return None
        queue = [self._proc.pid]
        while queue:
            pid = queue.pop(0)
            for child in _children(pid):
                if _comm(child) != "bwrap":
                    self._runner_pid = child
                    return child
                queue.append(child)
        return None

    async def _read_done(self, run_id: str) -> dict[str, Any] | None:
        assert self._control_reader is not None
        while True:
            line = await self._control_reader.readline()
            if not line:
                return None
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("op") == "done" and message.get("id") == run_id:
                return dict(message)

    async def _pump(
        self,
        name: str,
        stream: asyncio.StreamReader,
        sentinel: bytes,
        capture: StreamCapture,
        on_output: OutputCallback | None,
    ) -> bool:
        """Copy a stream into capture until this run's sentinel (True) or EOF (False)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if on_output else None

        async def emit(data: bytes, final: bool = False) -> None:
            capture.feed(data)
            if decoder is not None and on_output is not None:
                text = decoder.decode(data, final)
                if text:
                    await on_output(name, text)

        carry = self._leftover[name]
        self._leftover[name] = b""
        keep = len(sentinel) - 1
        while True:
            index = carry.find(sentinel)
            if index >= 0:
                await emit(carry[:index], final=True)
                self._leftover[name] = carry[index + len(sentinel) :]
                return True
            chunk = await stream.read(1 << 16)
            if not chunk:
                await emit(carry, final=True)
                return False
            data = carry + chunk
            index = data.find(sentinel)
            if index >= 0:
                carry = data
                continue
            # Hold back only a tail that could be the start of the sentinel, so output
            # reaches on_output as soon as it is read.
            hold = len(data)
            start = data.find(sentinel[:1], max(0, len(data) - keep))
            while start >= 0:
                if sentinel.startswith(data[start:]):
                    hold = start
                    break
                start = data.find(sentinel[:1], start + 1)
            else:
                hold = len(data)
            await emit(data[:hold])
            carry = data[hold:]

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
        if not self.alive:
            raise SandboxFailure(f"sandbox {self._id} is not running")
        assert self._proc is not None and self._proc.stdout and self._proc.stderr
        assert self._control_writer is not None
        settings = self._backend.settings
        run_id = secrets.token_hex(8)
        sentinel = f"\x1eCE-END:{run_id}\x1f\n".encode()
        stdout = stdout or StreamCapture(settings.max_output_bytes)
        stderr = stderr or StreamCapture(settings.max_output_bytes)
        pumps = [
            asyncio.create_task(
                self._pump("stdout", self._proc.stdout, sentinel, stdout, on_output)
            ),
            asyncio.create_task(
                self._pump("stderr", self._proc.stderr, sentinel, stderr, on_output)
            ),
        ]
        done_task = asyncio.create_task(self._read_done(run_id))
        timed_out = False
        killed = False
        try:
            try:
                self._control_writer.write(self._encode_run(run_id, code, env))
                await self._control_writer.drain()
            except (ConnectionError, BrokenPipeError):
                pass  # the runner is gone; done_task sees EOF and the exit status says why
            try:
                done = await asyncio.wait_for(asyncio.shield(done_task), timeout)
            except TimeoutError:
                timed_out = True
                done = None
                if keep_state and self._language is not Language.BASH:
                    self._interrupt()
                    with contextlib.suppress(TimeoutError):
                        done = await asyncio.wait_for(
                            asyncio.shield(done_task), settings.interrupt_grace_s
                        )
                    if done is not None:
                        await self._kill_strays()
                if done is None:
                    killed = True
                    await self._kill()
                    done_task.cancel()
            if done is not None:
                _, pending = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT_S)
            else:
                # The runner is gone; the streams close once every process of the sandbox is.
                if not killed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._proc.wait(), _DRAIN_TIMEOUT_S)
                _, pending = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
        except BaseException:
            done_task.cancel()
            for pump in pumps:
                pump.cancel()
            # A run cancelled half-way leaves the runner in an unknown state.
            await self._kill()
            raise
        return await self._outcome(done, stdout, stderr, timeout, timed_out, keep_state)

    async def _outcome(
        self,
        done: dict[str, Any] | None,
        stdout: StreamCapture,
        stderr: StreamCapture,
        timeout: float,
        timed_out: bool,
        keep_state: bool,
    ) -> RunOutcome:
        assert self._proc is not None
        outcome = RunOutcome(stdout=stdout, stderr=stderr, exit_code=0, timed_out=timed_out)
        if done is not None:
            outcome.exit_code = int(done.get("exit_code", 0))
            if done.get("error"):
                outcome.error = ExecutionError.model_validate(done["error"])
            outcome.value = done.get("value")
            outcome.images = [Image.model_validate(i) for i in done.get("images") or []]
        else:
            returncode = self._proc.returncode
            if returncode is None:
                with contextlib.suppress(TimeoutError):
                    returncode = await asyncio.wait_for(self._proc.wait(), _DRAIN_TIMEOUT_S)
            outcome.exit_code = returncode if returncode is not None else -1
            if returncode is not None and returncode < 0:  # bwrap itself killed
                outcome.exit_code = 128 - returncode
            if self._cgroup is not None and self._backend.cgroups.oom_killed(self._cgroup):
                limit = self._backend.settings.memory_limit_mb
                outcome.error = ExecutionError(
                    name="MemoryError",
                    value=f"out of memory: the sandbox's limit is {limit} MiB; use less memory",
                )
                outcome.exit_code = 137
            elif not timed_out:
                outcome.error = signal_error(outcome.exit_code)
        if timed_out:
            outcome.exit_code = 124
            kept = done is not None and keep_state
            consequence = (
                "the run was interrupted and the session's state was kept"
                if kept
                else "every process of the run was killed"
            )
            trace = outcome.error.traceback if outcome.error else ""
            outcome.error = ExecutionError(
                name="TimeoutError",
                value=f"execution exceeded the timeout of {timeout:g} s; {consequence}",
                traceback=trace,
            )
        if keep_state and (done is None or not self.alive):
            outcome.state_lost = True
            await self.restart()
        return outcome

    # --- files and memory ---

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file into /home/user (a host Path is copied in)."""
        await asyncio.to_thread(self.workspace.write_file, path, data)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of /home/user."""
        return await asyncio.to_thread(self.workspace.read_file, path, max_bytes)

    async def list_files(self, path: str) -> list[FileInfo]:
        """List /home/user (or a directory in it), recursively."""
        return await asyncio.to_thread(self.workspace.list_files, path)

    def process_ids(self) -> list[int]:
        """Host pids of every process of the sandbox, bubblewrap included."""
        if self._proc is None or self._proc.returncode is not None:
            return []
        if self._cgroup is not None:
            pids = self._backend.cgroups.pids_of(self._cgroup)
            return sorted({self._proc.pid, *pids})
        found, queue = [], [self._proc.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue += _children(pid)
        return found

    async def memory_bytes(self) -> int | None:
        """Resident memory of all processes of the sandbox."""
        return sum(_rss_bytes(pid) for pid in self.process_ids()) or None
