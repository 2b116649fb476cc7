"""The Executor: sessions, caps, reaping, files, budgets.

Tests that take make_any_executor run twice: over the fake backend (fast tier) and over real
sandboxes (slow tier); the others need what only a real sandbox has (bash, matplotlib,
processes, a real interpreter to interrupt).
"""

import asyncio

import pytest

from executor.errors import InvalidRequest, LimitExceeded, PayloadTooLarge, SessionNotFound
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.outputs import OutputQuery

pytestmark = pytest.mark.anyio


async def test_session_state_persists_and_belongs_to_its_user(make_any_executor) -> None:
    executor = await make_any_executor()
    client = executor
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


async def test_per_user_session_cap_answers_limit_exceeded(make_any_executor) -> None:
    executor = await make_any_executor(max_sessions_per_user=2)
    for _ in range(2):
        await executor.open_session(Language.PYTHON, "alice")
    with pytest.raises(LimitExceeded) as caught:
        await executor.open_session(Language.PYTHON, "alice")
    assert caught.value.retry_after is not None
    # Someone else is not affected by alice's cap.
    await executor.open_session(Language.PYTHON, "bob")


async def test_idle_sessions_are_reaped_with_a_clear_message(make_any_executor) -> None:
    executor = await make_any_executor(session_idle_ttl_s=0.3, reaper_interval_s=0.1)
    info = await executor.open_session(Language.PYTHON, "alice")
    for _ in range(50):  # the reaper runs every 0.1 s: gone within about 0.4 s
        if not len(executor.sessions):
            break
        await asyncio.sleep(0.05)
    with pytest.raises(SessionNotFound, match="expired after 0.3 s idle"):
        await executor.execute(ExecuteRequest(code="1", session_id=info.session_id), "alice")
    assert len(executor.sessions) == 0


async def test_files_of_the_request_are_written_before_the_run(make_any_executor) -> None:
    executor = await make_any_executor()
    result = await executor.execute(
        ExecuteRequest(code="print(open('in/data.txt').read())", files={"in/data.txt": "héllo"}),
        "u",
    )
    assert result.stdout == "héllo\n"


async def test_limits_of_the_request_are_checked(make_any_executor) -> None:
    executor = await make_any_executor(max_code_bytes=100, max_timeout_s=10, default_timeout_s=5)
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


async def test_a_cut_result_points_at_its_full_output_for_its_owner_only(
    make_any_executor,
) -> None:
    from executor.errors import NotFound

    executor = await make_any_executor()
    code = "for i in range(30000):\n    print(f'row {i}')"
    result = await executor.execute(ExecuteRequest(code=code, max_output_tokens=300), "alice")
    assert result.truncation is not None and result.truncation.stdout is not None
    assert result.truncation.stdout.original_lines == 30000
    assert result.truncation.stdout.kept_tokens is not None
    assert result.truncation.stdout.kept_tokens <= 300
    marker = next(line for line in result.stdout.splitlines() if line.startswith("[..."))
    assert f"read_output(execution_id={result.execution_id!r}, stream='stdout', offset=" in marker
    offset = int(marker.split("offset=")[1].split(")")[0])
    page = await executor.read_output(
        OutputQuery(execution_id=result.execution_id, offset=offset, limit=3), "alice"
    )
    assert page.total_lines == 30000
    assert page.text == f"row {offset}\nrow {offset + 1}\nrow {offset + 2}\n"
    with pytest.raises(NotFound):
        await executor.read_output(OutputQuery(execution_id=result.execution_id), "bob")


async def test_in_a_session_the_full_output_is_also_a_workspace_file(make_executor) -> None:
    executor = await make_executor()
    info = await executor.open_session(Language.PYTHON, "u")
    sid = info.session_id
    code = "for i in range(20000):\n    print('needle' if i == 12345 else f'hay {i}')"
    result = await executor.execute(
        ExecuteRequest(code=code, session_id=sid, max_output_tokens=200), "u"
    )
    path = f"/home/user/.outputs/{result.execution_id}.txt"
    assert path in result.stdout
    found = await executor.execute(
        ExecuteRequest(
            code=f"import subprocess\nprint(subprocess.run(['grep', '-n', 'needle', '{path}'],"
            " capture_output=True, text=True).stdout)",
            session_id=sid,
        ),
        "u",
    )
    assert found.stdout.strip() == "12346:needle"


