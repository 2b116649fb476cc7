"""The routing client over executor apps in this process (fake backend): spread, affinity,
an executor that dies (before or during a request), and its return. The same story with real
processes and SIGKILL is in test_routing.py (slow)."""

import asyncio

import pytest

from executor.clients.routing import SEPARATOR, RoutingClient, route_key
from executor.errors import SessionLost, SessionNotFound, Unavailable
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from schemas.outputs import OutputQuery
from tests.executor.clients.conftest import InProcessExecutor, MakeServed

pytestmark = pytest.mark.anyio


def _runs(served: InProcessExecutor) -> int:
    return sum(served.executor.metrics.runs.values())


async def _router(*executors: InProcessExecutor) -> RoutingClient:
    router = RoutingClient({e.url: e.client() for e in executors})
    await router.check_health()
    return router


async def test_runs_spread_sessions_stay_and_a_dead_executor_loses_only_its_own(
    make_served: MakeServed,
) -> None:
    a, b = await make_served(), await make_served()
    router = await _router(a, b)
    try:
        results = await asyncio.gather(
            *(router.execute(ExecuteRequest(code=f"print({i})"), f"user{i}") for i in range(12))
        )
        assert sorted(r.stdout for r in results) == sorted(f"{i}\n" for i in range(12))
        assert _runs(a) > 0 and _runs(b) > 0, (_runs(a), _runs(b))

        info = await router.open_session(Language.PYTHON, "alice")
        key, _, inner = info.session_id.partition(SEPARATOR)
        owner, survivor = (a, b) if key == route_key(a.url) else (b, a)
        assert owner.executor.sessions.get(inner, "alice")
        await router.execute(ExecuteRequest(code="x = 41", session_id=info.session_id), "alice")
        again = await router.execute(
            ExecuteRequest(code="x + 1", session_id=info.session_id), "alice"
        )
        assert (again.value, again.session_id) == ("42", info.session_id)

        # The owner breaks during a run: the session is lost, and says so.
        owner.switch.state = "broken"
        with pytest.raises(SessionLost, match="open a new session"):
            await router.execute(ExecuteRequest(code="x", session_id=info.session_id), "alice")
        owner.switch.state = "down"
        await router.check_health()
        with pytest.raises(SessionLost, match="is down"):
            await router.get_session(info.session_id, "alice")
        before = _runs(survivor)
        for i in range(4):
            result = await router.execute(ExecuteRequest(code=f"print({i} * 2)"), "bob")
            assert result.stdout == f"{i * 2}\n"
        assert _runs(survivor) == before + 4

        # It comes back: healthy again, and given work.
        owner.switch.state = "up"
        await router.check_health()
        assert all(r.healthy for r in router.routes.values())
        health = await router.health()
        assert health.status == "ok" and health.executors is not None
        assert health.limits is not None and health.limits.max_timeout_s == 300
    finally:
        await router.aclose()


async def test_back_to_back_runs_between_health_checks_use_both_executors(
    make_served: MakeServed,
) -> None:
    # One executor looks less loaded at the health check; runs sent one after another before
    # the next check take its ready sandboxes, and then go to the other one too.
    a, b = await make_served(), await make_served()
    router = await _router(a, b)
    try:
        first, second = router.routes[route_key(a.url)], router.routes[route_key(b.url)]
        first.ready, second.ready = {"python": 1}, {"python": 3}
        for i in range(6):
            await router.execute(ExecuteRequest(code=f"print({i})"), "alice")
        assert (_runs(a), _runs(b)) == (2, 4)
    finally:
        await router.aclose()


async def test_a_run_never_accepted_is_retried_on_another_executor(
    make_served: MakeServed,
) -> None:
    a, b = await make_served(), await make_served()
    router = await _router(a, b)
    try:
        a.switch.state = "down"  # dead, but the router has not noticed yet
        for i in range(3):
            result = await router.execute(ExecuteRequest(code=f"print({i})"), "u")
            assert result.stdout == f"{i}\n"
        assert _runs(a) == 0 and _runs(b) == 3
        b.switch.state = "down"
        with pytest.raises(Unavailable, match="no executor accepted the run"):
            await router.execute(ExecuteRequest(code="1"), "u")
        with pytest.raises(Unavailable, match="no executor is reachable"):
            await router.execute(ExecuteRequest(code="1"), "u")
    finally:
        await router.aclose()


async def test_sessions_outputs_and_files_are_found_on_their_executor(
    make_served: MakeServed,
) -> None:
    a, b = await make_served(), await make_served()
    router = await _router(a, b)
    try:
        first = await router.open_session(Language.PYTHON, "carol")
        second = await router.open_session(Language.PYTHON, "carol")
        listed = {s.session_id for s in await router.list_sessions("carol")}
        assert listed == {first.session_id, second.session_id}
        await router.upload_file(first.session_id, "carol", "in.txt", b"hello")
        assert await (await router.download_file(first.session_id, "carol", "in.txt")).read() == b"hello"
        assert [f.path for f in await router.list_files(first.session_id, "carol")] == ["in.txt"]
        cut = await router.execute(
            ExecuteRequest(code="for i in range(5000):\n    print(i)", max_output_tokens=150),
            "carol",
        )
        page = await router.read_output(
            OutputQuery(execution_id=cut.execution_id, offset=4990, limit=20), "carol"
        )
        assert page.text.split() == [str(i) for i in range(4990, 5000)]
        closed = await router.close_session(first.session_id, "carol")
        assert closed.session_id == first.session_id
        for unknown in ("nokey", f"deadbeef{SEPARATOR}x", first.session_id):
            with pytest.raises(SessionNotFound):
                await router.get_session(unknown, "carol")
    finally:
        await router.aclose()


async def test_health_polling_runs_in_the_background(make_served: MakeServed) -> None:
    a = await make_served()
    router = RoutingClient({a.url: a.client()}, health_interval_s=0.05)
    await router.start()
    try:
        a.switch.state = "down"
        for _ in range(100):
            if not router.routes[route_key(a.url)].healthy:
                break
            await asyncio.sleep(0.02)
        assert not router.routes[route_key(a.url)].healthy
        assert "unreachable" in (router.routes[route_key(a.url)].error or "")
    finally:
        await router.aclose()


def test_route_keys_are_stable_and_short() -> None:
    assert route_key("http://a:8001/") == route_key("http://a:8001")
    assert len(route_key("http://a:8001")) == 8
    assert route_key("http://a:8001") != route_key("http://b:8001")


