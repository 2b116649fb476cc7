"""The seed documents' API, in their shapes.

000/001: /v1/code_interpreter/run, sessions and files (timeout in seconds).
003: POST /execute, POST /execute-stream with a WebSocket clientId, events status, stdout,
stderr, error, result (timeout in milliseconds).
"""

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile, WebSocket
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from executor.backends.base import OutputCallback
from executor.errors import ExecutorError, InvalidRequest, validation_text
from openai_tools.deps import ClientDep, LimiterDep, UserDep, websocket_user
from openai_tools.streaming import WsHub, sse_events
from schemas.execution import ExecuteRequest, ExecuteResult, ExecutionError
from schemas.files import FileInfo
from schemas.languages import Language, LanguageName
from schemas.sessions import SessionInfo

router = APIRouter(tags=["code interpreter (seed API)"])


class RunRequest(BaseModel):
    """001's CodeExecutionRequest, plus the executor's optional knobs."""

    model_config = ConfigDict(extra="forbid")

    code: str
    language: LanguageName = Language.PYTHON
    timeout: float = Field(default=30, gt=0, description="Seconds.")
    session_id: str | None = None
    files: dict[str, str] | None = None
    env: dict[str, str] | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)
    stream: bool = Field(default=False, description="Answer with Server-Sent Events.")

    def to_request(self, *, session_language: bool) -> ExecuteRequest:
        """The executor request (in a session, the session's language applies)."""
        return _validated(
            ExecuteRequest,
            code=self.code,
            language=None if session_language else self.language,
            timeout=self.timeout,
            session_id=self.session_id,
            files=self.files,
            env=self.env,
            max_output_tokens=self.max_output_tokens,
        )


def _validated(model: type[ExecuteRequest], **values: Any) -> ExecuteRequest:
    """Build a request, turning a validation failure into a 422 that says what is wrong."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise InvalidRequest(validation_text(exc.errors())) from None


def _error_text(error: ExecutionError | None) -> str | None:
    if error is None:
        return None
    return error.traceback.strip() or f"{error.name}: {error.value}"


def run_response(result: ExecuteResult) -> dict[str, Any]:
    """The seed's response: `output` and `error` as text, then every field of the result."""
    body = result.model_dump(mode="json")
    body["error_detail"] = body.pop("error")
    body["output"] = result.stdout
    body["error"] = _error_text(result.error)
    return body


@router.post("/v1/code_interpreter/run")
async def run(
    body: RunRequest, request: Request, client: ClientDep, user: UserDep, limiter: LimiterDep
) -> Any:
    """Run code (in a session when session_id is given); SSE when asked for a stream."""
    execute = body.to_request(session_language="language" not in body.model_fields_set)
    wants_stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    if not wants_stream:
        async with limiter.slot(user):
            return run_response(await client.execute(execute, user))

    async def go(on_output: OutputCallback) -> dict[str, Any]:
        async with limiter.slot(user):
            return run_response(await client.execute(execute, user, on_output))

    return StreamingResponse(sse_events(go), media_type="text/event-stream")


class OpenSession(BaseModel):
    """Body of POST /v1/code_interpreter/sessions (the language may also be a query param)."""

    language: LanguageName | None = None


@router.post("/v1/code_interpreter/sessions", response_model=SessionInfo)
async def open_session(
    client: ClientDep,
    user: UserDep,
    body: Annotated[OpenSession | None, Body()] = None,
    language: Annotated[LanguageName | None, Query()] = None,
) -> SessionInfo:
    """Open a session; its id goes in session_id of later runs."""
    chosen = (body.language if body else None) or language or Language.PYTHON
    return await client.open_session(chosen, user)


@router.get("/v1/code_interpreter/sessions", response_model=list[SessionInfo])
async def list_sessions(client: ClientDep, user: UserDep) -> list[SessionInfo]:
    """The caller's open sessions."""
    return await client.list_sessions(user)


@router.get("/v1/code_interpreter/sessions/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, client: ClientDep, user: UserDep) -> SessionInfo:
    """Describe one of the caller's sessions."""
    return await client.get_session(session_id, user)


@router.delete("/v1/code_interpreter/sessions/{session_id}")
async def end_session(session_id: str, client: ClientDep, user: UserDep) -> dict[str, Any]:
    """End a session and free its sandbox."""
    await client.close_session(session_id, user)
    return {"success": True, "message": "Session ended", "session_id": session_id}


@router.post("/v1/code_interpreter/sessions/{session_id}/files", response_model=FileInfo)
async def upload_file(
    session_id: str,
    client: ClientDep,
    user: UserDep,
    file: Annotated[UploadFile, File()],
    path: Annotated[str | None, Form()] = None,
) -> FileInfo:
    """Upload a file into the session's /home/user."""
    data = await file.read()
    return await client.upload_file(session_id, user, path or file.filename or "upload", data)


@router.get("/v1/code_interpreter/sessions/{session_id}/files", response_model=list[FileInfo])
async def list_files(
    session_id: str, client: ClientDep, user: UserDep, path: str = ""
) -> list[FileInfo]:
    """List the session's workspace."""
    return await client.list_files(session_id, user, path)


@router.get("/v1/code_interpreter/sessions/{session_id}/files/{path:path}")
async def download_file(session_id: str, path: str, client: ClientDep, user: UserDep) -> Response:
    """Download a file of the session's workspace."""
    data = await client.download_file(session_id, user, path)
    name = path.rsplit("/", 1)[-1].replace('"', "")
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/v1/executions/{execution_id}/output")
@router.get("/executions/{execution_id}/output")
async def execution_output(
    execution_id: str,
    client: ClientDep,
    user: UserDep,
    stream: str = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(gt=0, le=100_000)] = 200,
) -> dict[str, Any]:
    """Lines of the whole output of a run whose result was cut (the owner only)."""
    page = await client.read_output(execution_id, user, stream, offset, limit)
    return page.__dict__


