"""The seed documents' REST API (000/001): /v1/code_interpreter/run, sessions and files.

Timeouts are in seconds; a run answers 001's shape (`output` and `error` as text, then every
field of the result), or Server-Sent Events when the client asks for a stream.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from executor.events import sse
from executor.interface import OutputCallback
from executor.web import file_routes, output_routes, unless_caller_leaves
from openai_tools.deps import ClientDep, UserDep, current_user, get_client
from schemas.execution import ExecuteRequest, ExecuteResult, ExecutionError
from schemas.languages import Language, LanguageName
from schemas.sessions import SessionInfo

TAGS: list[str | Any] = ["code interpreter (seed API)"]
SESSIONS = "/v1/code_interpreter/sessions"
MAX_UPLOAD_BYTES = 64 * 1024 * 1024

router = APIRouter(tags=TAGS)


class RunRequest(ExecuteRequest):
    """001's CodeExecutionRequest: a run, and whether to stream it."""

    stream: bool = Field(default=False, description="Answer with Server-Sent Events.")


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
async def run(body: RunRequest, request: Request, client: ClientDep, user: UserDep) -> Any:
    """Run code (in a session when session_id is given); SSE when asked for a stream."""
    execute = ExecuteRequest.of(body)
    if not (body.stream or "text/event-stream" in request.headers.get("accept", "")):

        async def answer() -> Response:
            return JSONResponse(run_response(await client.execute(execute, user)))

        return await unless_caller_leaves(request, answer)

    async def go(on_output: OutputCallback) -> dict[str, Any]:
        return run_response(await client.execute(execute, user, on_output))

    return StreamingResponse(sse(go), media_type="text/event-stream")


class OpenSession(BaseModel):
    """Body of POST /v1/code_interpreter/sessions (the language may also be a query param)."""

    language: LanguageName | None = None


@router.post(SESSIONS, response_model=SessionInfo)
async def open_session(
    client: ClientDep,
    user: UserDep,
    body: Annotated[OpenSession | None, Body()] = None,
    language: Annotated[LanguageName | None, Query()] = None,
) -> SessionInfo:
    """Open a session; its id goes in session_id of later runs."""
    chosen = (body.language if body else None) or language or Language.PYTHON
    return await client.open_session(chosen, user)


@router.get(SESSIONS, response_model=list[SessionInfo])
async def list_sessions(client: ClientDep, user: UserDep) -> list[SessionInfo]:
    """The caller's open sessions."""
    return await client.list_sessions(user)


@router.get(f"{SESSIONS}/{{session_id}}", response_model=SessionInfo)
async def get_session(session_id: str, client: ClientDep, user: UserDep) -> SessionInfo:
    """Describe one of the caller's sessions."""
    return await client.get_session(session_id, user)


@router.delete(f"{SESSIONS}/{{session_id}}")
async def end_session(session_id: str, client: ClientDep, user: UserDep) -> dict[str, Any]:
    """End a session and free its sandbox."""
    await client.close_session(session_id, user)
    return {"success": True, "message": "Session ended", "session_id": session_id}


router.include_router(file_routes(SESSIONS, get_client, current_user, MAX_UPLOAD_BYTES, tags=TAGS))
for outputs in ("/v1/executions", "/executions"):
    router.include_router(output_routes(outputs, get_client, current_user, tags=TAGS))
