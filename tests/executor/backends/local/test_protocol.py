"""The runner wire protocol, the executor's side: encoding runs, and checking what comes back."""

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator

import pytest

from executor.backends.local.protocol import (
    CONTROL_LIMIT,
    ControlChannel,
    Done,
    ProtocolError,
    encode_run,
    is_ready,
    new_run_id,
    parse_done,
    sentinel,
)
from schemas.execution import ExecutionError, Image
from schemas.languages import Language

RUN = "0123456789abcdef"


def done_line(**fields: object) -> bytes:
    return (json.dumps({"op": "done", "id": RUN, **fields}) + "\n").encode()


def test_run_ids_are_fresh_and_safe_in_a_bash_header() -> None:
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.isalnum() for i in ids)
    assert sentinel(RUN) == b"\x1eCE-END:0123456789abcdef\x1f\n"


@pytest.mark.parametrize("language", [Language.PYTHON, Language.C, Language.JAVASCRIPT])
def test_json_runners_get_one_line(language: Language) -> None:
    encoded = encode_run(language, RUN, "print('a\\nb')\n\u00e9", {"A": "1 2"})
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert json.loads(encoded) == {
        "op": "run",
        "id": RUN,
        "code": "print('a\\nb')\n\u00e9",
        "env": {"A": "1 2"},
    }


def test_bash_gets_a_header_the_code_and_an_env_script() -> None:
    code = "echo \u00e9\x00 done\n"
    encoded = encode_run(Language.BASH, RUN, code, {"A": "it's $HOME", "B": ""})
    header, _, rest = encoded.partition(b"\n")
    run_id, code_bytes, env_bytes = header.decode().split(" ")
    assert run_id == RUN
    assert rest[: int(code_bytes)].decode() == "echo \u00e9 done\n"  # NULs cannot pass bash
    assert rest[int(code_bytes) :].decode() == "export A='it'\"'\"'s $HOME'\nexport B=''\n"
    assert len(rest) == int(code_bytes) + int(env_bytes)


def test_bash_encoding_survives_text_no_encoder_takes() -> None:
    encoded = encode_run(Language.BASH, RUN, "echo \ud800", {"A": "\udfff"})
    assert b"echo ?" in encoded and b"export A='?'" in encoded


def test_ready() -> None:
    assert is_ready(b'{"op":"ready"}\n')
    assert is_ready(b'{"op": "ready"}\n')
    for line in (b"", b"ready\n", b'{"op":"done"}\n', b'["op", "ready"]\n', b'{"op":'):
        assert not is_ready(line)


def test_done_parsed_into_typed_fields() -> None:
    line = done_line(
        exit_code=1,
        error={"name": "ZeroDivisionError", "value": "division by zero", "traceback": "tb"},
        value="42",
        images=[{"format": "png", "data": "aGk="}],
    )
    assert parse_done(line, RUN) == Done(
        exit_code=1,
        error=ExecutionError(name="ZeroDivisionError", value="division by zero", traceback="tb"),
        value="42",
        images=[Image(data="aGk=")],
    )
    # What the bash runner sends, and the defaults of a minimal done.
    assert parse_done(done_line(exit_code=3, error=None, value=None, images=[]), RUN) == Done(
        3, None, None, []
    )
    assert parse_done(done_line(), RUN) == Done(0, None, None, [])


def test_another_runs_done_is_skipped() -> None:
    # A late done of an earlier run, or one the code made up with another id: not this run's.
    assert parse_done(done_line(id="someone-else", exit_code="garbage"), RUN) is None


