"""The executor: finds a sandbox for a request (warm pool or session), runs it, shapes the result.

This is the one place where requests meet sandboxes. The Executor is itself an ExecutorClient:
in one process, front-ends call it directly; the executor's HTTP server serves it to others.
"""

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from executor.backends import Backend, create_backend
from executor.backends.base import ByteAllowance, RunAccess, RunOutcome, Sandbox
from executor.config import ExecutorSettings
from executor.core.admission import RunPlan, admit
from executor.core.code_mode import RunTools
from executor.core.files import collect_outputs
from executor.core.metrics import Metrics
from executor.core.outputs import OutputStore
from executor.core.packages import check_packages, install, run_network
from executor.core.pool import WarmPool
from executor.core.results import Shaping
from executor.core.sessions import Session, SessionManager
from executor.core.tokens import get_encoding
from executor.core.upstream import UpstreamHub
from executor.errors import (
    ExecutorError,
    InvalidRequest,
    PayloadTooLarge,
    SandboxFailure,
    SessionLost,
)
from executor.interface import Download, OutputCallback
from schemas.execution import OUTPUTS_DIR, ExecuteRequest, ExecuteResult, file_bytes
from schemas.file_uris import FileRef, SessionFileRef, parse_input
from schemas.files import FileInfo
from schemas.health import Health
from schemas.languages import Language
from schemas.network import NetworkGrant
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry, UpstreamConfig

log = logging.getLogger(__name__)


@dataclass
class _Place:
    """Where a run happens: a sandbox, and the session it belongs to (None: stateless)."""

    sandbox: Sandbox
    language: Language
    session: Session | None
    restarted: bool = False
    """The session's sandbox had died since its last run and was restarted for this one."""


