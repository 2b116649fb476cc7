"""The composition root: the one executor client every command's front-ends use.

    settings ─► in process (Executor), one remote (HttpClient) or several (RoutingClient)
             ─► CappedClient (the per-user run cap)     ─► every front-end, `code-exec mcp` too
             ─► ToolSet (descriptions from the limits the executor reports)
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from code_exec.local_executor import LocalExecutor
from executor.backends import Backend
from executor.clients import CappedClient, HttpClient, RoutingClient
from executor.clients.deferred import DeferredClient
from executor.config import ClientSettings, ExecutorSettings
from executor.core import Executor
from executor.errors import ExecutorError
from executor.interface import ExecutorClient
from executor.tools import ToolSet


async def _open(
    settings: ClientSettings,
    executor_settings: ExecutorSettings,
    backend: Backend | None,
    local: Callable[[], LocalExecutor] | None,
) -> ExecutorClient:
    if local is not None:
        start = local

        async def attach() -> ExecutorClient:
            # Blocking (it may start the executor and wait for it): in a thread.
            reached = await anyio.to_thread.run_sync(start)
            return HttpClient("http://local-executor", reached.token, transport=reached.transport())

        return DeferredClient(attach)
    if settings.executor_urls:
        router = RoutingClient.over_http(settings.executor_urls, settings.require_token())
        await router.start()
        return router
    if settings.executor_url:
        return HttpClient(settings.executor_url, settings.require_token())
    executor = Executor(executor_settings, backend)
    await executor.start()
    return executor


def check_executor(settings: ClientSettings, executor_settings: ExecutorSettings) -> None:
    """Fail with one line, before any server starts, when an in-process executor cannot run."""
    if settings.remote or executor_settings.backend != "local":
        return
    from executor.backends.local.backend import missing_runtime  # the local backend's own check

    missing = missing_runtime(executor_settings.runtime_dir)
    if missing is not None:
        raise RuntimeError(missing)


async def toolset_for(client: ExecutorClient, fallback: ExecutorSettings) -> ToolSet:
    """The tools described with the executor's limits (this process's settings if unknown)."""
    try:
        limits = (await client.health()).limits
    except ExecutorError:
        limits = None
    return ToolSet(limits or fallback.limits())


@asynccontextmanager
async def connect(
    settings: ClientSettings,
    executor_settings: ExecutorSettings | None = None,
    backend: Backend | None = None,
    local: Callable[[], LocalExecutor] | None = None,
) -> AsyncIterator[tuple[ExecutorClient, ToolSet]]:
    """The capped executor client the settings name, and its tools; closed on exit.

    An in-process executor uses `backend` when given (else the one its settings name); with
    `local` (which reaches the shared local executor, starting it when none runs), the client
    is that executor's, over its Unix socket, reached in the background: the tools are
    described from this process's settings, which are the local executor's too, so that a
    client's `initialize` and `tools/list` are answered before the executor is up.
    """
    settings.check()
    executor_settings = executor_settings or ExecutorSettings()
    inner = await _open(settings, executor_settings, backend, local)
    try:
        client = CappedClient(inner, settings.max_concurrent_runs_per_user)
        tools = (
            ToolSet(executor_settings.limits())
            if local is not None
            else await toolset_for(client, executor_settings)
        )
        yield client, tools
    finally:
        with anyio.CancelScope(shield=True):
            await inner.aclose()
