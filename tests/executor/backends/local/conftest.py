"""Fixtures for the local backend: real bubblewrap sandboxes, no mocks."""

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from executor.backends.local.backend import LocalBackend
from executor.backends.local.sandbox import LocalSandbox
from executor.backends.local.zygote import ZygoteSandbox
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


@pytest.fixture(params=["code-exec-launch", "bash and setpriv", "zygote"])
async def backend(
    make_backend: MakeBackend, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> LocalBackend:
    """A started backend, on each way sandboxes start: the built launcher, the bash prologue
    with setpriv that serves where the host has no C compiler, and (for Python, through
    make_sandbox and its fixtures) the zygote that stateless runs use."""
    if request.param == "bash and setpriv":
        monkeypatch.setattr("executor.backends.local.backend.build_launcher", lambda path: None)
    if request.param == "zygote":
        if os.geteuid() != 0:
            pytest.skip(
                "the zygote needs root (to map its user namespace and give each sandbox a "
                "uid): without it, stateless Python runs use bubblewrap, tested here too"
            )
        started = await make_backend(zygote="on")
        assert started.health().model_dump()["stateless_python"].startswith("zygote")
        return started
    started = await make_backend(zygote="off")
    assert started.health().model_dump()["launcher"] == request.param
    return started


def own_processes(sandbox: LocalSandbox | ZygoteSandbox) -> int:
    """How many processes a sandbox is made of before code runs: bubblewrap, its pid 1 and the
    runner; a zygote child is its runner."""
    return 1 if isinstance(sandbox, ZygoteSandbox) else 3


@pytest.fixture
def bwrap_only(backend: LocalBackend) -> None:
    """For tests of what only a session's (bubblewrap) sandbox does: restart its runner."""
    if uses_zygote(backend):
        pytest.skip(
            "not applicable: a zygote sandbox serves one stateless run and is never restarted "
            "(sessions get bubblewrap sandboxes, whose workspace outlives the runner)"
        )


def uses_zygote(backend: LocalBackend) -> bool:
    """Whether the backend fixture is the zygote's case."""
    return backend.settings.zygote == "on"


@pytest.fixture
async def make_sandbox(backend: LocalBackend) -> AsyncIterator[MakeSandbox]:
    sandboxes: list[LocalSandbox | ZygoteSandbox] = []
    stateless = uses_zygote(backend)

    async def factory(language: Language = Language.PYTHON) -> LocalSandbox | ZygoteSandbox:
        sandbox = await backend.create(language, stateless=stateless)
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
