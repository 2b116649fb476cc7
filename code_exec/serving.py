"""How every code-exec server listens: uvicorn with the limits an open port needs.

- The standard asyncio loop, not uvloop: sandboxes' control pipes are handed to the loop as
  file objects, which uvloop closes behind their back (seen as EBADF under load).
- The soft limit on open files raised to the hard one: each connection is a file.
- A deadline for a request's headers: uvicorn waits forever for a connection that sends
  nothing (or a byte now and then), so a caller with no token could hold every file
  descriptor. A connection that has not finished its headers within header_timeout_s of
  connecting (or of its last response) is closed. Per-address connection limits are the job
  of the proxy in front (see the README's production notes).
"""

import asyncio
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one (at most MAX_OPEN_FILES)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def deadline_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, closing connections slow to send a request's headers."""

    class HeaderDeadline(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def serve(
    app: Any,
    host: str,
    port: int,
    log_level: str,
    header_timeout_s: float,
    unix_socket: str | None = None,
) -> None:
    """Run app with uvicorn until it is stopped (on a Unix socket instead, when given one)."""
    files = raise_open_files_limit()
    log.debug("open files limit %s", files)
    uvicorn.run(
        app,
        host=host,
        port=port,
        uds=unix_socket,
        log_level=log_level,
        loop="asyncio",
        http=deadline_protocol(header_timeout_s),
    )
