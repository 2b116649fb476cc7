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

The sentinel ends a run's output on each stream: its id is random, so output cannot end another
run's. Whatever comes back is hostile (the user's code shares the runner's process and may write
anything to fd 4, or print a sentinel of its own): a control line is bounded, and a message is
checked here before anything else reads it.
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
# A done message carries the run's images; a longer line is not the runner's.
CONTROL_LIMIT = 64 * 1024 * 1024


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
        code_bytes = code.replace("\x00", "").encode()
        env_bytes = "".join(
            f"export {name}={shlex.quote(value)}\n" for name, value in env.items()
        ).encode()
        header = f"{run_id} {len(code_bytes)} {len(env_bytes)}\n".encode()
        return header + code_bytes + env_bytes
    message = {"op": "run", "id": run_id, "code": code, "env": dict(env)}
    return (json.dumps(message) + "\n").encode()


def control_reader() -> asyncio.StreamReader:
    """A reader for a runner's control output, its lines bounded by CONTROL_LIMIT."""
    return asyncio.StreamReader(limit=CONTROL_LIMIT)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One control line (b"" at EOF); ProtocolError when it is longer than CONTROL_LIMIT."""
    try:
        return await reader.readline()
    except ValueError as exc:  # how readline reports a line beyond the reader's limit
        raise ProtocolError(
            f"a runner sent a control line above {CONTROL_LIMIT >> 20} MiB, so its sandbox "
            "cannot be trusted; run the code again in a fresh sandbox"
        ) from exc


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
    """The done message of run_id in a control line, or None for any other message.

    Raises ProtocolError when the line is not a JSON object, or is run_id's done with fields
    the protocol does not allow.
    """
    message = _message(line)
    if message.get("op") != "done" or message.get("id") != run_id:
        return None
    exit_code = message.get("exit_code", 0)
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        raise ProtocolError(f"a runner's done has exit_code {exit_code!r}, not an integer")
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
