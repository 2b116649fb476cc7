"""A client whose executor is still being reached (`code-exec mcp` and its shared executor):
the tools are there at once, calls wait for the executor, and a failure to reach it is a clear
error on each call, never a hang or a crash."""

import asyncio
import threading
from typing import Any

import pytest

from code_exec.compose import connect
from code_exec.local_executor import LocalExecutor
from executor.clients.deferred import DeferredClient
from executor.config import ClientSettings
from executor.errors import Unavailable
from executor.interface import ExecutorClient
from schemas.execution import ExecuteRequest
from schemas.languages import Language
from tests.executor.clients.conftest import MakeServed

pytestmark = pytest.mark.anyio


async def _gated(make_served: MakeServed) -> tuple[DeferredClient, asyncio.Event]:
    """A deferred client over a served executor that is reached once the event is set."""
    served = await make_served()
    reachable = asyncio.Event()

    async def opener() -> ExecutorClient:
        await reachable.wait()
        return served.client()

    return DeferredClient(opener), reachable


async def test_calls_wait_for_the_executor_then_go_through(make_served: MakeServed) -> None:
    client, reachable = await _gated(make_served)
    run = asyncio.create_task(client.execute(ExecuteRequest(code="print(1)"), "alice"))
    await asyncio.sleep(0.2)
    assert not run.done()  # waiting for the executor, not failing
    reachable.set()
    result = await asyncio.wait_for(run, 10)
    assert result.stdout == "1\n"
    info = await client.open_session(Language.PYTHON, "alice")
    assert [s.session_id for s in await client.list_sessions("alice")] == [info.session_id]
    assert (await client.health()).status == "ok"
    await client.aclose()


async def test_an_executor_that_cannot_be_reached_fails_each_call_clearly() -> None:
    async def opener() -> ExecutorClient:
        raise RuntimeError("the local executor did not start within 60 s; see executor.log")

    client = DeferredClient(opener)
    for _ in range(2):
        with pytest.raises(Unavailable, match="did not start within 60 s"):
            await client.execute(ExecuteRequest(code="1"), "alice")
    await client.aclose()  # nothing to close, no error


async def test_a_cancelled_call_does_not_cancel_the_start_others_wait_for(
    make_served: MakeServed,
) -> None:
    client, reachable = await _gated(make_served)
    first = asyncio.create_task(client.list_sessions("alice"))
    await asyncio.sleep(0.1)
    first.cancel()
    reachable.set()
    assert await client.list_sessions("alice") == []
    await client.aclose()


async def test_the_mcp_tools_are_ready_before_the_shared_executor(
    make_served: MakeServed, tmp_path: Any
) -> None:
    # The starter blocks (as starting the shared executor does) until the test lets it go:
    # connect() must yield the client and the tools without waiting for it.
    served = await make_served()
    go = threading.Event()
    started = threading.Event()

    def starter() -> LocalExecutor:
        started.set()
        go.wait(30)
        raise RuntimeError("the local executor did not start (the test stopped it)")

    settings = ClientSettings(_env_file=None)
    async with connect(settings, served.executor.settings, local=starter) as (client, tools):
        assert {tool.name for tool in tools} == {
            "run_code",
            "open_session",
            "close_session",
            "read_output",
        }
        assert tools.limits == served.executor.settings.limits()
        assert await asyncio.to_thread(started.wait, 10)  # reached in the background already
        go.set()
        with pytest.raises(Unavailable, match="did not start"):
            await client.execute(ExecuteRequest(code="1"), "alice")
