"""Fixtures for the local backend: real bubblewrap sandboxes, no mocks."""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox
from executor.config import ExecutorSettings
from schemas.languages import Language

MakeBackend = Callable[..., Awaitable[LocalBackend]]
MakeSandbox = Callable[..., Awaitable[LocalSandbox]]


@pytest.fixture
async def make_backend(executor_state_dir: Path) -> AsyncIterator[MakeBackend]:
    backends: list[LocalBackend] = []

    async def factory(**overrides: Any) -> LocalBackend:
        backend = LocalBackend(ExecutorSettings(state_dir=executor_state_dir, **overrides))
        await backend.start()
        backends.append(backend)
        return backend

    yield factory
    for backend in reversed(backends):
        await backend.close()


@pytest.fixture(params=["code-exec-launch", "bash and setpriv"])
async def backend(
    make_backend: MakeBackend, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> LocalBackend:
    """A started backend, on each way sandboxes start: the built launcher, and the bash
    prologue with setpriv that serves where the host has no C compiler."""
    if request.param == "bash and setpriv":
        monkeypatch.setattr("executor.backends.local.backend.build_launcher", lambda path: None)
    started = await make_backend()
    assert started.health().model_dump()["launcher"] == request.param
    return started


@pytest.fixture
async def make_sandbox(backend: LocalBackend) -> AsyncIterator[MakeSandbox]:
    sandboxes: list[LocalSandbox] = []

    async def factory(language: Language = Language.PYTHON) -> LocalSandbox:
        sandbox = await backend.create(language)
        sandboxes.append(sandbox)
        return sandbox

    yield factory
    for sandbox in sandboxes:
        with contextlib.suppress(Exception):
            await sandbox.close()


@pytest.fixture
async def py(make_sandbox: MakeSandbox) -> LocalSandbox:
    return await make_sandbox(Language.PYTHON)


@pytest.fixture
async def sh(make_sandbox: MakeSandbox) -> LocalSandbox:
    return await make_sandbox(Language.BASH)


@pytest.fixture
async def c(make_sandbox: MakeSandbox) -> LocalSandbox:
    return await make_sandbox(Language.C)


@pytest.fixture
async def js(make_sandbox: MakeSandbox) -> LocalSandbox:
    return await make_sandbox(Language.JAVASCRIPT)
