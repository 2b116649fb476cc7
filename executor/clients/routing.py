"""One ExecutorClient over several executors (the API with a list of executor URLs).

Stateless runs go to the least-loaded healthy executor, judged by its /health (ready
sandboxes) and by what this client has in flight there. A session's id names its executor
(`<key>~<id>`), so its calls go there; when that executor dies, they answer SessionLost.
A request is retried on another executor only when the first never accepted it.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from executor.clients.http import HttpClient
from executor.errors import (
    ExecutorError,
    ExecutorUnreachable,
    NotFound,
    SessionLost,
    SessionNotFound,
    Unavailable,
)
from executor.interface import Download, ExecutorClient, OutputCallback
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.health import Health, Limits, PoolHealth, RouteHealth
from schemas.languages import Language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry

log = logging.getLogger(__name__)

SEPARATOR = "~"
T = TypeVar("T")


def route_key(url: str) -> str:
    """A short stable name for an executor URL, used in session ids."""
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:8]


@dataclass
class Route:
    """One executor as the router sees it."""

    url: str
    client: ExecutorClient
    key: str
    healthy: bool = False
    ready: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    sent: int = 0
    error: str | None = None
    limits: Limits | None = None

    def score(self, language: Language) -> float:
        """Lower is better: our runs in flight there, minus its ready sandboxes.

        The ready count is as of the last health check, less the calls sent there since: each
        takes a ready sandbox, so back-to-back calls between two checks do not all pile onto
        the executor that looked least loaded at the check.
        """
        return self.in_flight - (self.ready.get(language.value, 0) - self.sent)

    def state(self) -> RouteHealth:
        """What /health says of this executor."""
        return RouteHealth(
            url=self.url,
            healthy=self.healthy,
            ready=self.ready,
            error=self.error,
            in_flight=self.in_flight,
        )


class RoutingClient:
    """Spreads runs over executors; keeps sessions on theirs."""

    def __init__(self, clients: Mapping[str, ExecutorClient], health_interval_s: float = 2.0):
        self.routes = {
            route_key(url): Route(url, client, route_key(url)) for url, client in clients.items()
        }
        self._interval = health_interval_s
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def over_http(cls, urls: list[str], token: str) -> "RoutingClient":
        """A router over HTTP clients of these executor URLs."""
        return cls({url: HttpClient(url, token) for url in urls})

    async def start(self) -> None:
        """Check every executor once, then keep checking in the background."""
        await self.check_health()
        self._poller = asyncio.create_task(self._poll(), name="executor-health")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_health()

    async def check_health(self) -> None:
        """Refresh every route's health and load."""

        async def one(route: Route) -> None:
            try:
                health = await asyncio.wait_for(route.client.health(), 2.0)
            except (ExecutorError, TimeoutError) as exc:
                if route.healthy:
                    log.warning("executor %s (%s) is down: %s", route.key, route.url, exc)
                route.healthy, route.error = False, str(exc) or type(exc).__name__
                return
            if not route.healthy:
                log.info("executor %s (%s) is up", route.key, route.url)
            route.healthy, route.error = True, None
            route.limits = health.limits
            route.ready = {name: pool.ready - pool.waiting for name, pool in health.pools.items()}
            route.sent = 0

        await asyncio.gather(*(one(r) for r in self.routes.values()))

    def _candidates(self, language: Language) -> list[Route]:
        healthy = [r for r in self.routes.values() if r.healthy]
        if not healthy:
            raise Unavailable("no executor is reachable; retry shortly", retry_after=2.0)
        return sorted(healthy, key=lambda r: r.score(language))

    @asynccontextmanager
    async def _using(self, route: Route) -> AsyncIterator[None]:
        route.in_flight += 1
        try:
            yield
        except ExecutorUnreachable:
            route.healthy = False
            raise
        finally:
            route.in_flight -= 1

    def _session_route(self, session_id: str) -> tuple[Route, str]:
        key, sep, inner = session_id.partition(SEPARATOR)
        route = self.routes.get(key) if sep else None
        if route is None:
            raise SessionNotFound(
                f"session {session_id!r} not found; open a new one with open_session"
            )
        if not route.healthy:
            raise SessionLost(
                f"session {session_id!r} is lost: its executor ({route.key}) is down; "
                "open a new session"
            )
        return route, inner

    async def _on_session(
        self, session_id: str, call: Callable[[ExecutorClient, str], Awaitable[T]]
    ) -> T:
        """A call about one session, made on the executor that holds it (by its inner id)."""
        route, inner = self._session_route(session_id)
        return await call(route.client, inner)

    def _outer(self, route: Route, info: SessionInfo) -> SessionInfo:
        return info.model_copy(update={"session_id": f"{route.key}{SEPARATOR}{info.session_id}"})

    async def _on_least_loaded(
        self, language: Language, call: Callable[[Route], Awaitable[T]], what: str
    ) -> T:
        """A call on the least-loaded healthy executor; the next one if it never got there."""
        last: ExecutorError | None = None
        for route in self._candidates(language):
            try:
                async with self._using(route):
                    route.sent += 1
                    return await call(route)
            except ExecutorUnreachable as exc:  # never accepted: another executor may take it
                last = exc
        raise Unavailable(
            f"no executor {what} ({last.message if last else 'none reachable'})", retry_after=2.0
        )

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """A session's run on its executor; a stateless run on the least-loaded one."""
        if request.session_id is None:
            return await self._on_least_loaded(
                request.language or Language.PYTHON,
                lambda route: route.client.execute(request, user, on_output),
                "accepted the run",
            )
        route, inner = self._session_route(request.session_id)
        async with self._using(route):
            try:
                result = await route.client.execute(
                    request.model_copy(update={"session_id": inner}), user, on_output
                )
            except Unavailable as exc:
                route.healthy = False
                raise SessionLost(
                    f"session {request.session_id!r} is lost: its executor failed "
                    f"({exc.message}); open a new session"
                ) from exc
        return result.model_copy(update={"session_id": request.session_id})

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """A session on the least-loaded executor."""

        async def open_on(route: Route) -> SessionInfo:
            return self._outer(
                route,
                await route.client.open_session(language, user, options),
            )

        return await self._on_least_loaded(language, open_on, "could open a session")

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        route, inner = self._session_route(session_id)
        return self._outer(route, await route.client.get_session(inner, user))

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions on every reachable executor."""
        found: list[SessionInfo] = []
        for route in self.routes.values():
            if route.healthy:
                with contextlib.suppress(Unavailable):
                    found += [self._outer(route, s) for s in await route.client.list_sessions(user)]
        return found

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Close a session."""
        await self._on_session(session_id, lambda client, inner: client.close_session(inner, user))
        return CloseSessionResult(session_id=session_id, closed=True)

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file into a session."""
        return await self._on_session(
            session_id, lambda client, inner: client.upload_file(inner, user, path, data)
        )

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List a session's workspace."""
        return await self._on_session(
            session_id, lambda client, inner: client.list_files(inner, user, path)
        )

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """Read a file of a session."""
        return await self._on_session(
            session_id, lambda client, inner: client.download_file(inner, user, path)
        )

    async def _on_any(self, what: str, call: Callable[[ExecutorClient], Awaitable[T]]) -> T:
        """A call about an execution, on whichever executor ran it."""
        for route in self.routes.values():
            if route.healthy:
                with contextlib.suppress(NotFound, Unavailable):
                    return await call(route.client)
        raise NotFound(f"no {what} on any executor")

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """A stored output, from whichever executor ran it."""
        return await self._on_any(
            f"stored output for execution {query.execution_id!r}",
            lambda client: client.read_output(query, user),
        )

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """A file a run made, from whichever executor ran it."""
        return await self._on_any(
            f"file {name!r} of execution {execution_id!r}",
            lambda client: client.download_output(execution_id, name, user),
        )

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """Code mode's tools, as one healthy executor knows them (they share one config)."""
        for route in self.routes.values():
            if route.healthy:
                with contextlib.suppress(Unavailable):
                    return await route.client.search_tools(query, user, limit)
        return []

    async def health(self) -> Health:
        """Every executor's state, as the router sees it."""
        routes = list(self.routes.values())
        limits = next((r.limits for r in routes if r.healthy and r.limits), None)
        return Health(
            status="ok" if any(r.healthy for r in routes) else "down",
            executors={r.key: r.state() for r in routes},
            pools={
                language.value: PoolHealth(
                    size=0, ready=sum(r.ready.get(language.value, 0) for r in routes)
                )
                for language in Language
            },
            limits=limits,
        )

    async def aclose(self) -> None:
        """Stop polling and close the connections."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for route in self.routes.values():
            await route.client.aclose()
