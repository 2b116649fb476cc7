"""The runner wire protocol: how the executor and the runner inside a sandbox talk.

The runners (runners/python_runner.py, runners/node_runner.js, runners/bash_runner.sh) speak it;
this module is its one description, and the executor's side of it.

Descriptors of a runner, as the launcher sets them up before bubblewrap:
    fd 0        /dev/null
    fd 1, 2     pipes the executor reads: the runs' stdout and stderr, one after the other
    fd 3        control input (CONTROL_IN_FD): runs, from the executor
    fd 4        control output (CONTROL_OUT_FD): one JSON object a line, to the executor

The conversation:
    runner -> {"op": "ready"}                          once, when it can take a run
    host   -> a run, encoded by encode_run
    runner    runs it, writes sentinel(ID) to fd 1 and to fd 2, then
           -> {"op": "done", "id": ID, "exit_code": N, "error": null | {name, value, traceback},
               "value": null | DISPLAY, "images": [{"format": "png", "data": BASE64}]}
SIGINT to the runner interrupts the run in progress (Python's KeyboardInterrupt); while idle the
runner ignores it. The bash runner gets none: a bash run that times out is killed with the
sandbox. EOF on fd 3 ends the runner with status 0.

A run on the wire:
    python, c, javascript   one JSON line {"op": "run", "id": ID, "code": SOURCE, "env": {...}}
    bash                    a header line "ID CODE_BYTES ENV_BYTES", then the code (NULs
                            removed) and an env script of "export NAME=QUOTED" lines, of exactly
                            those sizes: bash reads them with `read -N` and parses no JSON

Sizes. A control line is at most CONTROL_LIMIT (8 MiB) bytes, newline included; the runners
keep a done under it by cutting what they send, as JSON text (escapes counted):
    error.name                  ERROR_NAME_LIMIT (1 KiB)
    error.value, .traceback     TEXT_LIMIT (256 KiB) each, cut in the middle with a note
    value                       100,000 characters (at most 1.2 MB as JSON)
    images                      IMAGES_LIMIT (6 MiB) of base64 in all; figures beyond it are
                                dropped, and the runner says so on the run's stderr
    exit_code                   an integer of 32 bits (Python's sys.exit(N) gives N modulo
                                256, as a process's exit does)
The sum stays under the limit (1 KiB + 2 x 256 KiB + 1.2 MB + 6 MiB); a runner that still finds
its done too big drops the figures, then sends an error instead.

The sentinel ends a run's output on each stream: its id is random, so output cannot end another
run's. Whatever comes back is hostile: the user's code shares the runner's process and may write
anything to fd 4, or print a sentinel of its own. So:
- the executor reads the control output only while a run waits for its done: between runs what
  is written stays in the pipe (whose writer blocks once it is full), and no more than one line
  of CONTROL_LIMIT, plus one read, is ever held (ControlChannel);
- during a run, a line over the limit, a line that is not a JSON object, a message other than a
  done, or this run's done with fields the protocol does not allow is a broken protocol
  (ProtocolError): the run fails and its sandbox is killed (a session's restarted);
- a done with another id is skipped: a late one of an earlier run, or one the code made up;
- a done with this run's id that parses ends the run, even when the code forged it (Python can
  find the id): what it says is then the code's own business, and the runner's real done,
  coming later, has an id no later run has.
"""

import asyncio
import json
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from executor.errors import SandboxFailure
from schemas.execution import ExecutionError, Image
from schemas.languages import Language

CONTROL_IN_FD = 3
CONTROL_OUT_FD = 4
# What the executor holds of one control line at most; the runners' caps keep a done below it.
CONTROL_LIMIT = 8 * 1024 * 1024
ERROR_NAME_LIMIT = 1024
TEXT_LIMIT = 256 * 1024
IMAGES_LIMIT = 6 * 1024 * 1024
_EXIT_CODE_RANGE = range(-(2**31), 2**31)


class ProtocolError(SandboxFailure):
    """A runner sent what the protocol does not allow: a broken runner or forged by the code."""


@dataclass(frozen=True)
class Done:
    """A runner's report that a run ended, checked field by field."""

    exit_code: int
    error: ExecutionError | None
    value: str | None
    images: list[Image]


def new_run_id() -> str:
    """A fresh run id: unguessable, and free of the spaces and quotes the bash header splits on."""
    return secrets.token_hex(8)


def sentinel(run_id: str) -> bytes:
    """What the runner writes to stdout and to stderr after a run's output."""
    return f"\x1eCE-END:{run_id}\x1f\n".encode()


