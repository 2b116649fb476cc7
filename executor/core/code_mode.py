"""Code mode, one run at a time: the gate between a run's code and the upstream tools.

The sandbox's tools module asks over the channel (backends: the egress listener's /tools/
paths); the gate answers with the user's catalogue, searches it, and makes calls within the
run's budget of calls and result bytes, refusing what the operator's allowlists leave out.
Every call is logged (who, which tool, how long, how many bytes); the run's result carries a
summary of them (ToolUse), within its token budget.
"""

import json
import logging
import time
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ValidationError

from executor.core.upstream import UpstreamHub
from schemas.upstream import ToolCall, ToolReply, ToolUse

log = logging.getLogger(__name__)

_MAX_SEARCH_RESULTS = 50


class RunTools:
    """The tools one run's code may call, and what it called (a ToolGate)."""

    def __init__(self, hub: UpstreamHub, user: str, max_calls: int, max_bytes: int) -> None:
        self.hub = hub
        self.user = user
        self.calls_left = max_calls
        self.bytes_left = max_bytes
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self._uses: dict[str, ToolUse] = {}
        self._catalogue: bytes | None = None

    def summary(self) -> list[ToolUse]:
        """Each tool called, how often and how many calls failed, in the order first called."""
        return list(self._uses.values())

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, JSON) for one request of the sandbox's tools module."""
        url = urlsplit(path)
        query = parse_qs(url.query)
        await self.hub.settle()
        if method == "GET" and url.path == "/tools/list":
            if self._catalogue is None:  # made once a run: code may ask as often as it likes
                entries = [entry.model_dump() for entry in self.hub.catalogue(self.user)]
                self._catalogue = _json(entries)
            return 200, self._catalogue
        if method == "GET" and url.path == "/tools/search":
            words = query.get("q", [""])[-1][:500]
            try:
                limit = min(int(query.get("limit", ["10"])[-1]), _MAX_SEARCH_RESULTS)
            except ValueError:
                return 400, _error("limit must be a number")
            found = self.hub.search(self.user, words, max(limit, 1))
            return 200, _json([entry.model_dump() for entry in found])
        if method == "POST" and url.path == "/tools/call":
            try:
                call = ToolCall.model_validate_json(body)
            except ValidationError as exc:
                return 400, _error(f"not a tool call: {exc.errors()[0]['msg']}")
            return await self._call(call)
        return 404, _error(
            f"no {method} {url.path[:100]} (GET /tools/list, /tools/search; POST /tools/call)"
        )

    async def _call(self, call: ToolCall) -> tuple[int, bytes]:
        name = f"{call.server}.{call.tool}"
        why_not = self.hub.allowed(self.user, call.server, call.tool)
        if why_not is not None:
            log.info("upstream call refused for %s: %s: %s", self.user, name, why_not)
            return 403, _reply(ToolReply(ok=False, error=why_not))
        if self.calls_left <= 0:
            return 429, _reply(
                ToolReply(
                    ok=False,
                    error=f"this run made its {self.max_calls} tool calls "
                    "(CODE_EXEC_UPSTREAM_CALLS_PER_RUN); do more per call, or in another run",
                )
            )
        if self.bytes_left <= 0:
            return 429, _reply(ToolReply(ok=False, error=self._bytes_spent()))
        self.calls_left -= 1
        use = self._uses.setdefault(name, ToolUse(tool=name, calls=0))
        use.calls += 1
        began = time.monotonic()
        reply = await self.hub.call(call.server, call.tool, call.arguments)
        answer = _reply(reply)
        self.bytes_left -= len(answer)
        if self.bytes_left < 0:
            reply = ToolReply(ok=False, error=self._bytes_spent())
            answer = _reply(reply)
        if not reply.ok:
            use.errors += 1
        log.info(
            "upstream call for %s: %s %s in %.0f ms, %d bytes",
            self.user,
            name,
            "ok" if reply.ok else "failed",
            (time.monotonic() - began) * 1000,
            len(answer),
        )
        return 200, answer

    def _bytes_spent(self) -> str:
        return (
            f"this run received its {self.max_bytes // 2**20} MiB of tool results "
            "(CODE_EXEC_UPSTREAM_MB_PER_RUN); ask the tools for less (filters, limits)"
        )


def _json(value: object) -> bytes:
    return json.dumps(value, default=str).encode()


def _reply(reply: BaseModel) -> bytes:
    return reply.model_dump_json().encode()


def _error(message: str) -> bytes:
    return _reply(ToolReply(ok=False, error=message))
