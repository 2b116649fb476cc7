"""Stateless Python sandboxes forked from a zygote: the executor's side (zygote_server.py is the
zygote's own).

A bubblewrap sandbox costs a new bubblewrap and a new interpreter: tens of milliseconds of CPU
for a stateless `print(1)`. The zygote is one Python with the runner imported, that clones an
isolated child per sandbox (one clone3 into new user, mount, pid, ipc, uts and network
namespaces); the child sets itself up as the sandbox policy says and becomes a ready runner
speaking the same protocol (protocol.py) on the same descriptors. The warm pool holds such
children; each serves one stateless run and is killed. Sessions, and the other languages, keep
bubblewrap sandboxes: their workspace must outlive a restart of the runner (a session's
timeout), and Node.js, bash and gcc gain nothing from a preloaded Python.

Who holds which privilege:
- The executor (host root) starts the zygote with the sandbox environment (none of its own, no
  secret), and maps the zygote's user namespace: its uid 0 is a host uid of its own
  (CODE_EXEC_SANDBOX_UID_BASE - 1, owning nothing), the sandbox uids map to themselves. The
  zygote never holds a capability over the host: only over the namespaces it creates.
- The zygote's control socket is one end of a socketpair whose other end only the executor
  holds: nothing on a filesystem can reach it, and every child closes it (all descriptors but
  its five) before any code runs. The zygote runs no user code; it parses one small JSON
  header per request.
- Each child is uid 1000 of a user namespace of its own, mapped to its sandbox's host uid (one
  per sandbox, as with bubblewrap); it ends with no capability in any set (CapEff, CapPrm,
  CapBnd, CapAmb all zero: cleared explicitly), no_new_privs, and the same seccomp filter as
  the bubblewrap sandboxes, applied in the child itself.

Trade-offs, decided:
- Network namespace per child (not per slot reused with setns): two runs never share a
  loopback, and nothing of one run (TIME_WAIT, counters) is left for the next; about 1 ms.
- A cgroup per sandbox, made by the executor. On cgroup v2 as root the child is born in it
  (clone3's CLONE_INTO_CGROUP): the kernel checks the zygote's own credentials for that, so
  the zygote runs in a leaf of the executor's group and its uid is given the cgroup.procs of
  that group and of each sandbox group (CgroupLimiter.clone_into), which lets it move
  processes between them and nothing else. Elsewhere (v1; v2 delegated), or where the kernel
  refuses it, the child joins through descriptors the executor opened (the kernel checks the
  opener's credentials) before it does anything else: its first steps (a few syscalls, no user
  code) happen in the zygote's group.
- Memory: the zygote's pages are shared copy-on-write; a page a child writes is charged to the
  child's cgroup, a page it only reads stays charged to the zygote (its own cgroup, the
  executor's). A child's RLIMIT_AS counts the inherited address space (about 40 MiB).
- One image for every child: the same address-space layout (ASLR is per zygote, not per run)
  and the same str hash seed; `random` is reseeded in each child (Python's at-fork hook), and
  os.urandom, secrets and ssl read the kernel's RNG. A child can learn the layout, but the
  layout protects nothing another run has: each child is a separate process in separate
  namespaces. The zygote is restarted when it dies, which changes both.
- When the zygote dies, every child's connection ends: a run in progress ends as a sandbox that
  died (its processes are killed through its cgroup and by their death signal), ready children
  are discarded, the pool falls back to bubblewrap sandboxes until a new zygote is ready
  (restarted with backoff).
- Pid 1 of each child is the runner itself (no separate init): orphans of the code stay zombies
  until the run ends, which is bounded by the pids limit and by the single run.
"""

