"""The executor: validates a request, finds its sandbox (warm pool or session), runs, shapes.

This is the one place where requests meet sandboxes; the HTTP app and the in-process client
both call it.
"""

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from executor.backends import Backend, OutputCallback, RunOutcome, create_backend
from executor.backends.base import Sandbox
from executor.capture import StreamCapture
from executor.config import ExecutorSettings
from executor.errors import ExecutorError, InvalidRequest, PayloadTooLarge
from executor.metrics import Metrics
from executor.outputs import STREAMS, OutputPage, OutputStore
from executor.pool import WarmPool
from executor.sessions import Session, SessionManager
from executor.tokens import get_encoding
from executor.truncation import Budget, fit_result, truncation_info
from schemas.execution import ExecuteRequest, ExecuteResult, StreamTruncation, Truncation
from schemas.files import FileInfo
from schemas.languages import Language
from schemas.sessions import SessionInfo

log = logging.getLogger(__name__)


def _truncation(outcome: RunOutcome) -> Truncation | None:
    streams = {}
    for name in ("stdout", "stderr"):
        capture = getattr(outcome, name)
        if capture.truncated:
            streams[name] = StreamTruncation(
                original_bytes=capture.total_bytes,
                original_lines=capture.total_lines,
                kept_bytes=capture.kept_bytes,
            )
    return Truncation(**streams) if streams else None


