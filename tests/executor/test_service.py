"""The Executor in process: sessions, caps, reaping, files, and the in-process client."""

import asyncio

import pytest

from executor.client import InProcessClient
from executor.errors import InvalidRequest, LimitExceeded, PayloadTooLarge, SessionNotFound
from schemas.execution import ExecuteRequest
from schemas.languages import Language

pytestmark = pytest.mark.anyio


async def test_session_state_persists_and_belongs_to_its_user(make_executor) -> None:
    executor = await make_executor()
    client = InProcessClient(executor)
    info = await client.open_session(Language.PYTHON, "alice")
    run = lambda code, user="alice": client.execute(  # noqa: E731
        ExecuteRequest(code=code, session_id=info.session_id), user
    )
    await run("import math\ndef area(r):\n    return math.pi * r * r")
    result = await run("round(area(2), 3)")
    assert result.value == "12.566"
    with pytest.raises(SessionNotFound):
        await run("1", user="bob")
    assert (await client.get_session(info.session_id, "alice")).runs == 2


async def test_per_user_session_cap_answers_limit_exceeded(make_executor) -> None:
    executor = await make_executor(max_sessions_per_user=2)
    for _ in range(2):
        await executor.open_session(Language.PYTHON, "alice")
    with pytest.raises(LimitExceeded) as caught:
        await executor.open_session(Language.PYTHON, "alice")
    assert caught.value.retry_after is not None
    # Someone else is not affected by alice's cap.
    await executor.open_session(Language.PYTHON, "bob")


async def test_idle_sessions_are_reaped_with_a_clear_message(make_executor) -> None:
    executor = await make_executor(session_idle_ttl_s=0.3, reaper_interval_s=0.1)
    info = await executor.open_session(Language.PYTHON, "alice")
    await asyncio.sleep(1.0)
    with pytest.raises(SessionNotFound, match="expired after 0.3 s idle"):
        await executor.execute(ExecuteRequest(code="1", session_id=info.session_id), "alice")
    assert len(executor.sessions) == 0


async def test_files_of_the_request_are_written_before_the_run(make_executor) -> None:
    executor = await make_executor()
    result = await executor.execute(
        ExecuteRequest(code="print(open('in/data.txt').read())", files={"in/data.txt": "héllo"}),
        "u",
    )
    assert result.stdout == "héllo\n"


async def test_limits_of_the_request_are_checked(make_executor) -> None:
    executor = await make_executor(max_code_bytes=100, max_timeout_s=10, default_timeout_s=5)
    with pytest.raises(PayloadTooLarge, match="above the limit of 100 bytes"):
        await executor.execute(ExecuteRequest(code="#" * 101), "u")
    with pytest.raises(InvalidRequest, match="above the limit of 10 s"):
        await executor.execute(ExecuteRequest(code="1", timeout=11), "u")


async def test_language_defaults_to_the_sessions(make_executor) -> None:
    executor = await make_executor()
    info = await executor.open_session(Language.BASH, "u")
    result = await executor.execute(
        ExecuteRequest(code="cd /tmp && export GREETING=hi", session_id=info.session_id), "u"
    )
    assert result.language is Language.BASH
    result = await executor.execute(
        ExecuteRequest(code='echo "$GREETING from $(pwd)"', session_id=info.session_id), "u"
    )
    assert result.stdout == "hi from /tmp\n"


async def test_a_session_timeout_interrupts_and_keeps_state(make_executor) -> None:
    executor = await make_executor()
    info = await executor.open_session(Language.PYTHON, "u")
    sid = info.session_id
    await executor.execute(ExecuteRequest(code="kept = 'yes'", session_id=sid), "u")
    result = await executor.execute(
        ExecuteRequest(code="while True:\n    pass", session_id=sid, timeout=1), "u"
    )
    assert result.timed_out and result.exit_code == 124
    assert result.error is not None and result.error.name == "TimeoutError"
    assert "state was kept" in result.error.value
    assert not result.state_lost
    assert (await executor.execute(ExecuteRequest(code="kept", session_id=sid), "u")).value == (
        "'yes'"
    )


async def test_a_matplotlib_figure_comes_back_as_png(make_executor) -> None:
    executor = await make_executor()
    result = await executor.execute(
        ExecuteRequest(
            code="import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('t')\nplt.show()"
        ),
        "u",
    )
    assert result.error is None, result.error
    assert len(result.images) == 1
    import base64

    assert base64.b64decode(result.images[0].data).startswith(b"\x89PNG\r\n\x1a\n")


async def test_close_leaves_no_sandbox_process(make_executor) -> None:
    executor = await make_executor()
    info = await executor.open_session(Language.PYTHON, "u")
    session = executor.sessions.get(info.session_id, "u")
    pids = session.sandbox.process_ids()  # type: ignore[attr-defined]
    assert pids
    await executor.close_session(info.session_id, "u")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().split()[2] == "Z", f"process {pid} survived its session"
        except FileNotFoundError:
            pass