def encode_run(language: Language, run_id: str, code: str, env: Mapping[str, str]) -> bytes:
    """A run as the language's runner reads it from its control input."""
    if language is Language.BASH:
        # "replace": a lone surrogate has no UTF-8 form (the JSON runners get it escaped).
        code_bytes = code.replace("\x00", "").encode(errors="replace")
        env_bytes = "".join(
            f"export {name}={shlex.quote(value)}\n" for name, value in env.items()
        ).encode(errors="replace")
        header = f"{run_id} {len(code_bytes)} {len(env_bytes)}\n".encode()
        return header + code_bytes + env_bytes
    message = {"op": "run", "id": run_id, "code": code, "env": dict(env)}
    return (json.dumps(message) + "\n").encode()


class ControlChannel(asyncio.Protocol):
    """The executor's end of a runner's control output: whole lines, read only when awaited.

    The pipe is read only while readline() waits: between runs nothing a runner writes reaches
    the executor. At most `limit` bytes of a line, plus one read of the pipe, are held; a
    longer line breaks the channel for good (the sandbox is not to be trusted any more).
    """

    def __init__(self, limit: int = CONTROL_LIMIT) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._transport: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._overflow = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start paused: nothing is read before someone waits for a line."""
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport
        transport.pause_reading()
        # Python 3.11 as Debian 12 ships it (3.11.2) starts reading a pipe right after
        # connection_made, whatever it asked: pause again once that has happened.
        asyncio.get_running_loop().call_soon(self._pause_unless_awaited)

    def _pause_unless_awaited(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._waiter is not None:
            return
        transport.resume_reading()  # resets the transport's own idea of what it does
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        """Hold what came; stop reading once a line is whole, or too long."""
        self._buffer += data
        if len(self._buffer) > self._limit and self._buffer.find(b"\n", 0, self._limit) < 0:
            self._overflow = True
            self._buffer.clear()  # nothing of it is ever read: hold none of it
        if self._overflow or b"\n" in data:
            self._pause()
            self._wake()

    def eof_received(self) -> bool:
        """The runner closed its control output (it exited, or every copy was closed)."""
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The pipe is closed: the whole lines held can still be read, then EOF."""
        self._eof = True
        self._wake()

    async def readline(self) -> bytes:
        """The next whole line, newline included (b"" at EOF); ProtocolError when too long."""
        while True:
            end = self._buffer.find(b"\n", 0, self._limit)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if self._overflow or len(self._buffer) >= self._limit:
                self._overflow = True
                self._buffer.clear()
                raise ProtocolError(
                    f"a runner sent a control line above {self._limit >> 20} MiB, so its "
                    "sandbox cannot be trusted; run the code again in a fresh sandbox"
                )
            if self._eof:
                # A line cut short by the runner's end is no message.
                self._buffer.clear()
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            if self._transport is not None:
                self._transport.resume_reading()
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._pause()

    def close(self) -> None:
        """Stop for good (the sandbox is being killed): a waiting readline() gets EOF."""
        self._eof = True
        self._buffer.clear()
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _pause(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _message(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise ProtocolError(f"a runner sent a control line that is not JSON: {exc!r}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"a runner sent a JSON {type(message).__name__}, not an object")
    return message


def is_ready(line: bytes) -> bool:
    """Whether a control line is the runner's ready message."""
    try:
        return _message(line).get("op") == "ready"
    except ProtocolError:
        return False


def parse_done(line: bytes, run_id: str) -> Done | None:
    """The done message of run_id in a control line read during that run.

    None for the done of another run (late, or made up: not this run's business). ProtocolError
    for anything else: a line that is not a JSON object, another message, a done without an id,
    or run_id's done with fields the protocol does not allow.
    """
    message = _message(line)
    op = message.get("op")
    if op != "done":
        raise ProtocolError(f"a runner sent {str(op)[:40]!r} during a run; only a done may come")
    done_id = message.get("id")
    if not isinstance(done_id, str):
        raise ProtocolError("a runner sent a done without a string id")
    if done_id != run_id:
        return None
    exit_code = message.get("exit_code", 0)
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        shown = str(exit_code)[:40]
        raise ProtocolError(f"a runner's done has exit_code {shown!r}, not an integer")
    if exit_code not in _EXIT_CODE_RANGE:
        raise ProtocolError("a runner's done has an exit_code beyond 32 bits")
    value = message.get("value")
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"a runner's done has a {type(value).__name__} value, not a string")
    raw_images = message.get("images") or []
    if not isinstance(raw_images, list):
        raise ProtocolError("a runner's done has images that are not a list")
    try:
        error = ExecutionError.model_validate(message["error"]) if message.get("error") else None
        images = [Image.model_validate(image) for image in raw_images]
    except ValidationError as exc:
        raise ProtocolError(f"a runner's done is malformed: {exc}") from exc
    return Done(exit_code=exit_code, error=error, value=value, images=images)