class Executor:
    """Pools, sessions and limits around a backend."""

    def __init__(self, settings: ExecutorSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings)
        self.metrics = Metrics()
        self._start_slots = asyncio.Semaphore(settings.max_concurrent_starts)
        # Sandboxes for stateless runs; sessions take from these too, unless the backend makes
        # its stateless sandboxes another way (the local backend's zygote): then sessions get
        # pools of their own (session_pools, made by start()).
        self.pools: dict[Language, WarmPool] = {
            language: self._pool(language, self._create_stateless) for language in Language
        }
        self.session_pools: dict[Language, WarmPool] = {}
        self.sessions = SessionManager(settings, self._acquire)
        self.outputs = OutputStore(
            settings.state_dir / f"outputs-{os.getpid()}",
            settings.output_ttl_s,
            settings.output_store_mb * 1024 * 1024,
            settings.output_spill_mb * 1024 * 1024,
        )
        # Code mode: the operator's MCP servers, whose tools sandbox code calls.
        self.upstream = (
            UpstreamHub(
                UpstreamConfig.load(settings.upstream_config), settings.upstream_call_timeout_s
            )
            if settings.upstream_config is not None
            else None
        )
        # What callers meet, made once: /health is polled, and the settings read a config file.
        self.limits = settings.limits()
        # Each user's network bytes this hour, shared by all of the user's runs.
        self._allowances: dict[str, ByteAllowance] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()

    def _pool(
        self, language: Language, create: Callable[[Language], Awaitable[Sandbox]]
    ) -> WarmPool:
        return WarmPool(
            language,
            self.settings.pool_sizes.get(language, 0),
            create,
            self._start_slots,
            self.settings.pool_wait_s,
        )

    async def _create_stateless(self, language: Language) -> Sandbox:
        return await self.backend.create(language, stateless=True)

    async def start(self) -> None:
        """Start the backend, the pools and the session reaper."""
        await self.backend.start()
        for language in Language:
            if self.backend.separate_stateless(language):
                self.session_pools[language] = self._pool(language, self.backend.create)
        self.outputs.open()
        # Build the default encoding now (about a second) rather than in the first request.
        await asyncio.to_thread(get_encoding)
        for pool in (*self.pools.values(), *self.session_pools.values()):
            pool.start()
        self.sessions.start()
        if self.upstream is not None:
            self.upstream.start()
        self._housekeeper = asyncio.create_task(self._sweep_outputs(), name="output-sweeper")

    async def _sweep_outputs(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            self.outputs.sweep()

    async def aclose(self) -> None:
        """Close sessions, pools and the backend; nothing is left running."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        await self.sessions.close_all()
        if self.upstream is not None:
            await self.upstream.aclose()
        for pool in (*self.pools.values(), *self.session_pools.values()):
            await pool.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.backend.close()
        self.outputs.close()

    async def _acquire(self, language: Language) -> Sandbox:
        """A sandbox for a session."""
        return await self.session_pools.get(language, self.pools[language]).acquire()

    def _destroy_later(self, sandbox: Sandbox) -> None:
        task = asyncio.create_task(sandbox.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- running ---

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run the request's code and return its result (the code's failures are values)."""
        plan = admit(request, self.settings)
        shaping = Shaping(self.outputs, user, self.settings.max_output_bytes)
        try:
            async with self._place_for(request, user) as place:
                began = time.perf_counter()
                outcome = await self._run(place, request, plan, on_output, shaping, user)
                seconds = time.perf_counter() - began
                shaping.keep_files(
                    await collect_outputs(
                        place.sandbox,
                        # In a session, what this run changed; a fresh sandbox has only that.
                        place.session.outputs_seen if place.session is not None else None,
                        self.settings.max_file_bytes,
                    )
                )
        except BaseException:
            shaping.discard()
            raise
        if place.restarted:
            outcome.state_lost = True
        self.metrics.observe_run(place.language.value, _outcome_name(outcome), seconds)
        session = place.session
        live = session is not None and session.ended is None
        return await shaping.result(
            outcome,
            plan,
            place.language,
            seconds,
            request.session_id,
            session.sandbox if session is not None and live else None,
        )

    @asynccontextmanager
    async def _place_for(self, request: ExecuteRequest, user: str) -> AsyncIterator[_Place]:
        """The session's sandbox (held for the run), or a warm one used once and destroyed."""
        if request.session_id is not None:
            session = self.sessions.get(request.session_id, user)
            if request.language is not None and request.language is not session.language:
                raise InvalidRequest(
                    f"session {request.session_id!r} runs {session.language.value}, not "
                    f"{request.language.value}; omit language or open a "
                    f"{request.language.value} session"
                )
            async with session.lock:
                place = _Place(session.sandbox, session.language, session)
                if session.ended is None and not session.sandbox.alive:
                    # It died since its last run (a client that went away mid-run, a crash):
                    # a fresh interpreter on the same files, and this run says state was lost.
                    await self._revive(session)
                    place.restarted = True
                if session.ended is not None:  # closed while this run waited for the lock
                    raise self.sessions.ended_error(session)
                yield place
                session.runs += 1
                session.touch()
            return
        language = request.language or Language.PYTHON
        sandbox = await self.pools[language].acquire()
        try:
            yield _Place(sandbox, language, None)
        finally:
            self._destroy_later(sandbox)  # never reused: destroyed off the response path

    async def _revive(self, session: Session) -> None:
        try:
            await session.sandbox.restart()
        except SandboxFailure as exc:
            await self.sessions.close(session.session_id, session.user, "lost: its sandbox died")
            raise SessionLost(
                f"session {session.session_id!r} is lost: its sandbox died and could not be "
                f"restarted ({exc.message}); open a new session"
            ) from exc
        log.info("session %s: sandbox restarted (state lost)", session.session_id[:12])

    async def _run(
        self,
        place: _Place,
        request: ExecuteRequest,
        plan: RunPlan,
        on_output: OutputCallback | None,
        shaping: Shaping,
        user: str,
    ) -> RunOutcome:
        session = place.session
        network = run_network(
            request.network,
            request.allow_hosts,
            self._network_ceiling(),
            session.network if session else None,
        )
        if request.packages:
            check_packages(request.packages, place.language, network.level)
        tools = self._run_tools(user)
        access = RunAccess(network, self._allowance(user), tools)
        try:
            for path, content in (request.files or {}).items():
                await place.sandbox.write_file(path, file_bytes(content))
            await self._place_inputs(place.sandbox, request.inputs, user)
            if request.packages:
                failed = await install(
                    place.sandbox,
                    place.language,
                    request.packages,
                    timeout=plan.timeout,
                    keep_state=session is not None,
                    access=access,
                )
                if failed is not None:
                    return failed
            try:
                return await place.sandbox.run(
                    request.code,
                    env=request.env or {},
                    timeout=plan.timeout,
                    keep_state=session is not None,
                    on_output=on_output,
                    stdout=shaping.captures["stdout"],
                    stderr=shaping.captures["stderr"],
                    access=access,
                )
            finally:
                if tools is not None:
                    shaping.tool_calls = tools.summary()
        except (SandboxFailure, OSError) as exc:
            if session is not None and session.ended is not None:
                # Closed (by its owner, or expired) while this run was in progress.
                raise self.sessions.ended_error(session) from exc
            raise

    async def _place_inputs(self, sandbox: Sandbox, inputs: list[str] | None, user: str) -> None:
        """Write the files `inputs` names (the user's outputs and session files) into the
        sandbox, one at a time (at most one file's bytes in memory)."""
        for uri in inputs or []:
            ref = parse_input(uri)
            if ref is None:
                raise InvalidRequest(f"{uri[:100]!r} is not the URI of a file code-exec keeps")
            await sandbox.write_file(ref.placed_as, await self._input_bytes(ref, user))

    async def _input_bytes(self, ref: FileRef, user: str) -> bytes:
        """The bytes of one of the user's files: a run's output, or a file of a session."""
        limit = self.settings.max_file_bytes
        if isinstance(ref, SessionFileRef):
            session = self.sessions.get(ref.session_id, user)
            try:
                return await session.sandbox.read_file(ref.path, limit)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from exc
        file, _ = await asyncio.to_thread(
            self.outputs.open_file, ref.execution_id, f"{OUTPUTS_DIR}/{ref.name}", user
        )
        with file:
            return await asyncio.to_thread(file.read, limit + 1)

    def _run_tools(self, user: str) -> RunTools | None:
        """The upstream tools one run of the user's may call, when the operator has any."""
        if self.upstream is None:
            return None
        settings = self.settings
        return RunTools(
            self.upstream,
            user,
            settings.upstream_calls_per_run,
            settings.upstream_mb_per_run * 2**20,
        )

    def _network_ceiling(self) -> NetworkGrant:
        return NetworkGrant(self.settings.network, tuple(self.settings.network_allowlist))

    def _allowance(self, user: str) -> ByteAllowance:
        """The user's network bytes for the hour (entries of past windows are dropped)."""
        allowance = self._allowances.get(user)
        if allowance is None:
            if len(self._allowances) >= 10_000:
                now = time.monotonic()
                for name, old in list(self._allowances.items()):
                    if now - old.window_start >= old.window_s:
                        del self._allowances[name]
            allowance = ByteAllowance(self.settings.egress_user_mb_per_hour * 1024 * 1024)
            self._allowances[user] = allowance
        return allowance

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """Lines of the whole output of a cut result (read off the event loop)."""
        return await asyncio.to_thread(self.outputs.read, query, user)

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """A file a run made (a figure), kept for its owner."""
        file, size = await asyncio.to_thread(self.outputs.open_file, execution_id, name, user)
        return Download.from_file(file, size)

    # --- sessions ---

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """Open a session with a dedicated sandbox, its network, and its packages installed."""
        options = options or SessionOptions()
        level = run_network(options.network, options.allow_hosts, self._network_ceiling())
        if options.packages:
            check_packages(options.packages, language, level.level)
        session = await self.sessions.open(user, language, level)
        if options.packages:
            async with session.lock:
                failed = await install(
                    session.sandbox,
                    language,
                    options.packages,
                    timeout=self.settings.max_timeout_s,
                    keep_state=True,
                    access=RunAccess(level, self._allowance(user)),
                )
            if failed is not None:
                await self.sessions.close(session.session_id, user, "its packages failed")
                assert failed.error is not None
                raise InvalidRequest(f"the session was not opened: {failed.error.value}")
        if options.inputs:
            try:
                async with session.lock:
                    await self._place_inputs(session.sandbox, options.inputs, user)
            except ExecutorError as exc:
                await self.sessions.close(session.session_id, user, "an input was not placed")
                raise type(exc)(
                    f"the session was not opened: {exc.message}", retry_after=exc.retry_after
                ) from exc
        return session.info(self.settings)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe one of the user's sessions."""
        return self.sessions.get(session_id, user).info(self.settings)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's open sessions."""
        return [s.info(self.settings) for s in self.sessions.list_for(user)]

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Close one of the user's sessions."""
        await self.sessions.close(session_id, user)
        return CloseSessionResult(session_id=session_id, closed=True)

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

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """A file of a session's workspace, streamed."""
        session = self.sessions.get(session_id, user)
        try:
            return await session.sandbox.open_file(path, self.settings.max_file_bytes)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc

    # --- code mode ---

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """The upstream tools the user's code may call that best match query."""
        if self.upstream is None:
            return []
        await self.upstream.settle()
        return self.upstream.search(user, query, limit)

    # --- observability ---

    async def health(self) -> Health:
        """Pool state, backend limits and the limits callers meet; degraded while a pool
        cannot start sandboxes."""
        pools = {
            **{language.value: pool.state() for language, pool in self.pools.items()},
            **{
                f"{language.value}-sessions": pool.state()
                for language, pool in self.session_pools.items()
            },
        }
        return Health(
            status="degraded" if any(pool.failing for pool in pools.values()) else "ok",
            backend=self.backend.health(),
            pools=pools,
            sessions=len(self.sessions),
            uptime_s=round(time.monotonic() - self.started_at, 1),
            limits=self.limits,
            upstream=self.upstream.health() if self.upstream is not None else None,
        )

    def metrics_text(self) -> str:
        """Prometheus exposition text."""
        return self.metrics.render(self.pools, len(self.sessions))


def _outcome_name(outcome: RunOutcome) -> str:
    if outcome.timed_out:
        return "timeout"
    return "error" if outcome.exit_code else "ok"
