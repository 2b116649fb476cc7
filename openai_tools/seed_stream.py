"""The seed documents' execution API (003): POST /execute, POST /execute-stream, a WebSocket.

Timeouts are in milliseconds. A streamed run's events (status, stdout, stderr, error, result)
go to the WebSocket the client connected with the same clientId; a WebSocket that goes away
cancels its runs, freeing their sandboxes.
"""

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from executor.errors import ExecutorError, InvalidRequest, NotFound
from executor.events import Event, run_events
from executor.interface import OutputCallback
from openai_tools.auth import require_user
from openai_tools.deps import ClientDep, UserDep
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.languages import Language, LanguageName
from schemas.text import Text

router = APIRouter(tags=["code interpreter (seed API)"])


class Execute003(BaseModel):
    """003's request: timeout in milliseconds."""

    code: Text
    language: LanguageName = Language.PYTHON
    timeout: int = Field(default=30_000, gt=0, le=24 * 3600 * 1000, description="Milliseconds.")
    clientId: Text | None = Field(default=None, max_length=256)  # noqa: N815  (003's name)

    def to_request(self) -> ExecuteRequest:
        """The executor request (timeout in seconds)."""
        return ExecuteRequest.model_construct(
            code=self.code, language=self.language, timeout=self.timeout / 1000
        )


def _execution_id() -> str:
    return str(int(time.time() * 1000)) + secrets.token_hex(2)


def result_003(execution_id: str, result: ExecuteResult) -> dict[str, Any]:
    """003's result object."""
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


@router.post("/execute")
async def execute_003(body: Execute003, client: ClientDep, user: UserDep) -> dict[str, Any]:
    """003's synchronous run."""
    return result_003(_execution_id(), await client.execute(body.to_request(), user))


@dataclass
class WsClient:
    """One connected WebSocket client of the 003 streaming API."""

    user: str
    socket: WebSocket
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, event: Event) -> None:
        """Send one event (events of concurrent runs do not interleave mid-message)."""
        async with self.lock:
            await self.socket.send_json(event)


class WsHub:
    """WebSocket clients by user and clientId: a clientId names a connection of its user only,
    so another user reusing it neither replaces nor reaches it."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], WsClient] = {}

    def connect(self, client_id: str, user: str, socket: WebSocket) -> WsClient:
        """Register a client (the same user reconnecting with the same id replaces the old)."""
        client = WsClient(user, socket)
        self._clients[(user, client_id)] = client
        return client

    def disconnect(self, client_id: str, client: WsClient) -> None:
        """Forget a client and cancel its runs, freeing their sandboxes."""
        if self._clients.get((client.user, client_id)) is client:
            del self._clients[(client.user, client_id)]
        for task in client.tasks:
            task.cancel()

    def get(self, client_id: str, user: str) -> WsClient:
        """The user's connected client, or NotFound saying how to connect."""
        client = self._clients.get((user, client_id))
        if client is None:
            raise NotFound(
                f"no WebSocket client {client_id!r} is connected for this user; connect to "
                f"ws://<host>/?clientId={client_id}&token=<token> first"
            )
        return client

    def start(self, client: WsClient, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run work for a client; cancelled if the client disconnects."""
        task: asyncio.Task[None] = asyncio.create_task(work())
        client.tasks.add(task)
        task.add_done_callback(client.tasks.discard)


def _status(execution_id: str, status: str, message: str) -> Event:
    return {"type": "status", "executionId": execution_id, "status": status, "message": message}


def _messages_003(execution_id: str, event: Event) -> list[Event]:
    """The WebSocket messages of one run event, in 003's shapes."""
    kind = event["type"]
    if kind in ("stdout", "stderr"):
        return [{"type": kind, "executionId": execution_id, "data": event["data"]}]
    if kind == "error":  # the executor could not run it
        error = event["error"]
        return [
            {
                "type": "error",
                "executionId": execution_id,
                "error": {"name": error["code"], "value": error["message"], "traceback": ""},
            },
            _status(execution_id, "failed", error["message"]),
        ]
    result: ExecuteResult = event["result"]
    messages: list[Event] = []
    if result.error is not None:
        messages.append(
            {"type": "error", "executionId": execution_id, "error": result.error.model_dump()}
        )
    messages.append({"type": "result", **result_003(execution_id, result)})
    messages.append(_status(execution_id, "completed", "Execution finished"))
    return messages


@router.post("/execute-stream")
async def execute_stream_003(
    body: Execute003, request: Request, client: ClientDep, user: UserDep
) -> dict[str, Any]:
    """003's streamed run: events go to the WebSocket connected with this clientId."""
    if not body.clientId:
        raise InvalidRequest("clientId is required: the id of your WebSocket connection")
    hub: WsHub = request.app.state.ws_hub
    ws_client = hub.get(body.clientId, user)
    execution_id = _execution_id()
    execute = body.to_request()

    async def run(on_output: OutputCallback) -> ExecuteResult:
        return await client.execute(execute, user, on_output)

    async def work() -> None:
        await ws_client.send(_status(execution_id, "running", "Executing code..."))
        async for event in run_events(run):
            for message in _messages_003(execution_id, event):
                await ws_client.send(message)

    hub.start(ws_client, work)
    return {"executionId": execution_id, "status": "streaming", "clientId": body.clientId}


async def websocket_endpoint(websocket: WebSocket) -> None:
    """003's WebSocket: ws://host/?clientId=ID&token=TOKEN receives that client's events."""
    client_id = websocket.query_params.get("clientId")
    try:
        user = require_user(websocket.scope)
    except ExecutorError as exc:
        await websocket.close(code=4401, reason=exc.message[:120])
        return
    if not client_id or len(client_id) > 256:
        await websocket.close(code=4400, reason="clientId (1 to 256 characters) is required")
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


router.add_api_websocket_route("/", websocket_endpoint)
router.add_api_websocket_route("/ws", websocket_endpoint)
