"""A real `code-exec api` process on loopback (embedded executor), and tokens for it."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt
import pytest

from openai_tools.auth import hash_api_key

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
    state = tempfile.mkdtemp(prefix="code-exec-test-", dir="/tmp")
    os.chmod(state, 0o755)
    env = {
        **os.environ,
        "CODE_EXEC_JWT_SECRET": SECRET,
        "CODE_EXEC_API_KEYS": f"alice:{hash_api_key(API_KEY)}",
        "CODE_EXEC_STATE_DIR": state,
        "CODE_EXEC_POOL_SIZES": '{"python": 2, "javascript": 1, "bash": 1, "c": 0}',
        "CODE_EXEC_POOL_WAIT_S": "30",
        **{f"CODE_EXEC_{k.upper()}": v for k, v in settings.items()},
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "code_exec.cli",
            "--log-level",
            "warning",
            "api",
            "--port",
            str(port),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        try:
            health = httpx.get(f"{url}/health", timeout=1).json()
            if health["executor"]["pools"]["python"]["ready"] >= 2:
                break
        except (httpx.TransportError, KeyError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError("the API did not start")
        time.sleep(0.1)
    try:
        yield Api(url, process)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    """The API on port 8000 when free (the seeds' examples use it), else any port."""
    yield from start_api(_port(8000), max_concurrent_runs_per_user="2")
