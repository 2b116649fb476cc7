"""Output as it is produced: Server-Sent Events, and 003's WebSocket clients.

Whichever way the client listens, a client that goes away cancels its run, and cancelling a
run frees its sandbox.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket

from executor.backends.base import OutputCallback
from executor.errors import ExecutorError, NotFound

Event = dict[str, Any]


async def sse_events(
    run: Callable[[OutputCallback], Awaitable[Event]],
) -> AsyncIterator[str]:
    """`event: stdout|stderr` as output comes, then `event: result` (or `event: error`)."""
    queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

    async def on_output(stream: str, data: str) -> None:
        await queue.put((stream, {"data": data}))

    async def go() -> None:
        try:
            await queue.put(("result", await run(on_output)))
        except ExecutorError as exc:
            await queue.put(("error", {"code": exc.code, "message": exc.message}))
        finally:
            await queue.put(None)

    task = asyncio.create_task(go())
    try:
        while (item := await queue.get()) is not None:
            name, payload = item
            yield f"event: {name}\ndata: {json.dumps(payload)}\n\n"
    finally:
        if not task.done():  # the client went away
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


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
    """WebSocket clients by clientId."""

    def __init__(self) -> None:
        self._clients: dict[str, WsClient] = {}

    def connect(self, client_id: str, user: str, socket: WebSocket) -> WsClient:
        """Register a client (a reconnect with the same id replaces the old one)."""
        client = WsClient(user, socket)
        self._clients[client_id] = client
        return client

    def disconnect(self, client_id: str, client: WsClient) -> None:
        """Forget a client and cancel its runs, freeing their sandboxes."""
        if self._clients.get(client_id) is client:
            del self._clients[client_id]
        for task in client.tasks:
            task.cancel()

    def get(self, client_id: str, user: str) -> WsClient:
        """The user's connected client, or NotFound saying how to connect."""
        client = self._clients.get(client_id)
        if client is None or client.user != user:
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
