"""Fixtures that point the real E2B SDK at `FakeE2B` (fixed ports: run these tests serially)."""

from collections.abc import Iterator

import pytest

from tests.executor.backends.e2b.fake_e2b import FakeE2B

_E2B_ENV = (
    "E2B_DEBUG",
    "E2B_API_KEY",
    "E2B_API_URL",
    "E2B_SANDBOX_URL",
    "E2B_DOMAIN",
    "E2B_ACCESS_TOKEN",
)


@pytest.fixture
def fake_e2b() -> Iterator[FakeE2B]:
    with FakeE2B() as fake:
        yield fake


def _point_sdk_at(fake: FakeE2B, monkeypatch: pytest.MonkeyPatch, *, debug: bool) -> FakeE2B:
    for name in _E2B_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in fake.sdk_env(debug=debug).items():
        monkeypatch.setenv(name, value)
    return fake


@pytest.fixture
def e2b_debug(fake_e2b: FakeE2B, monkeypatch: pytest.MonkeyPatch) -> FakeE2B:
    """SDK in debug mode (`E2B_DEBUG=true`): create/kill/set_timeout never reach the fake."""
    return _point_sdk_at(fake_e2b, monkeypatch, debug=True)


@pytest.fixture
def e2b_api(fake_e2b: FakeE2B, monkeypatch: pytest.MonkeyPatch) -> FakeE2B:
    """SDK in API mode (`E2B_API_URL` + `E2B_SANDBOX_URL`): every call reaches the fake."""
    return _point_sdk_at(fake_e2b, monkeypatch, debug=False)
