"""Output as it is produced, for every streaming transport: NDJSON, Server-Sent Events, WebSocket.

run_events turns one run into events: {"type": "stdout"|"stderr", "data"} as output comes,
then {"type": "result", "result"} or {"type": "error", "error": {code, message}}. Each
transport only encodes them. Whichever way the client listens, a client that goes away stops
the iteration, which cancels the run, and cancelling a run frees its sandbox.

The queue between the run and the transport is bounded: a client that does not read stops
the transport, the transport stops taking events, and the run's output callback waits, so
the sandbox's pipes fill and the program itself waits (until its timeout). Nothing piles up
here: at most QUEUED events (each at most one read of a pipe, 64 KiB) per stream.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from executor.errors import ExecutorError
from executor.interface import OutputCallback

QUEUED = 16
Event = dict[str, Any]
Run = Callable[[OutputCallback], Awaitable[Any]]
"""Starts the run with an output callback; returns what the result event carries."""


async def run_events(run: Run) -> AsyncIterator[Event]:
    """The events of one run, in order; closing the iterator cancels the run."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUED)

    async def on_output(stream: str, data: str) -> None:
        await queue.put({"type": stream, "data": data})

    async def go() -> None:
        try:
            await queue.put({"type": "result", "result": await run(on_output)})
        except ExecutorError as exc:
            await queue.put({"type": "error", "error": {"code": exc.code, "message": exc.message}})
        finally:
            await queue.put(None)

    task = asyncio.create_task(go())
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not task.done():  # the client went away
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def ndjson(run: Run) -> AsyncIterator[bytes]:
    """One JSON object per line (the executor's /execute?stream=true)."""
    async for event in run_events(run):
        yield (json.dumps(event) + "\n").encode()


async def sse(run: Run) -> AsyncIterator[str]:
    """`event: stdout|stderr` with {"data"}, then `event: result` (or `event: error`)."""
    async for event in run_events(run):
        name = event["type"]
        payload = {"data": event["data"]} if "data" in event else event[name]
        yield f"event: {name}\ndata: {json.dumps(payload)}\n\n"