async def test_budget_limits_and_encodings_are_checked(make_any_executor) -> None:
    executor = await make_any_executor(max_output_tokens=5000, min_output_tokens=100)
    with pytest.raises(InvalidRequest, match="above the limit of 5000"):
        await executor.execute(ExecuteRequest(code="1", max_output_tokens=6000), "u")
    with pytest.raises(InvalidRequest, match="below the minimum of 100"):
        await executor.execute(ExecuteRequest(code="1", max_output_tokens=50), "u")
    with pytest.raises(InvalidRequest, match="unknown token encoding"):
        await executor.execute(ExecuteRequest(code="1", token_encoding="llama"), "u")
    result = await executor.execute(ExecuteRequest(code="print('hi')", token_encoding="gpt-4"), "u")
    assert result.stdout == "hi\n"


async def test_markers_count_what_the_byte_capture_dropped_too(make_executor) -> None:
    executor = await make_executor()
    total = 400_000  # about 4.5 MB: far past the 1 MiB kept in memory
    code = f"for i in range({total}):\n    print(f'line {{i}}')"
    result = await executor.execute(ExecuteRequest(code=code, max_output_tokens=300), "u")
    marker = next(line for line in result.stdout.splitlines() if line.startswith("[..."))
    dropped = int(marker.split("[... ")[1].split(" lines")[0])
    head, tail = result.stdout.split(marker)
    shown = len(head.splitlines()) + len(tail.strip("\n").splitlines())
    assert abs(shown + dropped - total) <= 2, (shown, dropped)
    assert result.truncation is not None and result.truncation.stdout is not None
    assert result.truncation.stdout.original_lines == total
    offset = int(marker.split("offset=")[1].split(")")[0])
    page = await executor.read_output(
        OutputQuery(execution_id=result.execution_id, offset=offset, limit=1), "u"
    )
    assert page.text == f"line {offset}\n"
    assert page.total_lines == total


async def test_closing_a_session_during_runs_never_breaks_anything(make_executor) -> None:
    from executor.errors import SessionNotFound

    executor = await make_executor(pool_sizes={"python": 2})
    for _ in range(8):
        sid = (await executor.open_session(Language.PYTHON, "u")).session_id
        running = asyncio.create_task(
            executor.execute(
                ExecuteRequest(
                    code="import time\nprint('go', flush=True)\ntime.sleep(5)", session_id=sid
                ),
                "u",
            )
        )
        await asyncio.sleep(0.3)
        await executor.close_session(sid, "u")
        try:
            result = await running
        except SessionNotFound:
            continue
        assert result.error is not None and result.exit_code == 137, result
    # The pools (stateless, and the sessions' own when the zygote makes the stateless ones),
    # and one refilling.
    pools = 1 + (Language.PYTHON in executor.session_pools)
    assert executor.backend.health().live_sandboxes <= 2 * pools + 1


async def test_shutdown_ends_a_reaper_that_lost_its_cancel(make_fake_executor) -> None:
    # On Python 3.11, asyncio.wait_for drops a cancel that arrives as what it waits for
    # finishes (CPython gh-86296): a sandbox's close, inside the reaper, can do that. Here a
    # reap that swallows every cancel stands for it; shutdown must still end the reaper.
    executor = await make_fake_executor(reaper_interval_s=0.001)
    sessions = executor.sessions
    entered = asyncio.Event()

    async def reap_swallowing_cancels() -> int:
        entered.set()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            pass
        return 0

    sessions.reap = reap_swallowing_cancels
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(sessions.close_all(), 5)