class Executor:
    """Pools, sessions and limits around a backend."""

    def __init__(self, settings: ExecutorSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings)
        self.metrics = Metrics()
        self._start_slots = asyncio.Semaphore(settings.max_concurrent_starts)
        self.pools: dict[Language, WarmPool] = {
            language: WarmPool(
                language,
                settings.pool_sizes.get(language, 0),
                self.backend.create,
                self._start_slots,
                settings.pool_wait_s,
            )
            for language in Language
        }
        self.sessions = SessionManager(settings, self._acquire)
        self.outputs = OutputStore(
            settings.state_dir / f"outputs-{os.getpid()}",
            settings.output_ttl_s,
            settings.output_store_mb * 1024 * 1024,
            settings.output_spill_mb * 1024 * 1024,
        )
        self._housekeeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()

    async def start(self) -> None:
        """Start the backend, the pools and the session reaper."""
        await self.backend.start()
        self.outputs.open()
        # Build the default encoding now (about a second) rather than in the first request.
        await asyncio.to_thread(get_encoding)
        for pool in self.pools.values():
            pool.start()
        self.sessions.start()
        self._housekeeper = asyncio.create_task(self._sweep_outputs(), name="output-sweeper")

    async def _sweep_outputs(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            self.outputs.sweep()

    async def close(self) -> None:
        """Close sessions, pools and the backend; nothing is left running."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        await self.sessions.close_all()
        for pool in self.pools.values():
            await pool.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.backend.close()
        self.outputs.close()

    async def _acquire(self, language: Language) -> Sandbox:
        return await self.pools[language].acquire()

    def _in_background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- validation ---

    def _budget(self, request: ExecuteRequest) -> int:
        settings = self.settings
        tokens = request.max_output_tokens or settings.default_output_tokens
        if tokens > settings.max_output_tokens:
            raise InvalidRequest(
                f"max_output_tokens {tokens} is above the limit of {settings.max_output_tokens}"
            )
        if tokens < settings.min_output_tokens:
            raise InvalidRequest(
                f"max_output_tokens {tokens} is below the minimum of {settings.min_output_tokens}"
            )
        return tokens

    def _check(self, request: ExecuteRequest) -> float:
        settings = self.settings
        size = len(request.code.encode("utf-8", errors="surrogatepass"))
        if size > settings.max_code_bytes:
            raise PayloadTooLarge(
                f"code is {size} bytes, above the limit of {settings.max_code_bytes} bytes; "
                "send large data as a file instead"
            )
        files_size = sum(len(c.encode()) for c in (request.files or {}).values())
        if files_size > settings.max_file_bytes:
            raise PayloadTooLarge(
                f"files total {files_size} bytes, above the limit of {settings.max_file_bytes}"
            )
        timeout = request.timeout if request.timeout is not None else settings.default_timeout_s
        if timeout > settings.max_timeout_s:
            raise InvalidRequest(
                f"timeout {timeout:g} s is above the limit of {settings.max_timeout_s:g} s"
            )
        return timeout

    # --- running ---

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run the request's code and return its result (the code's failures are values)."""
        timeout = self._check(request)
        budget_tokens = self._budget(request)
        encoding = get_encoding(request.token_encoding)
        env = request.env or {}
        execution_id = f"exe_{secrets.token_hex(12)}"
        captures = {
            stream: self.outputs.capture(execution_id, stream, self.settings.max_output_bytes)
            for stream in STREAMS
        }
        session: Session | None = None
        try:
            if request.session_id is not None:
                session = self.sessions.get(request.session_id, user)
                language = session.language
                if request.language is not None and request.language is not language:
                    raise InvalidRequest(
                        f"session {request.session_id!r} runs {language.value}, not "
                        f"{request.language.value}; omit language or open a "
                        f"{request.language.value} session"
                    )
                async with session.lock:
                    began = time.perf_counter()
                    outcome = await self._run_in(
                        session.sandbox, request, env, timeout, True, on_output, captures
                    )
                    session.runs += 1
                    session.touch()
            else:
                language = request.language or Language.PYTHON
                sandbox = await self.pools[language].acquire()
                try:
                    began = time.perf_counter()
                    outcome = await self._run_in(
                        sandbox, request, env, timeout, False, on_output, captures
                    )
                finally:
                    # Never reused: destroyed off the response path.
                    self._in_background(sandbox.close())
        except BaseException:
            self.outputs.discard(captures)
            raise
        seconds = time.perf_counter() - began
        result_name = "timeout" if outcome.timed_out else ("error" if outcome.exit_code else "ok")
        self.metrics.observe_run(language.value, result_name, seconds)
        full = ExecuteResult(
            execution_id=execution_id,
            language=language,
            stdout=outcome.stdout.text(),
            stderr=outcome.stderr.text(),
            exit_code=outcome.exit_code,
            error=outcome.error,
            value=outcome.value,
            timed_out=outcome.timed_out,
            duration_ms=round(seconds * 1000),
            session_id=request.session_id,
            state_lost=outcome.state_lost,
            images=outcome.images,
        )
        lost = {
            name: (capture.total_lines - full_lines + 1, capture.total_bytes - capture.kept_bytes)
            for name, capture in captures.items()
            if capture.truncated
            for full_lines in [getattr(full, name).count("\n") + 1]
        }
        budget = Budget(budget_tokens, encoding, self._pointer(execution_id, session), lost)
        if len(full.stdout) + len(full.stderr) > 64 * 1024:
            fitted, cut = await asyncio.to_thread(fit_result, full, budget)
        else:
            fitted, cut = fit_result(full, budget)
        byte_cut = _truncation(outcome)
        fitted.truncation = truncation_info(full, fitted, encoding, byte_cut)
        if cut or byte_cut is not None:
            self.outputs.keep(execution_id, user, captures)
            if session is not None:
                await self._save_in_workspace(session, execution_id, captures)
        else:
            self.outputs.discard(captures)
        return fitted

    async def _run_in(
        self,
        sandbox: Sandbox,
        request: ExecuteRequest,
        env: dict[str, str],
        timeout: float,
        keep_state: bool,
        on_output: OutputCallback | None,
        captures: dict[str, StreamCapture],
    ) -> RunOutcome:
        for path, content in (request.files or {}).items():
            await sandbox.write_file(path, content.encode())
        return await sandbox.run(
            request.code,
            env=env,
            timeout=timeout,
            keep_state=keep_state,
            on_output=on_output,
            stdout=captures["stdout"],
            stderr=captures["stderr"],
        )

    @staticmethod
    def _workspace_name(execution_id: str, stream: str) -> str:
        suffix = "" if stream == "stdout" else f".{stream}"
        return f".outputs/{execution_id}{suffix}.txt"

    def _pointer(self, execution_id: str, session: Session | None) -> Callable[[str, int], str]:
        """How a marker tells the model where the whole text is."""

        def where(part: str, first_line: int) -> str:
            if part not in STREAMS:
                return "shorten what the code returns or prints"
            api = f"GET /executions/{execution_id}/output?stream={part}&offset={first_line - 1}"
            if session is None:
                return f"read them with {api}"
            path = f"/home/user/{self._workspace_name(execution_id, part)}"
            return f"all of it is in {path} (from line {first_line}), or {api}"

        return where

    async def _save_in_workspace(
        self, session: Session, execution_id: str, captures: dict[str, StreamCapture]
    ) -> None:
        """Also keep a cut output as a file of the session, where code can grep it."""
        for stream, capture in captures.items():
            if not capture.total_bytes:
                continue
            name = self._workspace_name(execution_id, stream)
            source = capture.spill_path if capture.spilled and capture.spill_path else None
            try:
                await session.sandbox.write_file(
                    name, source if source is not None else bytes(capture.head) + capture.tail
                )
            except ExecutorError as exc:  # e.g. the workspace is full: the store still has it
                log.warning("could not save %s in the session: %s", name, exc.message)

    async def read_output(
        self,
        execution_id: str,
        user: str,
        stream: str = "stdout",
        offset: int = 0,
        limit: int = 200,
    ) -> OutputPage:
        """Lines of the whole output of a cut result."""
        return self.outputs.read(execution_id, user, stream, offset, limit)

    # --- sessions ---

    async def open_session(self, language: Language, user: str) -> SessionInfo:
        """Open a session with a dedicated sandbox."""
        session = await self.sessions.open(user, language)
        return session.info(self.settings)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe one of the user's sessions."""
        return self.sessions.get(session_id, user).info(self.settings)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's open sessions."""
        return [s.info(self.settings) for s in self.sessions.list_for(user)]

    async def close_session(self, session_id: str, user: str) -> None:
        """Close one of the user's sessions."""
        await self.sessions.close(session_id, user)

    # --- files ---

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file into a session's workspace."""
        if len(data) > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"file is {len(data)} bytes, above the limit of {self.settings.max_file_bytes}"
            )
        session = self.sessions.get(session_id, user)
        try:
            await session.sandbox.write_file(path, data)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        session.touch()
        listed = await session.sandbox.list_files("")
        normalized = path.removeprefix("/home/user/").strip("/")
        for info in listed:
            if info.path == normalized:
                return info
        raise InvalidRequest(f"file {path!r} was not written")

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """Files of a session's workspace."""
        session = self.sessions.get(session_id, user)
        try:
            return await session.sandbox.list_files(path)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    async def download_file(self, session_id: str, user: str, path: str) -> bytes:
        """Contents of a file of a session's workspace."""
        session = self.sessions.get(session_id, user)
        try:
            return await session.sandbox.read_file(path, self.settings.max_file_bytes)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    # --- observability ---

    def health(self) -> dict[str, Any]:
        """Pool state and backend limits."""
        return {
            "status": "ok",
            "backend": self.backend.health(),
            "pools": {language.value: pool.state() for language, pool in self.pools.items()},
            "sessions": len(self.sessions),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    def metrics_text(self) -> str:
        """Prometheus exposition text."""
        gauges: dict[str, list[tuple[dict[str, str], float]]] = {
            "code_exec_pool_ready": [
                ({"language": lang.value}, float(pool.ready)) for lang, pool in self.pools.items()
            ],
            "code_exec_pool_exhausted_total": [
                ({"language": lang.value}, float(pool.exhausted))
                for lang, pool in self.pools.items()
            ],
            "code_exec_sandboxes_started_total": [
                ({"language": lang.value}, float(pool.created)) for lang, pool in self.pools.items()
            ],
            "code_exec_sandbox_start_seconds_total": [
                ({"language": lang.value}, pool.start_seconds_total)
                for lang, pool in self.pools.items()
            ],
            "code_exec_sessions_open": [({}, float(len(self.sessions)))],
        }
        return self.metrics.render(gauges)
