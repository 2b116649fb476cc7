"""What both HTTP servers (the executor's and the API host) share at their edge.

The error envelope `{"error": {"code", "message"}}` with Retry-After, the validation handler
that says which field is wrong, the request-body limit, and the routes a session's files and
stored outputs are served by (the same on both servers, over any ExecutorClient).
"""

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executor.errors import (
    ERRORS_BY_STATUS,
    ExecutorError,
    InvalidRequest,
    PayloadTooLarge,
    validation_text,
)
from executor.interface import Download, ExecutorClient
from schemas.files import FileInfo
from schemas.outputs import OutputPage, OutputQuery, Stream

T = TypeVar("T")
SMALL_BODY_BYTES = 64 * 1024


def app_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency: what the app keeps in app.state under name (set at start-up).

    Dependencies here are coroutines, though none of them waits: FastAPI runs a plain
    function dependency in a worker thread, and that hop cost more CPU per request than
    anything the dependency does (four of them were about 1 ms of a stateless run's CPU)."""

    async def get(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    get.__doc__ = f"The app's {name}."
    return get


# Answered to a caller that has gone away: nobody reads it (nginx's "client closed request").
CLIENT_GONE = 499


async def unless_caller_leaves(
    request: Request, work: Callable[[], Awaitable[Response]]
) -> Response:
    """work's response, or work cancelled as soon as the caller disconnects.

    A run nobody waits for would otherwise hold its sandbox until its own timeout: a client
    that timed out, a `code-exec mcp` that exited, an API host whose caller cancelled. The
    body has been read by now, so the next message the server can receive is the disconnect.
    The watcher is cancelled, not awaited, once work is done: waiting for it would put the
    response behind whatever else the event loop has queued (a pool refilling, say).
    """
    scope = anyio.CancelScope()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        with scope:
            return await work()
        return Response(status_code=CLIENT_GONE)
    finally:
        watcher.cancel()


def error_response(exc: ExecutorError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error of an executor exception, with Retry-After when it has one."""
    headers = dict(headers or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}},
        status_code=exc.status_code,
        headers=headers,
    )


def install_error_handlers(
    app: FastAPI, on_error: Callable[[ExecutorError], dict[str, str]] | None = None
) -> None:
    """Executor errors and invalid requests answered in the envelope (on_error adds headers)."""

    @app.exception_handler(ExecutorError)
    async def executor_error(request: Request, exc: ExecutorError) -> JSONResponse:
        return error_response(exc, on_error(exc) if on_error else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(InvalidRequest(validation_text(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods answer in the envelope too, saying where to look.
        cls = ERRORS_BY_STATUS.get(exc.status_code, ExecutorError)
        if exc.status_code == 404:
            message = f"no endpoint {request.method} {request.url.path}; see /docs"
        else:
            message = f"{exc.detail} ({request.method} {request.url.path}); see /docs"
        error = cls(message)
        response = error_response(error, on_error(error) if on_error else None)
        response.status_code = exc.status_code
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response


class BodyLimit:
    """Answer 413 rather than read a body over the limit, declared or streamed.

    A declared Content-Length over the limit is refused before anything is read. A body with
    no length (chunked) is counted while the app reads it: past the limit the request ends
    with 413 (or, when the app already answered, the connection is cut), so no request makes
    the server hold more than the limit. Routes in `small` (those anyone may call without a
    token) get SMALL_BODY_BYTES.
    """

    def __init__(
        self, app: ASGIApp, limit: int, small: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.app = app
        self.limit = limit
        self.small = small

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the body as it is received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        small = (scope["method"], scope["path"]) in self.small
        limit = SMALL_BODY_BYTES if small else self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _refuse(scope, receive, send, f"{int(value)} bytes", limit)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(413, f"request body is over the limit of {limit} bytes")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _refuse(scope, receive, send, f"over {limit} bytes", limit)


async def _refuse(scope: Scope, receive: Receive, send: Send, size: str, limit: int) -> None:
    error = PayloadTooLarge(f"request body is {size}, above the limit of {limit}")
    response = error_response(error, {"Connection": "close"})
    await response(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """A streamed body passed the limit: an HTTP 413 the app's handlers answer in the envelope
    (FastAPI lets HTTP exceptions raised while reading a body through as they are)."""


def attachment(
    download: Download, path: str, media_type: str = "application/octet-stream"
) -> StreamingResponse:
    """A downloaded file, named after the last part of its path, sent as it is read."""
    name = quote(path.rsplit("/", 1)[-1], safe="")
    return StreamingResponse(
        download.chunks,
        media_type=media_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
            "Content-Length": str(download.size),
        },
    )


def file_routes(
    prefix: str,
    client: Callable[..., Awaitable[ExecutorClient]],
    user: Callable[..., Awaitable[str]],
    max_upload_bytes: int,
    **router_options: Any,
) -> APIRouter:
    """Upload, list and download of a session's files under {prefix}/{session_id}/files."""
    router = APIRouter(**router_options)
    ClientDep = Annotated[ExecutorClient, Depends(client)]  # noqa: N806
    UserDep = Annotated[str, Depends(user)]  # noqa: N806

    @router.post(f"{prefix}/{{session_id}}/files", response_model=FileInfo)
    async def upload_file(
        session_id: str,
        client: ClientDep,
        user: UserDep,
        file: Annotated[UploadFile, File()],
        path: Annotated[str | None, Form()] = None,
    ) -> FileInfo:
        """Upload a file into the session's /home/user (path defaults to the file's name)."""
        data = await file.read(max_upload_bytes + 1)
        target = path or file.filename or "upload"
        return await client.upload_file(session_id, user, target, data)

    @router.get(f"{prefix}/{{session_id}}/files", response_model=list[FileInfo])
    async def list_files(
        session_id: str, client: ClientDep, user: UserDep, path: str = ""
    ) -> list[FileInfo]:
        """List the session's workspace, recursively."""
        return await client.list_files(session_id, user, path)

    @router.get(f"{prefix}/{{session_id}}/files/{{path:path}}")
    async def download_file(
        session_id: str, path: str, client: ClientDep, user: UserDep
    ) -> StreamingResponse:
        """Download a file of the session's workspace."""
        return attachment(await client.download_file(session_id, user, path), path)

    return router


def output_routes(
    prefix: str,
    client: Callable[..., Awaitable[ExecutorClient]],
    user: Callable[..., Awaitable[str]],
    file_user: Callable[..., Awaitable[str]] | None = None,
    **router_options: Any,
) -> APIRouter:
    """What runs leave behind, their owner only: {prefix}/{execution_id}/output (lines of the
    whole output of a cut result) and {prefix}/{execution_id}/files/{name} (a figure). The file
    route asks file_user, when given, who is downloading (the API host also takes a signed URL
    there), else user."""
    router = APIRouter(**router_options)
    ClientDep = Annotated[ExecutorClient, Depends(client)]  # noqa: N806
    UserDep = Annotated[str, Depends(user)]  # noqa: N806
    FileUserDep = Annotated[str, Depends(file_user or user)]  # noqa: N806

    @router.get(f"{prefix}/{{execution_id}}/output", response_model=OutputPage)
    async def execution_output(
        execution_id: str,
        client: ClientDep,
        user: UserDep,
        stream: Stream = "stdout",
        offset: Annotated[int, Query(ge=0, description="First line, from 0.")] = 0,
        limit: Annotated[int, Query(gt=0, le=100_000)] = 200,
    ) -> OutputPage:
        """Lines of the whole output of a run whose result was cut (its owner only)."""
        query = OutputQuery(execution_id=execution_id, stream=stream, offset=offset, limit=limit)
        return await client.read_output(query, user)

    @router.get(f"{prefix}/{{execution_id}}/files/{{name:path}}")
    async def execution_file(
        execution_id: str, name: str, client: ClientDep, user: FileUserDep
    ) -> StreamingResponse:
        """A file a run made and the executor kept (a figure: image-0.png; what it wrote in
        outputs/: outputs/report.csv), its owner only."""
        download = await client.download_output(execution_id, name, user)
        file_name = name.rsplit("/", 1)[-1]
        mime = mimetypes.guess_type(file_name)[0]
        return attachment(download, file_name, mime) if mime else attachment(download, file_name)

    return router
