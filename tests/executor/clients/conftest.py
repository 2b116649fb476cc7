"""Executor apps in this process, over the fake backend, reached by HttpClients through a
transport that can be switched off (an executor that died) or made to fail mid-request."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from executor.clients.http import HttpClient
from executor.core import Executor
from executor.server.app import create_app
from tests.executor.conftest import TOKEN


class Switch(httpx.AsyncBaseTransport):
    """An ASGI transport with a fault switch: "up", "down" (refused) or "broken" (mid-request)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app)
        self.state = "up"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Pass the request on, or fail as the switch says."""
        if self.state == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.state == "broken" and request.url.path != "/health":
            raise httpx.RemoteProtocolError("peer closed the connection", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class InProcessExecutor:
    """An executor served by its own app, and the switch in front of it."""

    url: str
    executor: Executor
    switch: Switch

    def client(self, token: str = TOKEN) -> HttpClient:
        """An HttpClient that reaches this executor through the switch."""
        return HttpClient(self.url, token, transport=self.switch)


MakeServed = Callable[..., Awaitable[InProcessExecutor]]


@pytest.fixture
async def make_served(make_fake_executor: Any) -> AsyncIterator[MakeServed]:
    """Executors over the fake backend, each behind its app and a switch."""
    made: list[HttpClient] = []
    count = 0

    async def factory(**overrides: Any) -> InProcessExecutor:
        nonlocal count
        count += 1
        executor = await make_fake_executor(internal_token=TOKEN, **overrides)
        app = create_app(executor.settings, executor)
        return InProcessExecutor(f"http://executor-{count}:8001", executor, Switch(app))

    yield factory
    for client in made:
        await client.aclose()