@pytest.mark.parametrize(
    "line",
    [b'{"op":"ready"}\n', b'{"op":"done"}\n', b'{"op":"done","id":7}\n', b'{"id":"x"}\n'],
)
def test_anything_but_a_done_during_a_run_breaks_the_protocol(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_done(line, RUN)


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'"done"\n',
        b"null\n",
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        done_line(exit_code="0"),
        done_line(exit_code=1.5),
        done_line(exit_code=True),
        done_line(exit_code=2**31),
        done_line(exit_code=-(2**31) - 1),
        b'{"op":"done","id":"' + RUN.encode() + b'","exit_code":' + b"9" * 5000 + b"}\n",
        done_line(value=42),
        done_line(value={"x": 1}),
        done_line(error={"name": "X"}),
        done_line(error="boom"),
        done_line(images={"format": "png"}),
        done_line(images=[{"format": "gif", "data": ""}]),
        done_line(images=["aGk="]),
    ],
)
def test_malformed_messages_raise_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_done(line, RUN)


class FakeReadTransport(asyncio.ReadTransport):
    """Records whether the channel reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.closed = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@pytest.mark.anyio
async def test_control_channel_reads_only_while_a_line_is_awaited() -> None:
    channel = ControlChannel(limit=64)
    transport = FakeReadTransport()
    channel.connection_made(transport)
    assert not transport.reading  # nothing is read before a run waits for its done
    task = asyncio.create_task(channel.readline())
    await asyncio.sleep(0)
    assert transport.reading
    channel.data_received(b'{"op":')
    assert transport.reading  # half a line: go on
    channel.data_received(b'"ready"}\n{"op"')
    assert not transport.reading  # a whole line: stop until the next is awaited
    assert is_ready(await task)
    assert not transport.reading
    channel.close()
    assert transport.closed
    assert await channel.readline() == b""


@pytest.mark.anyio
async def test_control_lines_are_bounded() -> None:
    channel = ControlChannel(limit=64)
    transport = FakeReadTransport()
    channel.connection_made(transport)
    task = asyncio.create_task(channel.readline())
    await asyncio.sleep(0)
    channel.data_received(b"x" * 100)
    assert not transport.reading  # over the limit: nothing more is read, nothing is kept
    with pytest.raises(ProtocolError):
        await task
    with pytest.raises(ProtocolError):  # broken for good
        await channel.readline()


@pytest.mark.anyio
async def test_a_line_cut_by_eof_is_no_message() -> None:
    channel = ControlChannel(limit=64)
    channel.connection_made(FakeReadTransport())
    channel.data_received(b'{"op":"ready"}\n{"op":"do')
    channel.eof_received()
    assert is_ready(await channel.readline())
    assert await channel.readline() == b""


class PipeWriter(threading.Thread):
    """Writes `total` bytes without a newline to a pipe, as code in a sandbox could to fd 4."""

    def __init__(self, fd: int, total: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.total = total
        self.written = 0

    def run(self) -> None:
        chunk = b"x" * (1 << 20)
        try:
            while self.written < self.total:
                self.written += os.write(self.fd, chunk[: self.total - self.written])
        except OSError:
            pass  # the reader is gone
        finally:
            os.close(self.fd)


@pytest.fixture
async def pipe_channel() -> AsyncIterator[tuple[ControlChannel, int]]:
    read_fd, write_fd = os.pipe()
    channel = ControlChannel()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: channel, os.fdopen(read_fd, "rb", buffering=0))
    yield channel, write_fd
    channel.close()


@pytest.mark.anyio
async def test_a_real_pipe_is_not_read_between_runs_and_a_long_line_is_dropped(
    pipe_channel: tuple[ControlChannel, int],
) -> None:
    channel, write_fd = pipe_channel
    writer = PipeWriter(write_fd, 127 * 1024 * 1024)
    writer.start()
    await asyncio.sleep(0.3)
    # Unread, the pipe fills and its writer blocks: nothing reaches the executor's memory.
    assert writer.written <= 1024 * 1024
    assert writer.is_alive()
    with pytest.raises(ProtocolError):
        await channel.readline()
    # What was held of the line was at most the limit and one read; it is let go.
    assert len(channel._buffer) == 0
    assert writer.written <= CONTROL_LIMIT + 2 * 1024 * 1024
