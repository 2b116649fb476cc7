"""Exceptions of the executor: "our service failed" or "the request cannot be served".

A failure of the user's code is never an exception: it is a value in ExecuteResult.
Each exception carries the HTTP status it becomes at the edge, and the HTTP client turns
statuses back into the same classes, so callers see one tree whichever client they hold.

    ExecutorError
    ├── InvalidRequest          422  bad arguments (timeout above the limit, wrong language, ...)
    ├── PayloadTooLarge         413  code or a file over its size limit
    ├── Unauthorized            401  missing or wrong internal token
    ├── Forbidden               403  not allowed whoever asks (another site's page on /mcp)
    ├── NotFound                404
    │   ├── SessionNotFound          unknown, expired or someone else's session
    │   └── FileNotFound
    ├── SessionLost             410  the executor that held the session went away
    ├── LimitExceeded           429  a cap: runs in progress per user, sessions per user or in all
    ├── Unavailable             503  nothing to run on right now; retry later
    │   ├── PoolExhausted            no warm sandbox within the wait
    │   └── ExecutorUnreachable      the executor never accepted the request (safe to retry)
    └── SandboxFailure          500  a sandbox could not start or broke down
        └── ProtocolError            (backends.local.protocol) a runner broke its protocol

Two more live with their layer: ToolCallError (executor.tools, an InvalidRequest: the model
called a tool wrongly) and ProtocolError.
"""

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class ExecutorError(Exception):
    """Root of every executor exception."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "executor_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        # Messages quote what callers sent: keep them encodable, whatever that was.
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidRequest(ExecutorError):
    """The request cannot be run as given; the message says what to change."""

    status_code = 422
    code = "invalid_request"


class PayloadTooLarge(ExecutorError):
    """Code or a file is larger than allowed."""

    status_code = 413
    code = "payload_too_large"


class Unauthorized(ExecutorError):
    """The caller did not prove it may use the executor."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ExecutorError):
    """The caller may not do this, whoever they are (a browser page of another origin)."""

    status_code = 403
    code = "forbidden"


class NotFound(ExecutorError):
    """Something named in the request does not exist (for this caller)."""

    status_code = 404
    code = "not_found"


class SessionNotFound(NotFound):
    """Unknown, expired or closed session, or one that belongs to another user."""

    code = "session_not_found"


class FileNotFound(NotFound):
    """No such file in the session's workspace."""

    code = "file_not_found"


class SessionLost(ExecutorError):
    """The session's executor died or was removed: its state is gone."""

    status_code = 410
    code = "session_lost"


class LimitExceeded(ExecutorError):
    """A per-user or global cap was reached."""

    status_code = 429
    code = "limit_exceeded"


class Unavailable(ExecutorError):
    """The executor cannot take the request now; retry after the given delay."""

    status_code = 503
    code = "unavailable"


class PoolExhausted(Unavailable):
    """No warm sandbox became free within the wait."""

    code = "pool_exhausted"


class ExecutorUnreachable(Unavailable):
    """A connection to the executor could not be made: the request never reached it."""

    code = "executor_unreachable"


class SandboxFailure(ExecutorError):
    """A sandbox could not be started or stopped answering."""

    status_code = 500
    code = "sandbox_failure"


def _descendants(cls: type[ExecutorError]) -> list[type[ExecutorError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _descendants(sub)
    return found


ERRORS_BY_CODE: dict[str, type[ExecutorError]] = {
    cls.code: cls for cls in reversed(_descendants(ExecutorError))
}
"""The class of each error code (the most general class that has it)."""

ERRORS_BY_STATUS: dict[int, type[ExecutorError]] = {
    cls.status_code: cls for cls in ExecutorError.__subclasses__()
}
"""The class an HTTP status stands for, when an answer carries no error code of ours."""


def printable(text: str, limit: int = 2000) -> str:
    """Text safe to put in a message: valid UTF-8 (lone surrogates escaped), at most limit."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[: limit // 2]}[...]{text[-limit // 4 :]}"


def validation_text(errors: Iterable[Mapping[str, Any]], default_where: str = "") -> str:
    """Pydantic validation errors as one readable line: `field: problem; field: problem`."""
    parts = []
    for error in errors:
        loc = [printable(str(p), 80) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc) or default_where
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return printable("; ".join(parts))