import asyncio
import base64
import contextlib
import ctypes
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from executor.backends.base import RunAccess, RunOutcome
from executor.backends.capture import StreamCapture
from executor.backends.local.limits import SpareCgroups
from executor.backends.local.policy import (
    EGRESS_PORT,
    SANDBOX_HOME,
    SANDBOX_RUNNERS,
    SANDBOX_RUNTIME,
    MountKind,
    SandboxPolicy,
    Slot,
)
from executor.backends.local.protocol import ControlChannel, ProtocolError, is_ready
from executor.backends.local.runs import OutputStream, RunnerChannel
from executor.backends.local.sandbox import RunLimits, RunnerSandbox, start_failure
from executor.backends.local.workspace import Workspace
from executor.errors import SandboxFailure
from executor.interface import Download, OutputCallback
from schemas.files import FileInfo
from schemas.languages import Language

log = logging.getLogger(__name__)
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)

SERVER = Path(__file__).with_name("zygote_server.py")
_START_TIMEOUT_S = 30.0
_CHILD_TIMEOUT_S = 10.0
_MIB = 1024 * 1024
_MAX_BACKOFF_S = 30.0


def root_steps(
    policy: SandboxPolicy, files: Mapping[str, bytes], runtime: Path
) -> list[dict[str, Any]]:
    """The policy's filesystem as the zygote builds it (zygote_server._build_root)."""
    steps: list[dict[str, Any]] = []
    for mount in policy.mounts:
        match mount.kind:
            case MountKind.BIND if mount.source in (Slot.HOME, Slot.TMP):
                steps.append({"op": "mountpoint", "target": mount.target})
            case MountKind.BIND:
                source = str(runtime) if mount.source is Slot.RUNTIME else str(mount.source)
                steps.append(
                    {
                        "op": "bind",
                        "source": source,
                        "target": mount.target,
                        "optional": mount.optional,
                    }
                )
            case MountKind.SYMLINK:
                steps.append({"op": "symlink", "source": mount.source, "target": mount.target})
            case MountKind.DIR:
                steps.append({"op": "dir", "target": mount.target})
            case MountKind.FILE:
                content = base64.b64encode(files[mount.content_key]).decode()
                steps.append({"op": "file", "target": mount.target, "content": content})
            case MountKind.TMPFS if mount.writable:
                steps.append({"op": "mountpoint", "target": mount.target})
            case MountKind.TMPFS:
                steps.append({"op": "tmpfs", "target": mount.target})
            case MountKind.PROC:
                steps.append({"op": "proc", "target": mount.target})
            case MountKind.DEV:
                steps.append({"op": "dev", "target": mount.target})
            case MountKind.REMOUNT_RO:
                pass  # the zygote's root is read-only as a whole
    return steps


def zygote_config(
    policy: SandboxPolicy,
    files: Mapping[str, bytes],
    seccomp: bytes,
    runtime: Path,
    tmp_files: Mapping[str, bytes],
) -> dict[str, Any]:
    """Everything the zygote and its children need, as its first line on stdin."""
    limits = policy.limits
    address_space = limits.address_space_for(Language.PYTHON)
    return {
        "root": root_steps(policy, files, runtime),
        "host_runtime": str(runtime.resolve()),
        "runtime": str(SANDBOX_RUNTIME),
        "runners": SANDBOX_RUNNERS,
        "runner_path": f"{SANDBOX_RUNNERS}/python_runner.py",
        "egress_port": EGRESS_PORT,
        "home": SANDBOX_HOME,
        "hostname": policy.hostname,
        "uid": policy.uid,
        "gid": policy.gid,
        "environment": dict(policy.environment),
        "seccomp": base64.b64encode(seccomp).decode(),
        "disk_bytes": (limits.disk_mib or limits.file_size_mib) * _MIB,
        "shm_bytes": limits.shm_mib * _MIB,
        "rlimits": {
            "RLIMIT_FSIZE": limits.file_size_mib * _MIB,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": limits.core_mib * _MIB,
            "RLIMIT_AS": address_space * _MIB if address_space is not None else None,
            "RLIMIT_NPROC": limits.nproc,
        },
        "tmp_files": {name: base64.b64encode(data).decode() for name, data in tmp_files.items()},
    }


