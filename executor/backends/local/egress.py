"""The egress proxy: what a sandbox reaches of the network, one connection at a time.

A sandbox has no network interface but its own loopback. When the operator allows any network
(CODE_EXEC_NETWORK), each sandbox hands the executor a socket listening on its loopback
(runners/egress_listen.py) and the executor serves it here: an HTTP proxy at
http://127.0.0.1:3128 inside the sandbox, which pip, npm, curl and most HTTP libraries use
through HTTP(S)_PROXY. Each connection is decided by the run's NetworkPolicy (network.py):
- CONNECT host:port (HTTPS and anything else over TLS): the name is checked, the executor
  resolves and dials it, and then only relays bytes: no TLS is intercepted;
- GET http://host/... (plain HTTP): the same check, one request per connection;
- /pypi/... and /npm/... (what PIP_INDEX_URL and npm's registry point at): the package mirror
  (mirror.py), when the run's network includes the packages;
- /tools/... (code mode: the sandbox's tools module, asked directly): the run's ToolGate,
  which calls the operator's MCP tools. With upstream servers configured the listener exists
  even where no network is allowed, and then serves only these.
Every decision is logged. Bytes in both directions count against the run's budget; a run that
spends it has its connections closed and new ones refused. A request's head is bounded
(_MAX_HEAD) and must arrive in time; the connections a sandbox may hold at once are bounded.
Nothing here holds more than a relay buffer per connection.
"""

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from executor.backends.base import ByteAllowance, ToolGate
from executor.backends.local.network import Decision, NetworkPolicy
from executor.backends.local.policy import EGRESS_PORT
from executor.errors import SandboxFailure

log = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
TOOLS_PREFIX = "/tools/"  # what the sandbox's tools module asks (code mode): the tool gate
MAX_TOOL_REQUEST_BYTES = 1024 * 1024
_MAX_CONNECTIONS = 32
_RELAY_CHUNK = 64 * 1024
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?$")
# Headers that belong to one hop, not passed on to the server (RFC 9110 7.6.1).
_HOP_HEADERS = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "upgrade"}
)


class RequestError(Exception):
    """A request the proxy will not serve: an HTTP status and a reason for the code."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Sink(Protocol):
    """Where a response goes: a connection's writer, or one that meters it."""

    def write(self, data: bytes) -> None:
        """Queue data."""

    async def drain(self) -> None:
        """Wait until the queue is small enough."""


# The package mirror's entry point: it answers the request for path on the sink.
MirrorHandler = Callable[[str, Sink], Awaitable[None]]


@dataclass(frozen=True)
class EgressConfig:
    """What every sandbox's proxy shares: the ceiling, the mirror, the limits."""

    ceiling: NetworkPolicy
    mirror: MirrorHandler | None
    run_bytes: int
    head_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0


class _Metered:
    """A writer whose bytes count against a run's budget; a spent budget cuts the connection."""

    def __init__(self, writer: asyncio.StreamWriter, budget: "_Budget") -> None:
        self._writer = writer
        self._budget = budget

    def write(self, data: bytes) -> None:
        if not self._budget.take(len(data)):
            raise ConnectionAbortedError("the run's network budget is spent")
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()


@dataclass
class _Budget:
    """A run's bytes, against its own limit and its user's allowance."""

    limit: int
    allowance: ByteAllowance | None = None
    used: int = 0
    spent: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""

    def take(self, n: int) -> bool:
        self.used += n
        if self.used > self.limit:
            self.why = (
                f"this run moved its {self.limit // (1024 * 1024)} MiB of network traffic "
                "(CODE_EXEC_EGRESS_RUN_MB)"
            )
        elif self.allowance is not None and not self.allowance.take(n):
            self.why = self.allowance.reason()
        else:
            return True
        self.spent.set()
        return False


def _status_line(status: int, reason: str) -> bytes:
    names = {
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        413: "Content Too Large",
        429: "Too Many Requests",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        504: "Gateway Timeout",
    }
    # The reason phrase carries the explanation: pip and curl show it for a failed CONNECT.
    text = f"{names.get(status, 'Error')} by code-exec: {reason}"
    phrase = text.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase[:400])


