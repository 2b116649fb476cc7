"""The E2B backend: the same sandboxes API on E2B cloud sandboxes (e2b-code-interpreter).

Imported only when CODE_EXEC_BACKEND=e2b. Python, JavaScript and Bash run in the sandbox's
Jupyter-based code contexts (one context per sandbox, so sessions keep their state); C is
compiled with gcc through a bash context. Sandbox creation is rate limited to the plan's rate
with backoff on 429. Every sandbox carries metadata naming this executor, so that sandboxes
left by a crash are found and killed at the next start and never keep running at our cost.
"""

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executor.backends.base import RunAccess, RunOutcome, signal_error
from executor.backends.capture import StreamCapture
from executor.config import ExecutorSettings
from executor.errors import FileNotFound, PayloadTooLarge, SandboxFailure, Unavailable
from executor.interface import Download, OutputCallback
from schemas.execution import ExecutionError, Image, check_workspace_path
from schemas.files import FileInfo
from schemas.health import BackendHealth
from schemas.languages import Language
from schemas.network import Network

log = logging.getLogger(__name__)

WORKSPACE = "/home/user"
TAG = "code-exec-executor"
_CONTEXT_LANGUAGE = {Language.PYTHON: "python", Language.JAVASCRIPT: "js", Language.BASH: "bash"}
_RC = "__code_exec_rc="
_CC = "__code_exec_cc="
_MAX_TRIES = 6


def _import_sdk() -> Any:
    try:
        import e2b_code_interpreter  # type: ignore[import-untyped]
    except ImportError as exc:
        raise SandboxFailure(
            "the E2B backend needs the e2b extra: pip install 'code-exec[e2b]' "
            "(or set CODE_EXEC_BACKEND=local)"
        ) from exc
    return e2b_code_interpreter


class _RateLimiter:
    """At most `rate` starts per second, shared by every pool."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Wait for the next free slot."""
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


