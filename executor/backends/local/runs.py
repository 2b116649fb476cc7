"""One run in a started sandbox, and what its end means.

A run sends the code on the control pipe, copies stdout and stderr into captures up to the run's
sentinel, as they are produced, and waits for the runner's done. On timeout a session
(keep_state) has the runner interrupted and a grace period to answer, then what the run started
is killed and the runner kept; otherwise, or when the runner does not answer, every process of
the sandbox is killed. A runner that breaks the protocol (protocol.py) has every process of its
sandbox killed too. The end (a done message, bubblewrap's exit status, an OOM kill, a timeout,
a broken protocol) then becomes the RunOutcome the executor shapes into a result: nothing the
sandbox sends makes a run raise.
"""

import asyncio
import codecs
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from executor.backends.base import RunOutcome, signal_error
from executor.backends.capture import StreamCapture
from executor.backends.local.protocol import (
    ControlChannel,
    Done,
    ProtocolError,
    encode_run,
    new_run_id,
    parse_done,
    sentinel,
)
from executor.interface import OutputCallback
from schemas.execution import ExecutionError
from schemas.languages import Language

_DRAIN_TIMEOUT_S = 2.0
_KILLED_EXIT_CODE = 128 + signal.SIGKILL


class OutputStream:
    """One output pipe of the runner, cut into runs at each run's sentinel."""

    def __init__(self, name: str, reader: asyncio.StreamReader) -> None:
        self.name = name
        self._reader = reader
        # Read past the last sentinel (the start of the next run's output), or not yet emitted
        # when a pump was cancelled: kept here, so that no byte is lost between runs.
        self._carry = b""

    async def pump(
        self, marker: bytes, capture: StreamCapture, on_output: OutputCallback | None
    ) -> bool:
        """Copy the stream into capture up to marker, the run's sentinel (True), or EOF (False)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if on_output else None

        async def emit(data: bytes, final: bool = False) -> None:
            capture.feed(data)
            if decoder is not None and on_output is not None:
                text = decoder.decode(data, final)
                if text:
                    await on_output(self.name, text)

        keep = len(marker) - 1
        while True:
            carry, self._carry = self._carry, b""
            index = carry.find(marker)
            if index >= 0:
                self._carry = carry[index + len(marker) :]
                await emit(carry[:index], final=True)
                return True
            self._carry = carry
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                self._carry = b""
                await emit(carry, final=True)
                return False
            data = carry + chunk
            if marker in data:
                self._carry = data
                continue
            # Hold back only a tail that could be the start of the sentinel, so output
            # reaches on_output as soon as it is read.
            hold = len(data)
            start = data.find(marker[:1], max(0, len(data) - keep))
            while start >= 0:
                if marker.startswith(data[start:]):
                    hold = start
                    break
                start = data.find(marker[:1], start + 1)
            self._carry = data[hold:]
            await emit(data[:hold])


class RunnerProcess(Protocol):
    """The process a runner lives in, as a run waits for it (bubblewrap, or a zygote child)."""

    @property
    def pid(self) -> int:
        """Its host pid."""
        ...

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has exited (negative: the signal that killed it)."""
        ...

    async def wait(self) -> int:
        """Until it has exited; its exit status."""
        ...


@dataclass(frozen=True)
class RunnerChannel:
    """The executor's end of a started runner: its process, the control pipes, the output."""

    process: RunnerProcess
    control_in: asyncio.StreamWriter
    control_out: ControlChannel
    stdout: OutputStream
    stderr: OutputStream


class RunTarget(Protocol):
    """The sandbox a run happens in, as far as the run needs it (LocalSandbox is one)."""

    @property
    def language(self) -> Language:
        """The language its runner speaks."""
        ...

    def runner_pid(self) -> int | None:
        """Host pid of the runner, when it can be found."""
        ...

    def own_pids(self) -> frozenset[int]:
        """Host pids that are the sandbox itself: bubblewrap's two processes and the runner."""
        ...

    def process_ids(self) -> list[int]:
        """Host pids of every process of the sandbox, bubblewrap included."""
        ...

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer acted in the sandbox (False once it is killed)."""
        ...

    def abandon(self) -> None:
        """Kill every process of the sandbox now, without waiting (kill() tidies up later)."""
        ...

    async def kill(self) -> None:
        """Kill every process of the sandbox."""
        ...


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, before anyone says what that means."""

    done: Done | None  # the runner's report; None when it never came
    timed_out: bool
    exit_status: int | None  # bubblewrap's return code, when there was no done
    oom_killed: bool
    broken: str | None = None  # how the runner broke the protocol (its sandbox was killed)


def _interrupt(target: RunTarget) -> None:
    """SIGINT to the runner: the language's own way to stop the current run."""
    pid = target.runner_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)