async def respond(
    writer: Sink, status: int, body: bytes, content_type: str, reason: str = ""
) -> None:
    """A whole response, the connection closed after it."""
    writer.write(
        (_status_line(status, reason) if reason else b"HTTP/1.1 %d OK\r\n" % status)
        + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


def _parse_host(authority: str, default_port: int) -> tuple[str, int]:
    match = _HOST.match(authority)
    if match is None:
        raise RequestError(400, "the target is not host:port")
    host = match.group(1).strip("[]").lower()
    port = int(match.group(2)) if match.group(2) else default_port
    if not 0 < port < 65536:
        raise RequestError(400, f"port {port} is out of range")
    return host, port


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    headers: list[tuple[str, str]]


def _parse_head(raw: bytes) -> _Head:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise RequestError(400, "the request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, "not an HTTP/1.x request line")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise RequestError(400, "a malformed header line")
        headers.append((name, value.strip()))
    return _Head(parts[0], parts[1], headers)


class SandboxEgress:
    """One sandbox's proxy: serves the listener the sandbox handed over, under the policy of
    its current run (nothing between runs)."""

    def __init__(self, sandbox_id: str, listener: socket.socket, config: EgressConfig) -> None:
        self._id = sandbox_id
        self._listener = listener
        self._config = config
        self._server: asyncio.Server | None = None
        self._policy = NetworkPolicy()
        self._tools: ToolGate | None = None
        self._budget = _Budget(config.run_bytes)
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Accept the sandbox's connections from now on."""
        self._listener.setblocking(False)
        self._server = await asyncio.start_server(
            self._accepted, sock=self._listener, limit=_MAX_HEAD
        )

    def begin_run(
        self,
        policy: NetworkPolicy,
        allowance: ByteAllowance | None = None,
        tools: ToolGate | None = None,
    ) -> None:
        """The policy of the run that starts now, with a fresh byte budget (and its user's
        allowance, which its bytes count against too), and the tools its code may call."""
        self._policy = policy
        self._tools = tools
        self._budget = _Budget(self._config.run_bytes, allowance)
        if allowance is not None and not allowance.take(0):
            self._budget.why = allowance.reason()
            self._budget.spent.set()

    def end_run(self) -> int:
        """No network and no tools until the next run; the bytes this one moved."""
        self._policy = NetworkPolicy()
        self._tools = None
        return self._budget.used

    def abort(self) -> None:
        """Stop serving and cut every connection, now."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        self._listener.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= _MAX_CONNECTIONS:
            with contextlib.suppress(OSError):
                await respond(
                    writer,
                    429,
                    b"too many connections\n",
                    "text/plain",
                    f"a sandbox holds at most {_MAX_CONNECTIONS} connections at once",
                )
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except RequestError as exc:
            self._log(exc.reason, refused=True)
            with contextlib.suppress(OSError):
                await respond(
                    writer, exc.status, f"{exc.reason}\n".encode(), "text/plain", exc.reason
                )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _log(self, what: str, *, refused: bool) -> None:
        log.info(
            "egress %s %s: %s (network %s)",
            self._id,
            "refused" if refused else "allowed",
            what,
            self._policy.level.value,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._config.head_timeout_s)
        except asyncio.LimitOverrunError:
            raise RequestError(431, f"the request head is over {_MAX_HEAD} bytes") from None
        except TimeoutError:
            raise RequestError(400, "no request head in time") from None
        head = _parse_head(raw[:-4])
        if head.target.startswith(TOOLS_PREFIX):
            await self._tool_request(head, reader, writer)
            return
        if head.method == "CONNECT":
            host, port = _parse_host(head.target, 443)
            upstream = await self._dial(host, port, f"CONNECT {host}:{port}")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._relay(reader, writer, *upstream)
            return
        if head.target.startswith("http://"):
            authority, _, path = head.target[len("http://") :].partition("/")
            host, port = _parse_host(authority, 80)
            if host in ("127.0.0.1", "localhost") and port == EGRESS_PORT:
                await self._mirror("/" + path, writer)  # the mirror, asked through the proxy
                return
            upstream_reader, upstream_writer = await self._dial(
                host, port, f"{head.method} http://{host}:{port}/"
            )
            kept = [(k, v) for k, v in head.headers if k.lower() not in _HOP_HEADERS]
            upstream_writer.write(
                f"{head.method} /{path} HTTP/1.1\r\n".encode()
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in kept)
                + b"Connection: close\r\n\r\n"
            )
            await self._relay(reader, writer, upstream_reader, upstream_writer)
            return
        if head.target.startswith("/"):
            await self._mirror(head.target, writer)
            return
        raise RequestError(400, "the request names no http:// URL, CONNECT target or path")

    async def _tool_request(
        self, head: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A request of the sandbox's tools module, answered by the run's tool gate (asked
        directly, not through the proxy: it needs no network)."""
        gate = self._tools
        if gate is None:
            raise RequestError(
                403,
                "no tools are open to code now: the operator configured none "
                "(CODE_EXEC_UPSTREAM_CONFIG), or no run is in progress",
            )
        lengths = [v for k, v in head.headers if k.lower() == "content-length"]
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            raise RequestError(400, "one Content-Length, a number, is needed")
        length = int(lengths[0]) if lengths else 0
        if length > MAX_TOOL_REQUEST_BYTES:
            raise RequestError(
                413, f"a tool call's arguments are over {MAX_TOOL_REQUEST_BYTES // 1024} KiB"
            )
        try:
            body = await asyncio.wait_for(reader.readexactly(length), self._config.head_timeout_s)
        except TimeoutError:
            raise RequestError(400, "the request body did not arrive in time") from None
        status, answer = await gate.handle(head.method, head.target, body)
        reason = "" if status == 200 else "the tool gate refused; its JSON body says why"
        await respond(writer, status, answer, "application/json", reason)

    async def _mirror(self, path: str, writer: asyncio.StreamWriter) -> None:
        mirror = self._config.mirror
        if mirror is None or not self._policy.packages:
            raise RequestError(
                403,
                f"the package indexes are not reachable: this run's network is "
                f"'{self._policy.level.value}'"
                + ("" if self._config.ceiling.packages else " and the executor allows no more"),
            )
        if self._budget.spent.is_set():
            raise RequestError(403, self._spent_reason())
        self._log(f"package mirror {path[:200]}", refused=False)
        await mirror(path, _Metered(writer, self._budget))

    async def _dial(
        self, host: str, port: int, what: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to host:port if the run's policy allows it, else RequestError."""
        if self._budget.spent.is_set():
            raise RequestError(403, self._spent_reason())
        decision = self._policy.decide(host, port)
        if not decision.allowed:
            raise RequestError(403, decision.reason)
        loop = asyncio.get_running_loop()
        timeout = self._config.connect_timeout_s
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
            )
        except (OSError, TimeoutError):
            raise RequestError(502, f"{host} does not resolve") from None
        refusal: Decision | None = None
        for family, _, _, _, address in infos:
            ip = str(address[0])
            verdict = self._policy.decide_address(host, ip)
            if not verdict.allowed:
                refusal = verdict
                continue
            try:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(ip, port, family=family), timeout
                )
            except (OSError, TimeoutError):
                continue
            self._log(f"{what} ({ip})", refused=False)
            return connection
        if refusal is not None:
            raise RequestError(403, refusal.reason)
        raise RequestError(502, f"{host}:{port} did not accept a connection")

    def _spent_reason(self) -> str:
        return self._budget.why

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Bytes both ways until either side is done or the budget is spent."""
        budget = self._budget

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(_RELAY_CHUNK):
                    if not budget.take(len(chunk)):
                        self._log(self._spent_reason(), refused=True)
                        return
                    sink.write(chunk)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()

        try:
            directions = [
                asyncio.ensure_future(pipe(reader, upstream_writer)),
                asyncio.ensure_future(pipe(upstream_reader, writer)),
            ]
            spent = asyncio.ensure_future(budget.spent.wait())
            # The server's answer ending ends the exchange; the client's end only half-closes.
            await asyncio.wait([directions[1], spent], return_when=asyncio.FIRST_COMPLETED)
            for task in (*directions, spent):
                task.cancel()
            await asyncio.gather(*directions, spent, return_exceptions=True)
        finally:
            upstream_writer.close()


def egress_channel() -> tuple[socket.socket, int]:
    """The executor's end of the socket a sandbox sends its listener over, and the sandbox's
    end as a bare descriptor (close-on-exec: pass it on explicitly)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours, theirs.detach()


def receive_listener(ours: socket.socket) -> socket.socket:
    """The listening socket the sandbox sent (before its runner said it was ready), checked to
    be what egress_listen.py makes; SandboxFailure otherwise. Closes ours."""
    ours.setblocking(False)
    fds: list[int] = []
    try:
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
    except (BlockingIOError, OSError):
        pass
    finally:
        ours.close()
    failure = SandboxFailure(
        "the sandbox did not hand over its egress proxy socket (127.0.0.1:"
        f"{EGRESS_PORT} on its loopback)"
    )
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise failure
    listener = socket.socket(fileno=fds[0])
    if (
        listener.family != socket.AF_INET
        or listener.type != socket.SOCK_STREAM
        or not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        or listener.getsockname() != ("127.0.0.1", EGRESS_PORT)
    ):
        listener.close()
        raise failure
    return listener
