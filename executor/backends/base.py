"""The backend interface: create sandboxes, run code in them, close them, report health."""

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from executor.backends.capture import StreamCapture
from executor.interface import Download, OutputCallback
from schemas.execution import ExecutionError, Image
from schemas.files import FileInfo
from schemas.health import BackendHealth
from schemas.languages import Language
from schemas.network import NetworkGrant


def signal_error(exit_code: int) -> ExecutionError | None:
    """The error of an exit status that means death by a signal (128 + N), else None."""
    if exit_code <= 128:
        return None
    try:
        sig = signal.Signals(exit_code - 128)
    except ValueError:
        return None
    description = signal.strsignal(sig) or sig.name
    return ExecutionError(name="Signal", value=f"killed by {sig.name} ({description})")


@dataclass
class ByteAllowance:
    """Network bytes one user's runs may move in a window (CODE_EXEC_EGRESS_USER_MB_PER_HOUR),
    shared by all of them; the sandbox's egress takes from it as the bytes pass."""

    limit: int
    window_s: float = 3600.0
    used: int = 0
    window_start: float = field(default_factory=time.monotonic)

    def take(self, n: int) -> bool:
        """Count n bytes; False once the window's limit is passed."""
        now = time.monotonic()
        if now - self.window_start >= self.window_s:
            self.window_start, self.used = now, 0
        self.used += n
        return self.used <= self.limit

    def reason(self) -> str:
        """What a refusal tells the code."""
        left = self.window_start + self.window_s - time.monotonic()
        return (
            f"this user's runs moved their {self.limit // (1024 * 1024)} MiB of network traffic "
            f"for the hour (CODE_EXEC_EGRESS_USER_MB_PER_HOUR); more in {max(left, 0):.0f} s"
        )


class ToolGate(Protocol):
    """The operator's MCP tools as one run's code may call them (code mode): the executor's
    end of the channel. A backend passes each request the sandbox makes under /tools/ to it,
    and sends back what it answers; the gate decides, counts and logs."""

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, JSON body) for one request of the sandbox's tools module."""
        ...


@dataclass(frozen=True)
class RunAccess:
    """What one run may reach beyond its sandbox: the network (already narrowed to this run),
    the user's network byte allowance, and the operator's tools."""

    network: NetworkGrant | None = None
    allowance: ByteAllowance | None = None
    tools: ToolGate | None = None


@dataclass
class RunOutcome:
    """What a sandbox reports of one run, before the executor shapes it into a result."""

    stdout: StreamCapture
    stderr: StreamCapture
    exit_code: int
    error: ExecutionError | None = None
    value: str | None = None
    images: list[Image] = field(default_factory=list)
    timed_out: bool = False
    state_lost: bool = False


class Sandbox(Protocol):
    """One isolated environment with a runner waiting for code."""

    @property
    def id(self) -> str:
        """Unique id of the sandbox."""
        ...

    @property
    def language(self) -> Language:
        """The language its runner speaks."""
        ...

    @property
    def alive(self) -> bool:
        """Whether the runner can take another run."""
        ...

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

        Output goes into the given captures (fresh ones, sized by the settings, when None);
        access says what the run reaches beyond the sandbox (nothing when None).
        """
        ...

    async def restart(self) -> None:
        """A fresh interpreter on the same workspace (files kept, state gone), after the old one
        died or was killed; SandboxFailure when that cannot be done (e.g. after close)."""
        ...

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write a file into the workspace (path relative to /home/user); a Path is copied."""
        ...

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a file of the workspace."""
        ...

    async def open_file(self, path: str, max_bytes: int) -> Download:
        """A file of the workspace, read in chunks as the download is sent."""
        ...

    async def list_files(self, path: str) -> list[FileInfo]:
        """List a directory of the workspace, recursively."""
        ...

    async def memory_bytes(self) -> int | None:
        """Resident memory of the sandbox's processes, when known."""
        ...

    async def close(self) -> None:
        """Kill every process of the sandbox and free its resources."""
        ...


class Backend(Protocol):
    """A source of sandboxes."""

    name: str

    async def start(self) -> None:
        """Check the host and clean leftovers of an earlier run."""
        ...

    async def create(self, language: Language, *, stateless: bool = False) -> Sandbox:
        """Start a sandbox whose runner is ready for code.

        stateless: it will serve one run and be closed (no restart, no file API after the run);
        a backend may then give a lighter kind (see separate_stateless).
        """
        ...

    def separate_stateless(self, language: Language) -> bool:
        """Whether create(language, stateless=True) gives another kind of sandbox than a
        session's: the executor then keeps a warm pool of each."""
        ...

    def health(self) -> BackendHealth:
        """What isolation and limits are in force, for /health and the startup log."""
        ...

    async def close(self) -> None:
        """Stop every sandbox still open."""
        ...
