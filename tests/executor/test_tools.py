"""The tool declarations: one validation, descriptions from the limits, calls that never raise.

(test_tools_fuzz.py fuzzes the arguments, in the slow tier.)
"""

from typing import Any

import pytest

from executor.config import ExecutorSettings
from executor.tools import Call, ToolSet

TOOLS = ToolSet()


def test_descriptions_follow_the_limits_in_force() -> None:
    default = ToolSet()
    run_code = default.get("run_code")
    assert "1 GiB of memory" in default.describe(run_code)
    assert default.input_schema(run_code)["properties"]["timeout"]["description"] == (
        "Seconds (default 30, max 300)."
    )
    assert "Output over 2000 tokens is cut" in default.describe(run_code)
    assert "15 minutes idle" in default.describe(default.get("open_session"))
    operator = ExecutorSettings(
        default_timeout_s=10,
        max_timeout_s=60,
        memory_limit_mb=512,
        default_output_tokens=800,
        session_idle_ttl_s=3600,
        _env_file=None,
    )
    tuned = ToolSet(operator.limits())
    text = tuned.describe(tuned.get("run_code"))
    assert "512 MiB of memory" in text
    assert "Output over 800 tokens" in text
    assert "1 hour idle" in tuned.describe(tuned.get("open_session"))
    schema = tuned.input_schema(tuned.get("run_code"))
    assert schema["properties"]["timeout"]["description"] == (
        "Seconds (default 10, max 60)."
    )


def test_front_ends_need_no_tool_names() -> None:
    hints = {tool.name: tool.hints for tool in TOOLS}
    assert list(hints) == ["run_code", "open_session", "close_session", "read_output"]
    assert hints["close_session"].destructive and hints["close_session"].idempotent
    assert hints["read_output"].read_only
    assert not any(h.open_world for h in hints.values())


def test_input_schemas_are_self_contained_and_short() -> None:
    import json

    for tool in TOOLS:
        schema = TOOLS.input_schema(tool)
        text = json.dumps(schema)
        for word in ("$ref", "$defs", '"title"', '"default"', '"null"'):
            assert word not in text, (tool.name, word)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
    run_code = TOOLS.input_schema(TOOLS.get("run_code"))
    assert run_code["required"] == ["code"]
    assert run_code["properties"]["language"]["enum"] == ["python", "javascript", "bash", "c"]


@pytest.mark.anyio
async def test_call_never_raises_for_garbage(make_fake_executor: Any) -> None:
    client = await make_fake_executor(pool_sizes={"python": 0})
    for arguments in (
        "",
        "{",
        "null",
        "[]",
        '{"code": 5}',
        '{"code": "1", "timeout": -1}',
        '{"code": "1", "files": [{"path": "../x", "content": ""}]}',
        '{"session_id": 3}',
        "\x00",
    ):
        for name in TOOLS.tools:
            outcome = await TOOLS.call(Call(client, "u"), name, arguments)
            if name == "open_session" and arguments in ("", "null"):
                assert not outcome.is_error  # no arguments are needed to open a session
                assert outcome.effect is not None and outcome.effect.opened
                continue
            assert outcome.is_error and outcome.text.startswith("error: "), (name, arguments)


@pytest.mark.anyio
async def test_outcomes_carry_text_structure_images_and_session_effects(
    make_fake_executor: Any,
) -> None:
    client = await make_fake_executor()
    call = Call(client, "u")
    opened = await TOOLS.call(call, "open_session", {})
    sid = opened.structured["session_id"]  # type: ignore[index]
    assert opened.effect is not None and opened.effect.opened == sid
    assert f"session_id: {sid}" in opened.text
    code = "print('hi')\nimage('iVBORw0KGgo=')\n6 * 7"
    ran = await TOOLS.call(call, "run_code", {"code": code, "session_id": sid})
    assert ran.text == "exit_code: 0\nstdout:\nhi\nvalue: 42\nimages: 1 PNG (returned separately)"
    assert [i.data for i in ran.images] == ["iVBORw0KGgo="] and not ran.is_error
    failed = await TOOLS.call(call, "run_code", {"code": "1/0"})
    assert failed.is_error and "ZeroDivisionError" in failed.text
    closed = await TOOLS.call(call, "close_session", {"session_id": sid})
    assert closed.text == f"session {sid} closed"
    assert closed.effect is not None and closed.effect.closed == sid