# --- 003: POST /execute, POST /execute-stream and the WebSocket ---


class Execute003(BaseModel):
    """003's request: timeout in milliseconds."""

    code: str
    language: LanguageName = Language.PYTHON
    timeout: int = Field(default=30_000, gt=0, description="Milliseconds.")
    clientId: str | None = None  # noqa: N815  (003's name)


def _result_003(execution_id: str, result: ExecuteResult) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    if result.value is not None:
        results.append({"text": result.value})
    results += [{"png": image.data} for image in result.images]
    return {
        "executionId": execution_id,
        "result": {
            "results": results,
            "logs": {
                "stdout": [result.stdout] if result.stdout else [],
                "stderr": [result.stderr] if result.stderr else [],
            },
            "error": result.error.model_dump() if result.error else None,
            "exitCode": result.exit_code,
            "execution_id": result.execution_id,
        },
        "duration": result.duration_ms,
    }


def _request_003(body: Execute003) -> ExecuteRequest:
    return _validated(
        ExecuteRequest, code=body.code, language=body.language, timeout=body.timeout / 1000
    )


@router.post("/execute")
async def execute_003(
    body: Execute003, client: ClientDep, user: UserDep, limiter: LimiterDep
) -> dict[str, Any]:
    """003's synchronous run."""
    execution_id = str(int(time.time() * 1000)) + secrets.token_hex(2)
    async with limiter.slot(user):
        result = await client.execute(_request_003(body), user)
    return _result_003(execution_id, result)


@router.post("/execute-stream")
async def execute_stream_003(
    body: Execute003, request: Request, client: ClientDep, user: UserDep, limiter: LimiterDep
) -> dict[str, Any]:
    """003's streamed run: events go to the WebSocket connected with this clientId."""
    if not body.clientId:
        raise InvalidRequest("clientId is required: the id of your WebSocket connection")
    hub: WsHub = request.app.state.ws_hub
    ws_client = hub.get(body.clientId, user)
    execution_id = str(int(time.time() * 1000)) + secrets.token_hex(2)
    execute = _request_003(body)

    async def work() -> None:
        async def on_output(stream: str, data: str) -> None:
            await ws_client.send({"type": stream, "executionId": execution_id, "data": data})

        await ws_client.send(
            {
                "type": "status",
                "executionId": execution_id,
                "status": "running",
                "message": "Executing code...",
            }
        )
        try:
            async with limiter.slot(user):
                result = await client.execute(execute, user, on_output)
        except ExecutorError as exc:
            await ws_client.send(
                {
                    "type": "error",
                    "executionId": execution_id,
                    "error": {"name": exc.code, "value": exc.message, "traceback": ""},
                }
            )
            await ws_client.send(
                {
                    "type": "status",
                    "executionId": execution_id,
                    "status": "failed",
                    "message": exc.message,
                }
            )
            return
        if result.error is not None:
            await ws_client.send(
                {"type": "error", "executionId": execution_id, "error": result.error.model_dump()}
            )
        await ws_client.send({"type": "result", **_result_003(execution_id, result)})
        await ws_client.send(
            {
                "type": "status",
                "executionId": execution_id,
                "status": "completed",
                "message": "Execution finished",
            }
        )

    hub.start(ws_client, work)
    return {"executionId": execution_id, "status": "streaming", "clientId": body.clientId}


async def websocket_endpoint(websocket: WebSocket) -> None:
    """003's WebSocket: ws://host/?clientId=ID&token=TOKEN receives that client's events."""
    client_id = websocket.query_params.get("clientId")
    try:
        user = websocket_user(websocket)
    except ExecutorError as exc:
        await websocket.close(code=4401, reason=exc.message[:120])
        return
    if not client_id:
        await websocket.close(code=4400, reason="clientId query parameter is required")
        return
    await websocket.accept()
    hub: WsHub = websocket.app.state.ws_hub
    ws_client = hub.connect(client_id, user, websocket)
    try:
        await websocket.send_json({"type": "status", "status": "connected", "clientId": client_id})
        while True:
            await websocket.receive_text()  # pings from the client; nothing else expected
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client_id, ws_client)