class ZygoteProcess:
    """The zygote: started, mapped, watched; requests sent on its control socket."""

    def __init__(
        self,
        python: Path,
        config: dict[str, Any],
        root_uid: int,
        uid_base: int,
        uid_count: int,
        cgroup: Path | None = None,
    ):
        self._python = python
        # The group it runs in, to clone children straight into theirs (CgroupLimiter.clone_into).
        self._cgroup = cgroup
        # Whether its last child was born in its cgroup (CLONE_INTO_CGROUP).
        self.clones_into_cgroup = False
        self._config = json.dumps(config).encode() + b"\n"
        self._environment = dict(config["environment"])
        self._maps = (f"0 {root_uid} 1\n{uid_base} {uid_base} {uid_count}\n").encode()
        self._proc: asyncio.subprocess.Process | None = None
        self._channel: socket.socket | None = None
        self._logger: asyncio.Task[None] | None = None
        self._broken = False  # its end of the control socket failed: it is dying
        self.last_error: str | None = None

    @property
    def alive(self) -> bool:
        """Whether it can take requests (False as soon as its socket fails, before its exit
        status is in)."""
        return (
            not self._broken
            and self._proc is not None
            and self._proc.returncode is None
            and self._channel is not None
        )

    def broke(self) -> None:
        """It failed a request the way only a dying zygote does: no more requests, and it is
        ended for good measure, so that its keeper starts a new one whatever the cause."""
        self._broken = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    @property
    def pid(self) -> int | None:
        """Its host pid."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start it and wait until it says ready; SandboxFailure (and nothing left) if not."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                str(self._python),
                "-I",
                str(SERVER),
                str(theirs.fileno()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                env=self._environment,
                start_new_session=True,
            )
        finally:
            theirs.close()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._logger = asyncio.create_task(self._log_stderr(proc.stderr))
        try:
            proc.stdin.write(self._config)
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT_S)
            if line.strip() != b"userns":
                raise SandboxFailure(f"the zygote did not start: {await self._why(proc)}")
            await asyncio.to_thread(_write_maps, proc.pid, self._maps)
            if self._cgroup is not None:  # before its first child
                await asyncio.to_thread((self._cgroup / "cgroup.procs").write_text, str(proc.pid))
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT_S)
            if line.strip() != b"ready":
                raise SandboxFailure(f"the zygote did not get ready: {await self._why(proc)}")
        except BaseException as exc:
            mine.close()
            await self.stop()
            if isinstance(exc, (OSError, TimeoutError)):
                raise SandboxFailure(f"the zygote did not start: {exc}") from exc
            raise
        mine.setblocking(False)
        self._channel = mine

    async def _why(self, proc: asyncio.subprocess.Process) -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 2)
        return self.last_error or f"exit status {proc.returncode}"

    async def _log_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").strip()[:1000]
            self.last_error = text
            log.warning("%s", text)

    async def wait(self) -> int:
        """Until it exits; its exit status."""
        assert self._proc is not None
        return await self._proc.wait()

    @property
    def spawns_into_cgroups(self) -> bool:
        """Whether it is offered each child's cgroup directory (CLONE_INTO_CGROUP)."""
        return self._cgroup is not None

    async def request(self, host_uid: int, fds: list[int], *, egress: bool = False) -> None:
        """Ask for a child; fds: the connection's far end, then the child's descriptors (the
        egress channel's end after the control output when egress, the cgroup's directory
        among them when spawns_into_cgroups)."""
        channel = self._channel
        if channel is None or not self.alive:
            raise SandboxFailure("the zygote is not running")
        message = json.dumps(
            {"uid": host_uid, "cgroup_dir": self.spawns_into_cgroups, "egress": egress}
        ).encode()
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(channel, [message], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(channel, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(channel)
            except OSError as exc:
                self.broke()
                raise SandboxFailure(f"the zygote is not reachable: {exc}") from exc

    async def stop(self) -> None:
        """End it (its children die with it); safe to call more than once."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._logger is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._logger, 2)


def _write_maps(pid: int, maps: bytes) -> None:
    for name in ("uid_map", "gid_map"):
        Path(f"/proc/{pid}/{name}").write_bytes(maps)


class ChildProcess:
    """A zygote child as a run sees its process: an exit status, told by the zygote."""

    def __init__(self, connection: socket.socket, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._connection = connection
        self._exited = asyncio.Event()
        self._watch = asyncio.create_task(self._wait_exit())

    async def _wait_exit(self) -> None:
        loop = asyncio.get_running_loop()
        status = -9  # the zygote died (or broke the connection): the child was killed
        with contextlib.suppress(OSError, ValueError):
            data = await loop.sock_recv(self._connection, 4096)
            if data:
                status = int(json.loads(data)["exit"])
        self.returncode = status
        self._exited.set()

    async def wait(self) -> int:
        """Until the child has exited; its exit status (negative: killed by that signal)."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """Tell the zygote to kill it (closing our end is the message)."""
        with contextlib.suppress(OSError):
            self._connection.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Forget the connection (the child is gone, or goes now)."""
        self._watch.cancel()
        self._connection.close()


@dataclass(frozen=True)
class ChildContext:
    """What a zygote sandbox needs of the backend that made it."""

    zygote: ZygoteProcess
    limits: RunLimits
    release: Callable[["ZygoteSandbox"], None]
    spare_cgroups: SpareCgroups


class ZygoteSandbox(RunnerSandbox):
    """A ready Python runner forked from the zygote, for one stateless run."""

    def __init__(self, context: ChildContext, sandbox_id: str, uid: int, gid: int) -> None:
        super().__init__(sandbox_id, Language.PYTHON, context.limits)
        self._context = context
        self.uid, self.gid = uid, gid
        self._process: ChildProcess | None = None
        self._channel: RunnerChannel | None = None

    async def start(self) -> None:
        """Have the zygote clone the child, and wait until its runner is ready."""
        loop = asyncio.get_running_loop()
        context = self._context
        self._cgroup = context.spare_cgroups.take() or await asyncio.to_thread(
            self._cgroups.create, f"{self._id}-0"
        )
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        ends: list[int] = []  # the executor's ends of the pipes
        given: list[int] = []  # the child's, closed here once sent (or on failure)
        try:
            # Control input (the executor writes), control output, stdout, stderr (it reads).
            for executor_reads in (False, True, True, True):
                read, write = os.pipe()
                ends.append(read if executor_reads else write)
                given.append(write if executor_reads else read)
            in_w, out_r, stdout_r, stderr_r = ends
            in_r, out_w, stdout_w, stderr_w = given
            egress = self._egress_channel()
            if egress is not None:
                given.append(egress)
            if context.zygote.spawns_into_cgroups and self._cgroup is not None:
                directory = self._cgroup.dirs[0]
                given.append(os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for path in self._cgroup.procs_files if self._cgroup else []:
                given.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            procs = given[4:]
            theirs_fds = [theirs.fileno(), stdout_w, stderr_w, in_r, out_w, *procs]
            try:
                await context.zygote.request(self.uid, theirs_fds, egress=egress is not None)
            finally:
                while given:
                    os.close(given.pop())
                theirs.close()
            reply = json.loads(
                await asyncio.wait_for(loop.sock_recv(mine, 4096), _CHILD_TIMEOUT_S) or b"{}"
            )
            if not reply:
                context.zygote.broke()  # it closed the connection without a word: it died
            if "pid" not in reply:
                raise SandboxFailure(
                    f"the zygote could not start a sandbox: {reply.get('error', 'no answer')}"
                )
            context.zygote.clones_into_cgroup = bool(reply.get("into_cgroup"))
        except BaseException:
            mine.close()
            theirs.close()
            self._stop_egress()
            for fd in (*ends, *given):
                os.close(fd)
            await self._remove_cgroup()
            raise
        self._process = process = ChildProcess(mine, int(reply["pid"]))
        control_out = ControlChannel()
        await loop.connect_read_pipe(lambda: control_out, os.fdopen(out_r, "rb", buffering=0))
        transport, flow = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(in_w, "wb", buffering=0)
        )
        streams = []
        for fd in (stdout_r, stderr_r):
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(
                partial(asyncio.StreamReaderProtocol, reader), os.fdopen(fd, "rb", buffering=0)
            )
            streams.append(reader)
        self._channel = RunnerChannel(
            process=process,
            control_in=asyncio.StreamWriter(transport, flow, None, loop),
            control_out=control_out,
            stdout=OutputStream("stdout", streams[0]),
            stderr=OutputStream("stderr", streams[1]),
        )
        try:
            line = await asyncio.wait_for(control_out.readline(), _START_TIMEOUT_S)
        except (TimeoutError, ProtocolError):
            line = b""
        if not is_ready(line) or self._closed:
            err = b""
            self.abandon()
            with contextlib.suppress(TimeoutError):
                err = await asyncio.wait_for(streams[1].read(4096), 1)
            raise start_failure("python sandbox (zygote)", err)
        try:
            await self._serve_egress()
        except SandboxFailure:
            self.abandon()
            raise
        self._killed = False

    # --- the run target ---

    def runner_pid(self) -> int | None:
        """Host pid of the runner: the child itself."""
        return self.pid

    def own_pids(self) -> frozenset[int]:
        """The child: the sandbox itself."""
        return frozenset({self.pid}) if self.pid is not None else frozenset()

    def abandon(self) -> None:
        """Kill every process of the sandbox now, without waiting.

        The zygote kills the child, pid 1 of its pid namespace, and the kernel every other
        process in it: none can leave that namespace. (When the zygote is gone, the child's
        death signal does it.) The cgroup is emptied again before it is removed.
        """
        self._killed = True
        self._stop_egress()
        if self._process is not None:
            self._process.kill()
        if self._channel is not None:
            self._channel.control_in.close()
            self._channel.control_out.close()
            self._channel = None

    async def kill(self) -> None:
        """Kill every process, wait for the child's end, remove the cgroup."""
        self.abandon()
        if self._process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)
            self._process.close()
        await self._remove_cgroup()

    async def _remove_cgroup(self) -> None:
        """Keep the cgroup for a later sandbox when the child is gone and it is as good as new
        (limits.SpareCgroups); remove it otherwise."""
        cgroup, process = self._cgroup, self._process
        if (
            cgroup is not None
            and process is not None
            and process.returncode is not None
            and self._context.spare_cgroups.give_back(cgroup)
        ):
            self._cgroup = None
            return
        await super()._remove_cgroup()

    async def restart(self) -> None:
        """A zygote sandbox serves one stateless run and never starts again."""
        raise SandboxFailure(f"sandbox {self._id} serves one stateless run; create a new one")

    async def close(self) -> None:
        """Kill it and free its cgroup and uid; for good."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.kill()
        finally:
            self._context.release(self)

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
        """Run code; on timeout interrupt it (keep_state) or kill the sandbox.

        The executor runs one stateless run in each; runs after it see its state, as in any
        runner, but a runner that dies is not replaced (restart() refuses): sessions get
        bubblewrap sandboxes, whose workspace outlives the runner.
        """
        if self._closed or not self.alive or self._channel is None:
            raise SandboxFailure(f"sandbox {self._id} is not running; use a new one")
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
        if not (self._closed and end.done is None):
            outcome.state_lost = keep_state and (end.done is None or not self.alive)
        return outcome

    # --- files (before its run: the request's files; the workspace is the child's own) ---

    @property
    def workspace(self) -> Workspace:
        """The child's /home/user and /tmp, as the host reaches them (through /proc)."""
        # Reached through /proc/<pid>/root while the child is alive (its exit is told by the
        # zygote). Were it to die and its pid be reused within one file operation, the write
        # would land in another process's view, but with the sandbox's own uid as file-system
        # identity (_as_sandbox_user), which owns nothing outside sandboxes.
        if self.pid is None or not self.alive:
            raise SandboxFailure(f"sandbox {self._id} is not running")
        root = Path(f"/proc/{self.pid}/root")
        workspace = Workspace(root, self.uid, self.gid)
        workspace.home, workspace.tmp = root / SANDBOX_HOME.lstrip("/"), root / "tmp"
        return workspace

    async def _as_sandbox_user(self, call: Callable[..., T], *args: Any) -> T:
        """call(*args) in a thread whose file system identity is the sandbox's host uid.

        The workspace is a tmpfs of the child's user namespace, where host root is not mapped
        (files it made would have no owner: EOVERFLOW); and touching the sandbox's files with
        no more right than the sandbox's own user is the safe way anyway. fsuid is per thread.
        """

        def as_user() -> T:
            if os.geteuid() != 0:
                return call(*args)
            _libc.setfsgid(self.gid)
            _libc.setfsuid(self.uid)
            try:
                return call(*args)
            finally:
                _libc.setfsuid(0)
                _libc.setfsgid(0)

        return await asyncio.to_thread(as_user)

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file into the child's /home/user (through its root, as the host sees it)."""
        await self._as_sandbox_user(self.workspace.write_file, path, data)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of the child's /home/user."""
        return await self._as_sandbox_user(self.workspace.read_file, path, max_bytes)

    async def open_file(self, path: str, max_bytes: int) -> Download:
        """A file of the child's /home/user, read in chunks."""
        workspace = self.workspace
        file, size = await self._as_sandbox_user(workspace.open_regular, path, max_bytes)
        return Download.from_file(file, size)

    async def list_files(self, path: str) -> list[FileInfo]:
        """List the child's /home/user."""
        return await self._as_sandbox_user(self.workspace.list_files, path)


class ZygoteKeeper:
    """Keeps a zygote running: started with the backend, restarted (with backoff) when it dies."""

    def __init__(self, make: Callable[[], ZygoteProcess]) -> None:
        self._make = make
        self.current: ZygoteProcess | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def ready(self) -> ZygoteProcess | None:
        """The running zygote, or None while there is none."""
        zygote = self.current
        return zygote if zygote is not None and zygote.alive else None

    async def start(self) -> None:
        """The first zygote; SandboxFailure when it cannot start (the caller falls back)."""
        zygote = self._make()
        await zygote.start()
        self.current = zygote
        self._watcher = asyncio.create_task(self._watch(), name="zygote-watch")

    async def _watch(self) -> None:
        failures = 0
        while True:
            assert self.current is not None
            status = await self.current.wait()
            log.error("the zygote exited (status %s); restarting it", status)
            await self.current.stop()
            self.current = None
            while True:
                await asyncio.sleep(min(0.1 * 2**failures, _MAX_BACKOFF_S))
                zygote = self._make()
                began = time.monotonic()
                try:
                    await zygote.start()
                except SandboxFailure as exc:
                    failures += 1
                    log.error("could not restart the zygote: %s", exc.message)
                    continue
                failures = 0
                self.restarts += 1
                self.current = zygote
                log.info("zygote restarted in %.2f s", time.monotonic() - began)
                break

    async def close(self) -> None:
        """Stop watching and end the zygote."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.current is not None:
            await self.current.stop()
            self.current = None


def runtime_python(runtime_dir: Path) -> Path:
    """The sandbox runtime's interpreter, which the zygote runs on."""
    return runtime_dir / "python" / "bin" / "python"
