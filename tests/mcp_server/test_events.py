"""The events kept for resuming MCP streams (mcp_server/events.py): replayed after the id a
client names, per session, and bounded however a client behaves; and the streamable HTTP
front-end's streams open with a priming event and a retry interval, each session with a store
of its own. (A real client resuming over a real server: tests/clients/test_conformance.py.)"""

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
import pytest
from mcp.server.streamable_http import EventMessage
from mcp.types import JSONRPCMessage, JSONRPCNotification

from executor.tools import ToolSet
from mcp_server.events import EVENT_OVERHEAD, EventMemory, SessionEvents
from mcp_server.http import RETRY_INTERVAL_MS, McpHttp
from tests.mcp_wire import ACCEPT, initialize

pytestmark = pytest.mark.anyio


def note(n: int, size: int = 0) -> JSONRPCMessage:
    """A notification numbered n (in its params), padded to about size characters."""
    params = {"n": n, "pad": "x" * size}
    return JSONRPCMessage(JSONRPCNotification(jsonrpc="2.0", method="note", params=params))


async def replayed(store: SessionEvents, after: str) -> tuple[str | None, list[int]]:
    """The stream replay names, and the numbers of the notes it sends."""
    sent: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event)

    stream = await store.replay_events_after(after, collect)
    assert all(event.event_id for event in sent)
    return stream, [event.message.root.params["n"] for event in sent]  # type: ignore[union-attr]


async def test_replay_sends_what_came_after_the_id_on_its_stream_only() -> None:
    store = EventMemory().session()
    priming = await store.store_event("1", None)
    await store.store_event("1", note(1))
    await store.store_event("2", note(99))  # another request's stream
    second = await store.store_event("1", note(2))
    await store.store_event("1", note(3))
    assert await replayed(store, priming) == ("1", [1, 2, 3])
    assert await replayed(store, second) == ("1", [3])
    assert await replayed(store, "no-such-event") == (None, [])


async def test_a_priming_event_stored_late_still_marks_its_stream_start() -> None:
    """The SDK stores a call's first messages as they are queued for its response, and the
    priming event when that response starts: a client that drops after the priming event
    must still get those first messages back (they followed it on the wire)."""
    memory = EventMemory(max_events=4)
    store = memory.session()
    await store.store_event("1", note(1))  # queued before the SSE response started
    priming = await store.store_event("1", None)
    await store.store_event("1", note(2))
    assert await replayed(store, priming) == ("1", [1, 2])
    # Dropped in the order they came, a late priming event leaves the stream consistent.
    for n in range(3, 7):
        await store.store_event("1", note(n))
    assert await replayed(store, priming) == (None, [])  # the priming event is gone now
    assert memory.events == 4


async def test_sessions_do_not_see_each_others_streams() -> None:
    memory = EventMemory()
    alice, bob = memory.session(), memory.session()
    # Both sessions' first requests have JSON-RPC id 1: the SDK names both streams "1".
    alice_priming = await alice.store_event("1", None)
    bob_priming = await bob.store_event("1", None)
    await alice.store_event("1", note(1))
    await bob.store_event("1", note(2))
    assert await replayed(alice, alice_priming) == ("1", [1])
    assert await replayed(bob, bob_priming) == ("1", [2])
    # An id of another session is unknown here, as if it never existed.
    assert await replayed(alice, bob_priming) == (None, [])


async def test_a_stream_keeps_its_newest_events_and_the_oldest_are_forgotten() -> None:
    memory = EventMemory(max_per_stream=3)
    store = memory.session()
    ids = [await store.store_event("1", note(n)) for n in range(5)]
    assert memory.events == 3
    assert await replayed(store, ids[0]) == (None, [])  # dropped: cannot resume from it
    assert await replayed(store, ids[2]) == ("1", [3, 4])


