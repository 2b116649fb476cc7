"""The API under test: in this process over the fake backend (fast), or a real `code-exec api`
process on loopback with real sandboxes (slow); both reached through Api.http."""

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from code_exec.compose import connect
from openai_tools.app import create_api_app
from openai_tools.auth import hash_api_key
from openai_tools.config import ApiSettings
from tests.conftest import fake_settings
from tests.fakes import FakeBackend
from tests.processes import code_exec_process

SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4
URL_KEY = "test-url-signing-key-" + "fedcba9876543210" * 4
API_KEY = "ce_test_key_alice"


def mint(user: str, **overrides: object) -> str:
    """An HS256 token as the server expects it, with claims overridden."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user,
        "aud": "code-exec",
        "iss": "code-exec",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


@dataclass
class Api:
    """The API: its URL, an HTTP client for it, its process (None when in this process)."""

    url: str
    http: httpx.Client
    process: subprocess.Popen[bytes] | None = None
    backend: FakeBackend | None = None

    def headers(self, user: str = "alice") -> dict[str, str]:
        """Authorization for user."""
        return {"Authorization": f"Bearer {mint(user)}"}


def _port(preferred: int | None = None) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred or 0))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEFAULTS = {
    "jwt_secret": SECRET,
    "api_keys": f"alice:{hash_api_key(API_KEY)}",
    "pool_sizes": '{"python": 2, "javascript": 1, "bash": 1, "c": 0}',
    "pool_wait_s": "30",
}


def start_api(port: int, **settings: str) -> Iterator[Api]:
    """Run `code-exec api` with CODE_EXEC_* overrides until the generator is closed."""
    with (
        code_exec_process(
            "api",
            port,
            {**DEFAULTS, **settings},
            lambda health: health["executor"]["pools"]["python"]["ready"] >= 2,
        ) as (url, process),
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield Api(url, http, process)


def in_process_api(**settings: str) -> Iterator[Api]:
    """The API app in this process, over an executor on the fake backend."""
    values = {**DEFAULTS, **settings}
    state = Path(tempfile.mkdtemp(prefix="code-exec-fake-"))
    # Its own state dir, so that what the API keeps there (a URL signing key) stays with it.
    values.setdefault("state_dir", str(state))
    api_settings = ApiSettings(_env_file=None, **values)  # type: ignore[arg-type]
    executor_settings = fake_settings(
        state, pool_sizes=json.loads(values["pool_sizes"]), pool_wait_s=float(values["pool_wait_s"])
    )
    backend = FakeBackend()
    app = create_api_app(api_settings, lambda: connect(api_settings, executor_settings, backend))
    try:
        with TestClient(app, base_url="http://testserver", raise_server_exceptions=True) as http:
            yield Api("http://testserver", http, None, backend)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module", params=["in-process", pytest.param("real", marks=pytest.mark.slow)])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API with 2 runs in progress per user: in process on the fake backend, or real."""
    if request.param == "in-process":
        yield from in_process_api(max_concurrent_runs_per_user="2")
    else:
        yield from start_api(_port(8000), max_concurrent_runs_per_user="2")


SIGNED = {
    "max_concurrent_runs_per_user": "2",
    "url_signing_key": URL_KEY,
    "tool_result_urls": "signed",
    "max_download_url_ttl_s": "600",
}
"""An API whose tool results link files by signed URLs, with a known key (to forge with)."""


@pytest.fixture(scope="module", params=["in-process", pytest.param("real", marks=pytest.mark.slow)])
def signed_api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The API with signed URLs in tool results: in process on the fake backend, or real."""
    if request.param == "in-process":
        yield from in_process_api(**SIGNED)
    else:
        yield from start_api(_port(), **SIGNED)


@pytest.fixture(scope="module")
def real_api() -> Iterator[Api]:
    """A real server on port 8000 when free (the seeds' examples use it), else any port."""
    yield from start_api(_port(8000), max_concurrent_runs_per_user="2")


def run_code_calls(arguments: str) -> list[dict[str, Any]]:
    """One run_code call in each API's shape: Chat Completions', then Responses'."""
    return [
        {"id": "c", "type": "function", "function": {"name": "run_code", "arguments": arguments}},
        {"type": "function_call", "call_id": "fc", "name": "run_code", "arguments": arguments},
    ]
