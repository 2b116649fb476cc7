"""The HTTP client against an executor app in this process (fake backend): one interface,
the executor's exceptions raised again on this side, paths that cannot escape their place."""

from typing import Any

import pytest

from executor.errors import (
    ExecutorUnreachable,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    SessionNotFound,
    Unauthorized,
    Unavailable,
)
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.outputs import OutputQuery
from tests.executor.clients.conftest import MakeServed

pytestmark = pytest.mark.anyio


async def test_session_lifecycle_through_the_http_client(make_served: MakeServed) -> None:
    served = await make_served()
    client = served.client()
    try:
        info = await client.open_session(Language.PYTHON, "alice")
        sid = info.session_id
        await client.execute(ExecuteRequest(code="x = 41", session_id=sid), "alice")
        result = await client.execute(ExecuteRequest(code="x + 1", session_id=sid), "alice")
        assert (result.value, result.session_id) == ("42", sid)
        uploaded = await client.upload_file(sid, "alice", "data/in.csv", b"a,b\n1,2\n")
        assert (uploaded.path, uploaded.size) == ("data/in.csv", 8)
        assert [f.path for f in await client.list_files(sid, "alice")] == ["data/in.csv"]
        assert await (await client.download_file(sid, "alice", "data/in.csv")).read() == b"a,b\n1,2\n"
        assert [s.session_id for s in await client.list_sessions("alice")] == [sid]
        for call in (
            client.get_session(sid, "mallory"),
            client.execute(ExecuteRequest(code="x", session_id=sid), "mallory"),
            client.close_session(sid, "mallory"),
            client.download_file(sid, "mallory", "data/in.csv"),
        ):
            with pytest.raises(SessionNotFound):
                await call
        closed = await client.close_session(sid, "alice")
        assert closed.closed and closed.session_id == sid
        with pytest.raises(SessionNotFound, match="ended"):
            await client.execute(ExecuteRequest(code="x", session_id=sid), "alice")
    finally:
        await client.aclose()


async def test_errors_come_back_as_the_executors_exceptions(make_served: MakeServed) -> None:
    served = await make_served(max_code_bytes=100, max_timeout_s=10, default_timeout_s=5)
    client = served.client()
    try:
        with pytest.raises(PayloadTooLarge, match="above the limit of 100 bytes"):
            await client.execute(ExecuteRequest(code="#" * 101), "u")
        with pytest.raises(InvalidRequest, match="above the limit of 10 s"):
            await client.execute(ExecuteRequest(code="1", timeout=11), "u")
        with pytest.raises(NotFound):
            await client.read_output(OutputQuery(execution_id="exe_nope"), "u")
    finally:
        await client.aclose()
    wrong = served.client("wrong-token")
    try:
        with pytest.raises(Unauthorized):
            await wrong.execute(ExecuteRequest(code="1"), "u")
    finally:
        await wrong.aclose()


async def test_streamed_output_reaches_the_callback_before_the_result(
    make_served: MakeServed,
) -> None:
    served = await make_served()
    client = served.client()
    seen: list[tuple[str, str]] = []

    async def on_output(stream: str, data: str) -> None:
        seen.append((stream, data))

    try:
        result = await client.execute(
            ExecuteRequest(code="print('a')\nprint('b', file=stderr)\nprint('c')"), "u", on_output
        )
    finally:
        await client.aclose()
    assert seen == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]
    assert (result.stdout, result.stderr) == ("a\nc\n", "b\n")


async def test_a_file_path_never_leaves_the_session_url(make_served: MakeServed) -> None:
    served = await make_served()
    seen: list[str] = []
    inner = served.switch.inner

    class Recorder(type(served.switch)):  # type: ignore[misc]
        async def handle_async_request(self, request: Any) -> Any:
            seen.append(request.url.path)
            return await inner.handle_async_request(request)

    recorder = Recorder.__new__(Recorder)
    recorder.inner, recorder.state = inner, "up"
    client = served.client()
    client._http._transport = recorder  # type: ignore[attr-defined]
    try:
        sid = (await client.open_session(Language.PYTHON, "u")).session_id
        for path in ("../../../metrics", "/etc/passwd", "a/../../health", "..", "./../x"):
            with pytest.raises(InvalidRequest, match="inside /home/user|relative to the workspace"):
                await client.download_file(sid, "u", path)
    finally:
        await client.aclose()
    assert seen == ["/sessions"], seen  # every download was refused before any request


async def test_session_ids_are_one_path_segment(make_served: MakeServed) -> None:
    served = await make_served()
    client = served.client()
    try:
        for session_id in ("..", ".", "../metrics", "x/../../health", "a%2F..", "ses_ok?x=1"):
            # Never another endpoint's answer (which would not parse as a session here).
            with pytest.raises(NotFound):
                await client.get_session(session_id, "u")
        with pytest.raises(InvalidRequest, match="empty"):
            await client.get_session("", "u")
    finally:
        await client.aclose()


async def test_a_dead_executor_is_unreachable_and_a_broken_one_unavailable(
    make_served: MakeServed,
) -> None:
    served = await make_served()
    client = served.client()
    try:
        served.switch.state = "down"
        with pytest.raises(ExecutorUnreachable, match="unreachable"):
            await client.execute(ExecutorRequest := ExecuteRequest(code="1"), "u")
        served.switch.state = "broken"
        with pytest.raises(Unavailable, match="failed during the request"):
            await client.execute(ExecutorRequest, "u")
    finally:
        await client.aclose()


async def test_any_user_name_crosses_the_wire_intact(make_served: MakeServed) -> None:
    served = await make_served()
    client = served.client()
    try:
        sessions = {}
        for user in ("jörg", "alice ", "alice", "名前", "a%2Fb", "x" * 256):
            info = await client.open_session(Language.PYTHON, user)
            sessions[user] = info.session_id
            await client.execute(ExecuteRequest(code=f"me = {user!r}", session_id=info.session_id), user)
        for user, sid in sessions.items():
            # Each name is its own user: "alice " is not "alice".
            assert [s.session_id for s in await client.list_sessions(user)] == [sid]
            result = await client.execute(ExecuteRequest(code="me", session_id=sid), user)
            assert result.value == repr(user)
    finally:
        await client.aclose()
