"""The executor's HTTP API (internal: every endpoint but /health needs the internal token)."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from executor.config import ExecutorSettings
from executor.deps import ExecutorDep, UserDep, check_token
from executor.errors import ExecutorError, PayloadTooLarge, validation_text
from executor.service import Executor
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.sessions import OpenSessionRequest, SessionInfo

log = logging.getLogger(__name__)


def error_response(exc: ExecutorError) -> JSONResponse:
    """The JSON error of an executor exception, with Retry-After when it has one."""
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}},
        status_code=exc.status_code,
        headers=headers,
    )


def validation_message(exc: RequestValidationError) -> str:
    """A request validation error as one readable line."""
    return validation_text(exc.errors())


class BodyLimit:
    """Answer 413 before reading a body whose declared length is over the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length, then pass the request on."""
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = error_response(
                        PayloadTooLarge(
                            f"request body is {int(value)} bytes, above the limit of {self.limit}"
                        )
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(
    settings: ExecutorSettings | None = None, executor: Executor | None = None
) -> FastAPI:
    """The executor app; it owns (starts and closes) the executor unless one is given."""
    settings = settings or ExecutorSettings()
    settings.require_token()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = executor is None
        app.state.executor = executor or Executor(settings)
        if owned:
            await app.state.executor.start()
        try:
            yield
        finally:
            if owned:
                await app.state.executor.close()

    app = FastAPI(
        title="code-exec executor",
        description="Internal API of the executor: sandboxes, sessions, files.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    guarded = [Depends(check_token)]
    body_limit = settings.max_code_bytes + settings.max_file_bytes + 64 * 1024

    app.add_middleware(BodyLimit, limit=body_limit)

    @app.exception_handler(ExecutorError)
    async def executor_error(request: Request, exc: ExecutorError) -> JSONResponse:
        app.state.executor.metrics.count_error(exc.code)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "invalid_request", "message": validation_message(exc)}},
            status_code=422,
        )

    @app.get("/health")
    async def health(executor: ExecutorDep) -> dict[str, Any]:
        """Pool state and the limits in force; no token needed."""
        return executor.health()

    @app.get("/metrics", dependencies=guarded, response_class=PlainTextResponse)
    async def metrics(executor: ExecutorDep) -> str:
        """Prometheus metrics."""
        return executor.metrics_text()

    @app.post("/execute", dependencies=guarded, response_model=ExecuteResult)
    async def execute(
        request: ExecuteRequest,
        executor: ExecutorDep,
        user: UserDep,
        stream: Annotated[bool, Query(description="Stream NDJSON output events.")] = False,
    ) -> Any:
        """Run code in a fresh sandbox, or in a session."""
        if not stream:
            result = await executor.execute(request, user)
            # Serialised once, by pydantic's core, rather than revalidated by FastAPI.
            return Response(result.model_dump_json(), media_type="application/json")
        return StreamingResponse(
            _stream_execution(executor, request, user), media_type="application/x-ndjson"
        )

    @app.get("/executions/{execution_id}/output", dependencies=guarded)
    async def execution_output(
        execution_id: str,
        executor: ExecutorDep,
        user: UserDep,
        stream: str = "stdout",
        offset: Annotated[int, Query(ge=0, description="First line, from 0.")] = 0,
        limit: Annotated[int, Query(gt=0, le=100_000)] = 200,
    ) -> dict[str, Any]:
        """Lines of the whole output of a run whose result was cut (its owner only)."""
        page = await executor.read_output(execution_id, user, stream, offset, limit)
        return asdict(page)

    @app.post("/sessions", dependencies=guarded, response_model=SessionInfo)
    async def open_session(
        body: OpenSessionRequest, executor: ExecutorDep, user: UserDep
    ) -> SessionInfo:
        """Open a session: a dedicated sandbox whose state persists across runs."""
        return await executor.open_session(body.language, user)

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
    ) -> dict[str, Any]:
        """Close a session and kill its sandbox."""
        await executor.close_session(session_id, user)
        return {"session_id": session_id, "closed": True}

    @app.post("/sessions/{session_id}/files", dependencies=guarded, response_model=FileInfo)
    async def upload_file(
        session_id: str,
        executor: ExecutorDep,
        user: UserDep,
        file: Annotated[UploadFile, File()],
        path: Annotated[str | None, Form()] = None,
    ) -> FileInfo:
        """Upload a file into the session's /home/user (path defaults to the file's name)."""
        data = await file.read(executor.settings.max_file_bytes + 1)
        target = path or file.filename or "upload"
        return await executor.upload_file(session_id, user, target, data)

    @app.get("/sessions/{session_id}/files", dependencies=guarded, response_model=list[FileInfo])
    async def list_files(
        session_id: str, executor: ExecutorDep, user: UserDep, path: str = ""
    ) -> list[FileInfo]:
        """List the session's workspace, recursively."""
        return await executor.list_files(session_id, user, path)

    @app.get("/sessions/{session_id}/files/{path:path}", dependencies=guarded)
    async def download_file(
        session_id: str, path: str, executor: ExecutorDep, user: UserDep
    ) -> Response:
        """Download a file of the session's workspace."""
        data = await executor.download_file(session_id, user, path)
        name = path.rsplit("/", 1)[-1].replace('"', "")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return app


async def _stream_execution(
    executor: Executor, request: ExecuteRequest, user: str
) -> AsyncIterator[bytes]:
    """NDJSON events: stdout/stderr as produced, then the result (or an error)."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def on_output(stream: str, data: str) -> None:
        await queue.put({"type": stream, "data": data})

    async def run() -> None:
        try:
            result = await executor.execute(request, user, on_output)
            await queue.put({"type": "result", "result": result.model_dump(mode="json")})
        except ExecutorError as exc:
            await queue.put({"type": "error", "error": {"code": exc.code, "message": exc.message}})
        finally:
            await queue.put(None)

    task = asyncio.create_task(run())
    try:
        while (event := await queue.get()) is not None:
            yield (json.dumps(event) + "\n").encode()
    finally:
        # The client went away: cancelling the run frees its sandbox.
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
