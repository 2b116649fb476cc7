"""The seed documents' REST API (000/001): /v1/code_interpreter/run, sessions and files.

Timeouts are in seconds; a run answers 001's shape (`output` and `error` as text, then every
field of the result), or Server-Sent Events when the client asks for a stream.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from executor.events import sse
from executor.interface import OutputCallback
from executor.web import file_routes, output_routes, unless_caller_leaves
from openai_tools.deps import (
    ClientDep,
    SettingsDep,
    SignerDep,
    UserDep,
    current_user,
    download_user,
    get_client,
)
from openai_tools.signed_urls import SignedUrl, file_path, public_base
from schemas.execution import ExecuteRequest, ExecuteResult, ExecutionError
from schemas.file_uris import output_uri
from schemas.languages import Language, LanguageName
from schemas.sessions import SessionInfo, SessionOptions

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


def run_response(result: ExecuteResult, base: str) -> dict[str, Any]:
    """The seed's response: `output` and `error` as text, then every field of the result;
    each output file with its download URL (the caller's token) and its URI (for inputs)."""
    body = result.model_dump(mode="json")
    for file in body["files"]:
        file["url"] = base + file_path(result.execution_id, f"outputs/{file['name']}")
        file["uri"] = output_uri(result.execution_id, file["name"])
    body["error_detail"] = body.pop("error")
    body["output"] = result.stdout
    body["error"] = _error_text(result.error)
    return body


@router.post("/v1/code_interpreter/run")
async def run(
    body: RunRequest, request: Request, client: ClientDep, user: UserDep, settings: SettingsDep
) -> Any:
    """Run code (in a session when session_id is given); SSE when asked for a stream."""
    execute = ExecuteRequest.of(body)
    base = public_base(request, settings)
    if not (body.stream or "text/event-stream" in request.headers.get("accept", "")):

        async def answer() -> Response:
            return JSONResponse(run_response(await client.execute(execute, user), base))

        return await unless_caller_leaves(request, answer)

    async def go(on_output: OutputCallback) -> dict[str, Any]:
        return run_response(await client.execute(execute, user, on_output), base)

    return StreamingResponse(sse(go), media_type="text/event-stream")


class OpenSession(SessionOptions):
    """Body of POST /v1/code_interpreter/sessions (the language may also be a query param):
    the language, and the session's packages, network and input files."""

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
    options = SessionOptions.model_validate(body.model_dump(exclude={"language"})) if body else None
    return await client.open_session(chosen, user, options)


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


@router.post("/v1/executions/{execution_id}/files/{name:path}/url", response_model=SignedUrl)
async def sign_file_url(
    execution_id: str,
    name: str,
    request: Request,
    client: ClientDep,
    user: UserDep,
    signer: SignerDep,
    settings: SettingsDep,
    ttl_s: Annotated[
        int | None,
        Query(gt=0, description="Seconds the URL works (CODE_EXEC_DOWNLOAD_URL_TTL_S if unset)."),
    ] = None,
) -> SignedUrl:
    """A URL that downloads one of the caller's kept files (outputs/report.csv, image-0.png)
    without a token until it expires: for a browser. 404 as the download would answer."""
    ttl = signer.ttl(ttl_s)
    # Looked up before signing, so that no URL is ever signed for a file not the caller's.
    await (await client.download_output(execution_id, name, user)).release()
    return signer.url(public_base(request, settings), execution_id, name, user, ttl)


router.include_router(file_routes(SESSIONS, get_client, current_user, MAX_UPLOAD_BYTES, tags=TAGS))
for outputs in ("/v1/executions", "/executions"):
    router.include_router(
        output_routes(outputs, get_client, current_user, file_user=download_user, tags=TAGS)
    )
