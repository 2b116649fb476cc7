"""MCP logging (mcp_server/server.py): the capability, and one notification per tool call at or
above the level the client set, none before it sets one."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mcp import ClientSession, types
from mcp.shared.memory import create_connected_server_and_client_session

from executor.tools import ToolSet
from mcp_server.server import CodeExecServer

pytestmark = pytest.mark.anyio

Connect = Callable[[], Any]


@pytest.fixture
async def connect(make_fake_executor: Any) -> AsyncIterator[Connect]:
    """Connect an in-memory client; its log notifications land in the list it is given."""
    server = CodeExecServer(await make_fake_executor(), ToolSet(), lambda ctx: "logged")

    def session(logs: list[types.LoggingMessageNotificationParams]) -> Any:
        async def collect(params: types.LoggingMessageNotificationParams) -> None:
            logs.append(params)

        return create_connected_server_and_client_session(server, logging_callback=collect)

    yield session


async def calls(session: ClientSession) -> None:
    """One call that succeeds, one whose code fails, one with arguments off the schema."""
    assert not (await session.call_tool("run_code", {"code": "print(1)"})).isError
    assert (await session.call_tool("run_code", {"code": "1/0"})).isError
    assert (await session.call_tool("run_code", {"code": 1})).isError


async def test_logging_is_a_capability(connect: Connect) -> None:
    async with connect([]) as session:
        initialized = await session.initialize()
    assert initialized.capabilities.logging is not None


async def test_no_log_notification_until_the_client_sets_a_level(connect: Connect) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    async with connect(logs) as session:
        await calls(session)
    assert logs == []


async def test_each_call_logs_at_or_above_the_level_set(connect: Connect) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []
    async with connect(logs) as session:
        await session.set_logging_level("info")
        await calls(session)
        assert [(log.level, log.data.split(":")[0]) for log in logs] == [
            ("info", "run_code"),
            ("warning", "run_code"),
            ("warning", "run_code"),
        ]
        assert "done in" in logs[0].data and "an error result" in logs[1].data
        assert {log.logger for log in logs} == {"code-exec"}
        logs.clear()
        await session.set_logging_level("warning")
        await calls(session)
        assert [log.level for log in logs] == ["warning", "warning"]
        logs.clear()
        await session.set_logging_level("error")
        await calls(session)
        assert logs == []
