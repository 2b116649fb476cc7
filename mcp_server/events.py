"""The events sent on MCP's streamable HTTP streams, kept for a while in memory, so that a
client whose connection dropped resumes a stream where it left it (GET with Last-Event-ID).

Bounded, whatever clients do: at most `max_events` events and `max_bytes` of them in all, at
most `max_per_stream` on one stream, none older than `ttl_s`; the oldest go first. A client
that never reconnects, or floods a stream with requests, only pushes older events out.

Each MCP session has a store of its own (`session()`): the SDK names a stream by the JSON-RPC
id of the request it answers, which every session numbers from the same start, so one store
shared by all sessions would replay one session's results to another.
"""

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamId,
)
from mcp.types import JSONRPCMessage

# What an event costs beyond its message: its id, its record, its place in two queues.
EVENT_OVERHEAD = 200


@dataclass(eq=False)
class _Event:
    id: EventId
    stream: StreamId
    session: "SessionEvents"
    data: str | None  # the message as JSON; None for a priming event (a cursor, no message)
    size: int
    at: float
    alive: bool = True


class EventMemory:
    """Every session's events, under one set of caps."""

    def __init__(
        self,
        max_events: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_per_stream: int = 1_000,
        ttl_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_per_stream = max_per_stream
        self.ttl_s = ttl_s
        self.clock = clock
        self.bytes = 0
        # Every event in the order it came, dropped ones too until they reach the front, so
        # that this queue is bounded by max_events as well.
        self._order: deque[_Event] = deque()

    def session(self) -> "SessionEvents":
        """A store for one MCP session's streams."""
        return SessionEvents(self)

    @property
    def events(self) -> int:
        """Events held now."""
        return sum(event.alive for event in self._order)

    def _add(self, event: _Event) -> None:
        self._order.append(event)
        self.bytes += event.size
        self.expire()

    def expire(self) -> None:
        """Drop the oldest events while a cap is exceeded, and every event past its time."""
        oldest_kept = self.clock() - self.ttl_s
        while self._order and (
            len(self._order) > self.max_events
            or self.bytes > self.max_bytes
            or self._order[0].at < oldest_kept
        ):
            self._drop(self._order.popleft())

    def _drop(self, event: _Event) -> None:
        if event.alive:
            event.alive = False
            self.bytes -= event.size
            event.session._forget(event)


class SessionEvents(EventStore):
    """One MCP session's streams: the events of each, oldest first."""

    def __init__(self, memory: EventMemory) -> None:
        self.memory = memory
        self._streams: dict[StreamId, deque[_Event]] = {}
        self._by_id: dict[EventId, _Event] = {}

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep an event (a message, or None for a stream's priming cursor); its new id."""
        data = None
        if message is not None:
            data = message.model_dump_json(by_alias=True, exclude_none=True)
        event = _Event(
            id=uuid.uuid4().hex,
            stream=stream_id,
            session=self,
            data=data,
            size=EVENT_OVERHEAD + len(data or ""),
            at=self.memory.clock(),
        )
        stream = self._streams.setdefault(stream_id, deque())
        if message is None:
            # The priming event goes out first on its stream, but the SDK stores it when the
            # SSE response starts, which can be after the call's first messages were stored
            # (queued for that response): it marks the stream's start, so it goes before them.
            stream.appendleft(event)
        else:
            stream.append(event)
        self._by_id[event.id] = event
        if len(stream) > self.memory.max_per_stream:
            self.memory._drop(stream[0])
        self.memory._add(event)
        return event.id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the messages that came after last_event_id on its stream; that stream, or None
        when the event is unknown here (another session's, or already dropped)."""
        self.memory.expire()
        last = self._by_id.get(last_event_id)
        if last is None:
            return None
        # A copy: the stream may grow or shrink while the callback awaits.
        events = list(self._streams.get(last.stream, ()))
        for event in events[events.index(last) + 1 :]:
            if event.data is not None:
                message = JSONRPCMessage.model_validate_json(event.data)
                await send_callback(EventMessage(message, event.id))
        return last.stream

    def _forget(self, event: _Event) -> None:
        """Remove a dropped event: its stream's oldest, but for a priming event stored late."""
        del self._by_id[event.id]
        stream = self._streams[event.stream]
        if stream[0] is event:
            stream.popleft()
        else:
            stream.remove(event)
        if not stream:
            del self._streams[event.stream]
