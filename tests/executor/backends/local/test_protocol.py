"""The runner wire protocol, the executor's side: encoding runs, and checking what comes back."""

import asyncio
import json

import pytest

from executor.backends.local.protocol import (
    Done,
    ProtocolError,
    encode_run,
    is_ready,
    new_run_id,
    parse_done,
    read_line,
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


def test_other_messages_are_not_this_runs_done() -> None:
    assert parse_done(b'{"op":"ready"}\n', RUN) is None
    assert parse_done(done_line(id="someone-else", exit_code="garbage"), RUN) is None
    assert parse_done(b'{"op":"done"}\n', RUN) is None


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


@pytest.mark.anyio
async def test_control_lines_are_bounded() -> None:
    reader = asyncio.StreamReader(limit=64)
    reader.feed_data(b"x" * 100 + b"\n" + b'{"op":"ready"}\n')
    reader.feed_eof()
    with pytest.raises(ProtocolError):
        await read_line(reader)
    assert is_ready(await read_line(reader))
    assert await read_line(reader) == b""
