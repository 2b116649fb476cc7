"""The one event stream behind NDJSON, SSE and WebSocket: in order, bounded, cancellable."""

import asyncio

import pytest

from executor.events import QUEUED, ndjson, run_events, sse
from executor.interface import OutputCallback

pytestmark = pytest.mark.anyio


async def test_a_client_that_does_not_read_holds_the_run_back() -> None:
    produced = 0

    async def run(on_output: OutputCallback) -> dict[str, int]:
        nonlocal produced
        for i in range(1000):
            await on_output("stdout", f"{i}\n")
            produced += 1
        return {"produced": produced}

    events = run_events(run)
    first = await anext(events)  # the stream starts; then the client stops reading
    await asyncio.sleep(0.2)
    assert first == {"type": "stdout", "data": "0\n"}
    # The run waits for the reader: at most the queue's worth of events is held.
    assert produced <= QUEUED + 2, produced
    rest = [event async for event in events]
    assert rest[-1] == {"type": "result", "result": {"produced": 1000}}
    assert "".join(e["data"] for e in [first, *rest[:-1]]) == "".join(f"{i}\n" for i in range(1000))


async def test_closing_the_stream_cancels_the_run() -> None:
    cancelled = asyncio.Event()

    async def run(on_output: OutputCallback) -> None:
        try:
            await on_output("stdout", "started\n")
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    events = run_events(run)
    assert (await anext(events))["data"] == "started\n"
    await events.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_encodings() -> None:
    async def run(on_output: OutputCallback) -> dict[str, str]:
        await on_output("stderr", "e")
        return {"ok": "yes"}

    lines = [line async for line in ndjson(run)]
    assert lines == [b'{"type": "stderr", "data": "e"}\n', b'{"type": "result", "result": {"ok": "yes"}}\n']
    frames = [frame async for frame in sse(run)]
    assert frames == ['event: stderr\ndata: {"data": "e"}\n\n', 'event: result\ndata: {"ok": "yes"}\n\n']