class E2BSandbox:
    """One E2B sandbox with its code context."""

    def __init__(
        self, backend: "E2BBackend", language: Language, sandbox: Any, context: Any
    ) -> None:
        self._backend = backend
        self._language = language
        self._sandbox = sandbox
        self._context = context
        self._closed = False

    @property
    def id(self) -> str:
        """E2B's sandbox id."""
        return str(self._sandbox.sandbox_id)

    @property
    def language(self) -> Language:
        """The language of its context."""
        return self._language

    @property
    def alive(self) -> bool:
        """Until closed (E2B kills it at its timeout otherwise)."""
        return not self._closed

    async def _run_code(
        self,
        code: str,
        env: Mapping[str, str],
        timeout: float,
        stdout: StreamCapture,
        stderr: StreamCapture,
        on_output: OutputCallback | None,
    ) -> Any:
        async def out(message: Any) -> None:
            stdout.feed(message.line.encode())
            if on_output is not None:
                await on_output("stdout", message.line)

        async def err(message: Any) -> None:
            stderr.feed(message.line.encode())
            if on_output is not None:
                await on_output("stderr", message.line)

        return await self._sandbox.run_code(
            code,
            context=self._context,
            envs=dict(env) or None,
            timeout=timeout,
            on_stdout=out,
            on_stderr=err,
        )

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
        """Run code in the sandbox's context; a timeout restarts the context (state lost)."""
        sdk = self._backend.sdk
        settings = self._backend.settings
        stdout = stdout or StreamCapture(settings.max_output_bytes)
        stderr = stderr or StreamCapture(settings.max_output_bytes)
        if keep_state:
            # Extend the sandbox's life while its session is in use.
            with contextlib.suppress(Exception):
                await self._sandbox.set_timeout(settings.e2b_sandbox_timeout_s)
        outcome = RunOutcome(stdout=stdout, stderr=stderr, exit_code=0)
        try:
            if self._language is Language.C:
                return await asyncio.wait_for(
                    self._run_c(code, env, timeout, outcome, on_output), timeout
                )
            # Our own deadline: the SDK's transport lets a run go on to about twice its timeout.
            execution = await asyncio.wait_for(
                self._run_code(code, env, timeout, stdout, stderr, on_output), timeout
            )
        except (TimeoutError, sdk.TimeoutException):
            return await self._timed_out(outcome, timeout)
        except sdk.SandboxException as exc:
            raise SandboxFailure(f"E2B sandbox {self.id} failed: {exc}") from exc
        for result in execution.results:
            if result.is_main_result and result.text is not None:
                outcome.value = result.text
            if result.png:
                outcome.images.append(Image(data=result.png))
        if execution.error is not None:
            outcome.exit_code = 1
            outcome.error = ExecutionError(
                name=execution.error.name,
                value=execution.error.value,
                traceback=execution.error.traceback,
            )
        return outcome

    async def _timed_out(self, outcome: RunOutcome, timeout: float) -> RunOutcome:
        # The kernel keeps running the code after the client gives up: restart the context.
        outcome.timed_out = True
        outcome.exit_code = 124
        outcome.state_lost = self._context is not None
        with contextlib.suppress(Exception):
            await self._sandbox.restart_code_context(self._context)
        outcome.error = ExecutionError(
            name="TimeoutError",
            value=f"execution exceeded the timeout of {timeout:g} s; the code context was "
            "restarted",
        )
        return outcome

    async def _run_c(
        self,
        code: str,
        env: Mapping[str, str],
        timeout: float,
        outcome: RunOutcome,
        on_output: OutputCallback | None,
    ) -> RunOutcome:
        """Compile main.c with gcc and run it, in one call of the bash context."""
        fence = f"__CODE_EXEC_{secrets.token_hex(6)}__"
        script = (
            f'cd {WORKSPACE} 2>/dev/null || cd "$(mktemp -d)"\n'
            f"cat > main.c <<'{fence}'\n{code}\n{fence}\n"
            "gcc -std=gnu17 -O2 -Wall -o main main.c -lm 1>&2; __cc=$?\n"
            f'if [ $__cc -ne 0 ]; then echo "{_CC}$__cc" >&2; '
            f'else ./main; echo "{_RC}$?" >&2; fi'
        )
        await self._run_code(script, env, timeout, outcome.stdout, outcome.stderr, on_output)
        text = (bytes(outcome.stderr.head) + outcome.stderr.tail).decode(errors="replace")
        if _CC in text:
            diagnostics = text.rsplit(_CC, 1)[0]
            outcome.exit_code = int(text.rsplit(_CC, 1)[1].split()[0])
            first = next((ln for ln in diagnostics.splitlines() if "error" in ln), "")
            outcome.error = ExecutionError(
                name="CompileError", value=first or "compilation failed", traceback=diagnostics
            )
        elif _RC in text:
            outcome.exit_code = int(text.rsplit(_RC, 1)[1].split()[0])
            outcome.error = signal_error(outcome.exit_code)
        for marker in (_CC, _RC):
            outcome.stderr.remove_last_line_with(marker.encode())
        return outcome

    async def write_file(self, path: str, data: bytes | Path) -> None:
        """Write into /home/user."""
        content = await asyncio.to_thread(data.read_bytes) if isinstance(data, Path) else data
        await self._sandbox.files.write(f"{WORKSPACE}/{check_workspace_path(path)}", content)

    async def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read from /home/user."""
        sdk = self._backend.sdk
        try:
            data = await self._sandbox.files.read(
                f"{WORKSPACE}/{check_workspace_path(path)}", format="bytes"
            )
        except sdk.NotFoundException as exc:
            raise FileNotFound(f"no file {path!r} in the workspace") from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{path!r} is above the download limit of {max_bytes}")
        return bytes(data)

    async def open_file(self, path: str, max_bytes: int) -> Download:
        """The SDK reads a file whole: it is held once, then sent."""
        return Download.of(await self.read_file(path, max_bytes))

    async def list_files(self, path: str) -> list[FileInfo]:
        """List /home/user (or a directory in it), recursively."""
        sdk = self._backend.sdk
        base = WORKSPACE if path in ("", ".", WORKSPACE) else f"{WORKSPACE}/{path}"
        try:
            entries = await self._sandbox.files.list(base, depth=16)
        except sdk.NotFoundException as exc:
            raise FileNotFound(f"no directory {path!r} in the workspace") from exc
        found = []
        for entry in entries:
            rel = str(entry.path).removeprefix(WORKSPACE + "/")
            is_dir = str(getattr(entry.type, "value", entry.type)).lower().startswith("dir")
            modified = getattr(entry, "modified_time", None) or datetime.now(UTC)
            found.append(
                FileInfo(
                    path=rel, size=0 if is_dir else entry.size, is_dir=is_dir, modified_at=modified
                )
            )
        return sorted(found, key=lambda f: f.path)

    async def memory_bytes(self) -> int | None:
        """Not known for remote sandboxes."""
        return None

    async def restart(self) -> None:
        """A fresh code context in the same sandbox (its files are kept)."""
        if self._closed:
            raise SandboxFailure(f"sandbox {self.id} is closed")
        if self._context is not None:
            try:
                await self._sandbox.restart_code_context(self._context)
            except Exception as exc:
                raise SandboxFailure(f"could not restart E2B sandbox {self.id}: {exc}") from exc

    async def close(self) -> None:
        """Kill the sandbox (paid time stops)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._sandbox.kill()
        except Exception as exc:
            log.warning("could not kill E2B sandbox %s: %s", self.id, exc)
        finally:
            self._backend.forget(self)


