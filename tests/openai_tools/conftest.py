"""A real `code-exec api` process on loopback (embedded executor), and tokens for it."""

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import jwt
import pytest

from openai_tools.auth import hash_api_key
from tests.processes import code_exec_process

SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4
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
    """The server: its URL and process."""

    url: str
    process: subprocess.Popen[bytes]

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


def start_api(port: int, **settings: str) -> Iterator[Api]:
    """Run `code-exec api` with CODE_EXEC_* overrides until the generator is closed."""
    defaults = {
        "jwt_secret": SECRET,
        "api_keys": f"alice:{hash_api_key(API_KEY)}",
        "pool_sizes": '{"python": 2, "javascript": 1, "bash": 1, "c": 0}',
        "pool_wait_s": "30",
    }
    with code_exec_process(
        "api",
        port,
        {**defaults, **settings},
        lambda health: health["executor"]["pools"]["python"]["ready"] >= 2,
    ) as (url, process):
        yield Api(url, process)


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    """The API on port 8000 when free (the seeds' examples use it), else any port."""
    yield from start_api(_port(8000), max_concurrent_runs_per_user="2")