async def test_events_and_bytes_in_all_are_capped_across_sessions() -> None:
    memory = EventMemory(max_events=4, max_bytes=10_000)
    first, second = memory.session(), memory.session()
    early = await first.store_event("1", note(0))
    for n in range(1, 4):
        await second.store_event("1", note(n))
    await second.store_event("1", note(4))
    assert memory.events == 4
    assert await replayed(first, early) == (None, [])  # the oldest went first
    big = await first.store_event("2", note(5, size=6_000))
    await first.store_event("2", note(6, size=6_000))
    assert memory.bytes <= 10_000
    assert await replayed(first, big) == (None, [])
    # A single message above the whole budget is not kept at all.
    await first.store_event("3", note(7, size=20_000))
    assert memory.bytes <= 10_000


async def test_events_expire() -> None:
    now = [0.0]
    memory = EventMemory(ttl_s=60, clock=lambda: now[0])
    store = memory.session()
    priming = await store.store_event("1", None)
    await store.store_event("1", note(1))
    now[0] = 59
    assert await replayed(store, priming) == ("1", [1])
    now[0] = 61
    assert await replayed(store, priming) == (None, [])
    assert memory.events == 0 and memory.bytes == 0


async def test_a_flood_holds_no_more_than_the_caps() -> None:
    memory = EventMemory(max_events=100, max_bytes=50_000, max_per_stream=10)
    stores = [memory.session() for _ in range(20)]
    for n in range(5_000):
        await stores[n % 20].store_event(str(n % 7), note(n, size=n % 500))
    assert memory.events <= 100 and memory.bytes <= 50_000
    assert len(memory._order) <= 100
    held = sum(len(store._by_id) for store in stores)
    assert held == memory.events
    assert memory.bytes == sum(e.size for s in stores for e in s._by_id.values())
    assert all(e.size >= EVENT_OVERHEAD for s in stores for e in s._by_id.values())


@pytest.fixture
async def mcp_http(make_fake_executor: Any) -> AsyncIterator[tuple[McpHttp, httpx.AsyncClient]]:
    """The streamable HTTP front-end over the fake backend; the user is the X-User header."""
    mcp = McpHttp(lambda scope: dict(scope["headers"])[b"x-user"].decode())
    mcp.bind(await make_fake_executor(), ToolSet())
    async with (
        mcp.running(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=mcp), base_url="http://t") as http,
    ):
        yield mcp, http


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The events of an SSE stream's lines as they come, each a dict of its fields."""
    event: dict[str, str] = {}
    for line in lines:
        if line.strip():
            name, _, value = line.partition(":")
            event[name] = value.strip()
        elif event:
            yield event
            event = {}
    if event:
        yield event


async def test_http_streams_open_with_a_priming_event_and_each_session_has_its_own_store(
    mcp_http: tuple[McpHttp, httpx.AsyncClient],
) -> None:
    mcp, http = mcp_http
    opening = initialize()
    opening["params"]["protocolVersion"] = "2025-11-25"
    primings, sessions = {}, {}
    for user in ("alice", "bob"):
        response = await http.post("/mcp", json=opening, headers={**ACCEPT, "X-User": user})
        assert response.status_code == 200, response.text
        priming, answer = sse_events(response.text.splitlines())
        assert priming["id"] and priming["data"] == "" and priming["retry"] == str(RETRY_INTERVAL_MS)
        assert json.loads(answer["data"])["result"]["serverInfo"]["name"] == "code-exec"
        primings[user] = priming["id"]
        sessions[user] = response.headers["mcp-session-id"]
    assert mcp.manager is not None
    transports = mcp.manager._server_instances
    alice = transports[sessions["alice"]]._event_store
    bob = transports[sessions["bob"]]._event_store
    assert isinstance(alice, SessionEvents) and isinstance(bob, SessionEvents) and alice is not bob
    assert alice.memory is bob.memory is mcp.events
    # Both answered request id 1; each session replays its own answer, and only its own.
    sent: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event)

    assert await alice.replay_events_after(primings["alice"], collect) == "1"
    assert await alice.replay_events_after(primings["bob"], collect) is None
    assert len(sent) == 1 and sent[0].message.root.id == 1  # type: ignore[union-attr]