class E2BBackend:
    """Creates E2B sandboxes behind the backend interface."""

    name = "e2b"

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.sdk: Any = None
        self._api_key = ""
        self._limiter = _RateLimiter(settings.e2b_creates_per_s)
        self._live: dict[str, E2BSandbox] = {}
        self.metadata = {TAG: settings.e2b_executor_name}

    async def start(self) -> None:
        """Check the extra and the key; kill sandboxes a crashed run of ours left behind."""
        if self.settings.network is not Network.NONE:
            raise SandboxFailure(
                f"CODE_EXEC_NETWORK={self.settings.network.value} is not kept by the E2B "
                "backend: an E2B sandbox gets the whole internet or none of it, not only the "
                "package indexes or an allowlist. Use CODE_EXEC_NETWORK=none with E2B, or the "
                "local backend for packages and allowlists"
            )
        if self.settings.upstream_config is not None:
            raise SandboxFailure(
                "CODE_EXEC_UPSTREAM_CONFIG (code mode) needs the local backend: an E2B sandbox "
                "has no channel the executor controls for its tool calls. Unset it with E2B, or "
                "use the local backend for code mode"
            )
        self.sdk = _import_sdk()
        key = self.settings.e2b_api_key
        self._api_key = key.get_secret_value() if key else os.environ.get("E2B_API_KEY", "")
        if not self._api_key:
            raise SandboxFailure(
                "CODE_EXEC_BACKEND=e2b needs an E2B API key: set E2B_API_KEY "
                "(or CODE_EXEC_E2B_API_KEY); get one at e2b.dev"
            )
        killed = await self.kill_leftovers()
        if killed:
            log.warning("killed %d E2B sandboxes left by an earlier run of this executor", killed)

    async def kill_leftovers(self) -> int:
        """Find this executor's sandboxes by metadata and kill them."""
        sdk = self.sdk
        paginator = sdk.AsyncSandbox.list(
            query=sdk.SandboxQuery(metadata=self.metadata), api_key=self._api_key
        )
        killed = 0
        while paginator.has_next:
            for info in await paginator.next_items():
                if info.sandbox_id not in self._live:
                    await sdk.AsyncSandbox.kill(info.sandbox_id, api_key=self._api_key)
                    killed += 1
        return killed

    def separate_stateless(self, language: Language) -> bool:
        """E2B sandboxes are of one kind."""
        return False

    async def create(self, language: Language, *, stateless: bool = False) -> E2BSandbox:
        """A sandbox with a context for the language, within the plan's creation rate."""
        sdk = self.sdk
        template = self.settings.e2b_templates.get(language)
        delay = 1.0
        for attempt in range(_MAX_TRIES):
            await self._limiter.wait()
            try:
                sandbox = await sdk.AsyncSandbox.create(
                    template=template,
                    api_key=self._api_key,
                    metadata=self.metadata,
                    timeout=self.settings.e2b_sandbox_timeout_s,
                    allow_internet_access=False,  # no network: the one level E2B can keep
                )
                break
            except sdk.RateLimitException:
                if attempt == _MAX_TRIES - 1:
                    raise Unavailable(
                        "E2B refuses to create more sandboxes now (rate limit); retry shortly",
                        retry_after=delay,
                    ) from None
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay = min(delay * 2, 30.0)
            except sdk.AuthenticationException as exc:
                raise SandboxFailure(f"E2B refused the API key: {exc}") from exc
        context_language = _CONTEXT_LANGUAGE.get(language, "bash")
        try:
            context = await sandbox.create_code_context(language=context_language)
        except Exception:
            with contextlib.suppress(Exception):
                await sandbox.kill()
            raise
        wrapped = E2BSandbox(self, language, sandbox, context)
        self._live[wrapped.id] = wrapped
        return wrapped

    def forget(self, sandbox: E2BSandbox) -> None:
        """Drop a closed sandbox from the live set."""
        self._live.pop(sandbox.id, None)

    def health(self) -> BackendHealth:
        """What this backend is and how many sandboxes it holds."""
        return BackendHealth.model_validate(
            {
                "backend": self.name,
                "live_sandboxes": len(self._live),
                "isolation": "E2B cloud sandboxes (Firecracker microVMs)",
                "network": "none (allow_internet_access=false)",
                "executor_tag": f"{TAG}={self.settings.e2b_executor_name}",
                "creates_per_s": self.settings.e2b_creates_per_s,
            }
        )

    async def close(self) -> None:
        """Kill every sandbox still open."""
        for sandbox in list(self._live.values()):
            await sandbox.close()
