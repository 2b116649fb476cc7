"""The executor's HTTP API (internal: every endpoint but /health needs the internal token).

It serves an Executor to the API host in the two-machine layout; the routes map one to one
onto executor.interface.ExecutorClient, which executor.clients.http calls.
"""

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from executor.config import ExecutorSettings
from executor.core import Executor
from executor.errors import ExecutorError
from executor.events import ndjson
from executor.interface import OutputCallback
from executor.server.deps import ExecutorDep, UserDep, check_token, get_executor, get_user
from executor.web import (
    BodyLimit,
    file_routes,
    install_error_handlers,
    output_routes,
    unless_caller_leaves,
)
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.health import Health
from schemas.sessions import CloseSessionResult, OpenSessionRequest, SessionInfo
from schemas.upstream import ToolEntry

log = logging.getLogger(__name__)


def create_app(
    settings: ExecutorSettings | None = None,
    executor: Executor | None = None,
    idle_exit_s: float | None = None,
) -> FastAPI:
    """The executor app; it owns (starts and closes) the executor unless one is given.

    With idle_exit_s, the process ends itself (SIGTERM, a clean shutdown) once it has had no
    session and no request for that long: the local executor `code-exec mcp` shares.
    """
    settings = settings or ExecutorSettings()
    settings.require_token()
    served = executor or Executor(settings)
    last_request = time.monotonic()

    async def exit_when_idle(seconds: float) -> None:
        while True:
            await asyncio.sleep(min(seconds, 5.0))
            if not len(served.sessions) and time.monotonic() - last_request > seconds:
                log.info("idle for %g s with no session: exiting", seconds)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if executor is None:
            await served.start()
        idle = asyncio.create_task(exit_when_idle(idle_exit_s)) if idle_exit_s else None
        try:
            yield
        finally:
            if idle is not None:
                idle.cancel()
            if executor is None:
                await served.aclose()

    app = FastAPI(
        title="code-exec executor",
        description="Internal API of the executor: sandboxes, sessions, files.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.executor = served
    guarded = [Depends(check_token)]
    app.add_middleware(
        BodyLimit, limit=settings.max_code_bytes + settings.max_file_bytes + 64 * 1024
    )

    def count(exc: ExecutorError) -> dict[str, str]:
        served.metrics.count_error(exc.code)
        return {}

    install_error_handlers(app, count)

    if idle_exit_s:

        class NoteActivity:
            """Every request counts as activity (plain ASGI: streams pass through as they are)."""

            def __init__(self, inner: ASGIApp) -> None:
                self.inner = inner

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                nonlocal last_request
                last_request = time.monotonic()
                await self.inner(scope, receive, send)

        app.add_middleware(NoteActivity)

    @app.get("/health")
    async def health(executor: ExecutorDep) -> Health:
        """Pool state and the limits in force; no token needed."""
        return await executor.health()

    @app.get("/metrics", dependencies=guarded, response_class=PlainTextResponse)
    async def metrics(executor: ExecutorDep) -> str:
        """Prometheus metrics."""
        return executor.metrics_text()

    @app.post("/execute", dependencies=guarded, response_model=ExecuteResult)
    async def execute(
        http: Request,
        request: ExecuteRequest,
        executor: ExecutorDep,
        user: UserDep,
        stream: Annotated[bool, Query(description="Stream NDJSON output events.")] = False,
    ) -> Any:
        """Run code in a fresh sandbox, or in a session; a caller that leaves cancels it."""
        if not stream:

            async def answer() -> Response:
                result = await executor.execute(request, user)
                # Serialised once, by pydantic's core, rather than revalidated by FastAPI.
                return Response(result.model_dump_json(), media_type="application/json")

            return await unless_caller_leaves(http, answer)

        async def run(on_output: OutputCallback) -> Any:
            return (await executor.execute(request, user, on_output)).model_dump(mode="json")

        return StreamingResponse(ndjson(run), media_type="application/x-ndjson")

    @app.post("/sessions", dependencies=guarded, response_model=SessionInfo)
    async def open_session(
        body: OpenSessionRequest, executor: ExecutorDep, user: UserDep
    ) -> SessionInfo:
        """Open a session: a dedicated sandbox whose state persists across runs."""
        return await executor.open_session(body.language, user, body)

    @app.get("/tools/search", dependencies=guarded, response_model=list[ToolEntry])
    async def search_tools(
        executor: ExecutorDep,
        user: UserDep,
        q: Annotated[str, Query(max_length=500)] = "",
        limit: Annotated[int, Query(gt=0, le=50)] = 10,
    ) -> list[ToolEntry]:
        """Code mode: the upstream tools the caller's code may call that best match q."""
        return await executor.search_tools(q, user, limit)

    @app.get("/sessions", dependencies=guarded, response_model=list[SessionInfo])
    async def list_sessions(executor: ExecutorDep, user: UserDep) -> list[SessionInfo]:
        """The caller's open sessions."""
        return await executor.list_sessions(user)

    @app.get("/sessions/{session_id}", dependencies=guarded, response_model=SessionInfo)
    async def get_session(session_id: str, executor: ExecutorDep, user: UserDep) -> SessionInfo:
        """Describe a session."""
        return await executor.get_session(session_id, user)

    @app.delete("/sessions/{session_id}", dependencies=guarded)
    async def close_session(
        session_id: str, executor: ExecutorDep, user: UserDep
    ) -> CloseSessionResult:
        """Close a session and kill its sandbox."""
        return await executor.close_session(session_id, user)

    shared: dict[str, Any] = {"dependencies": guarded}
    app.include_router(
        file_routes("/sessions", get_executor, get_user, settings.max_file_bytes, **shared)
    )
    app.include_router(output_routes("/executions", get_executor, get_user, **shared))
    return app