async def _kill_strays(target: RunTarget) -> None:
    """After an interrupted run, kill what it started (children, forks) but the runner."""
    # Known by pid, never by name: the code names its processes as it likes ("bwrap" too).
    keep = target.own_pids()
    # Strays may still be forking: repeat until none is left (the pids limit bounds it).
    for _ in range(100):
        strays = [pid for pid in target.process_ids() if pid not in keep]
        if not strays:
            return
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.01)


async def _exchange(channel: RunnerChannel, request: bytes, run_id: str) -> Done | None:
    """Send the run, then wait for its done: None when the runner's control output ends first.

    ProtocolError when the runner (or the code in it) breaks the protocol on the way.
    """
    try:
        channel.control_in.write(request)
        # Under the run's timeout: a runner still busy (with code that forged a done) reads late.
        await channel.control_in.drain()
    except ConnectionError:
        pass  # the runner is gone; EOF follows, and the exit status says why
    while True:
        line = await channel.control_out.readline()
        if not line:
            return None
        done = parse_done(line, run_id)
        if done is not None:
            return done


async def execute(
    target: RunTarget,
    channel: RunnerChannel,
    code: str,
    *,
    env: Mapping[str, str],
    timeout: float,
    keep_state: bool,
    interrupt_grace_s: float,
    on_output: OutputCallback | None,
    stdout: StreamCapture,
    stderr: StreamCapture,
) -> RunEnd:
    """Run code in target through channel, output into the captures; how the run ended."""
    run_id = new_run_id()
    marker = sentinel(run_id)
    pumps = [
        asyncio.create_task(channel.stdout.pump(marker, stdout, on_output)),
        asyncio.create_task(channel.stderr.pump(marker, stderr, on_output)),
    ]
    request = encode_run(target.language, run_id, code, env)
    exchange = asyncio.create_task(_exchange(channel, request, run_id))
    done: Done | None = None
    timed_out = False
    broken: str | None = None
    try:
        try:
            try:
                done = await asyncio.wait_for(asyncio.shield(exchange), timeout)
            except TimeoutError:
                timed_out = True
                if keep_state and target.language is not Language.BASH:
                    _interrupt(target)
                    with contextlib.suppress(TimeoutError):
                        done = await asyncio.wait_for(asyncio.shield(exchange), interrupt_grace_s)
                    if done is not None:
                        await _kill_strays(target)
        except ProtocolError as exc:  # in the run, or in the grace period after its timeout
            broken = exc.message
        if done is None:
            exchange.cancel()
            if timed_out or broken is not None:
                await target.kill()
            else:
                # The runner is gone; the streams close once every process of the sandbox is.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.process.wait(), _DRAIN_TIMEOUT_S)
        _, pending = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT_S)
        for task in pending:
            task.cancel()
        if done is not None:
            return RunEnd(done=done, timed_out=timed_out, exit_status=None, oom_killed=False)
        exit_status = channel.process.returncode
        if exit_status is None:
            with contextlib.suppress(TimeoutError):
                exit_status = await asyncio.wait_for(channel.process.wait(), _DRAIN_TIMEOUT_S)
    except BaseException:
        exchange.cancel()
        for pump in pumps:
            pump.cancel()
        # A run cancelled half-way leaves the runner in an unknown state. Killed at once, with
        # no await: a cancellation delivered again must not leave it half done.
        target.abandon()
        raise
    return RunEnd(
        done=None,
        timed_out=timed_out,
        exit_status=exit_status,
        oom_killed=target.oom_killed(),
        broken=broken,
    )


def interpret(
    end: RunEnd,
    *,
    stdout: StreamCapture,
    stderr: StreamCapture,
    timeout: float,
    keep_state: bool,
    memory_limit_mib: int,
) -> RunOutcome:
    """What a run's end means for the caller: exit code, error, value, images."""
    outcome = RunOutcome(stdout=stdout, stderr=stderr, exit_code=0, timed_out=end.timed_out)
    if end.broken is not None:
        consequence = "the session's runner was restarted" if keep_state else "run it again"
        outcome.exit_code = _KILLED_EXIT_CODE
        outcome.error = ExecutionError(
            name="SandboxError",
            value=f"the runner's protocol was broken, so every process of the sandbox was "
            f"killed ({end.broken}); {consequence}",
        )
        return outcome
    if end.done is not None:
        outcome.exit_code = end.done.exit_code
        outcome.error = end.done.error
        outcome.value = end.done.value
        outcome.images = list(end.done.images)
    else:
        status = end.exit_status
        outcome.exit_code = status if status is not None else -1
        if status is not None and status < 0:  # bwrap itself killed
            outcome.exit_code = 128 - status
        if end.oom_killed:
            outcome.error = ExecutionError(
                name="MemoryError",
                value=f"out of memory: the sandbox's limit is {memory_limit_mib} MiB; "
                "use less memory",
            )
            outcome.exit_code = 137
        elif not end.timed_out:
            outcome.error = signal_error(outcome.exit_code)
    if end.timed_out:
        outcome.exit_code = 124
        kept = end.done is not None and keep_state
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
    return outcome
