"""Start-up checks, CORS, and RS256 tokens verified by public key or JWKS."""

import functools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from executor.errors import Unauthorized
from openai_tools.auth import Authenticator
from openai_tools.config import ApiSettings
from tests.openai_tools.conftest import Api, _port, start_api


def test_production_start_without_a_secret_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="CODE_EXEC_JWT_SECRET is not set"):
        ApiSettings(jwt_secret=None, dev_mode=False, _env_file=None).check()
    with pytest.raises(RuntimeError, match="may not be"):
        ApiSettings(jwt_secret="s" * 40, cors_origins=["*"], _env_file=None).check()
    with pytest.raises(RuntimeError, match="INTERNAL_TOKEN"):
        ApiSettings(jwt_secret="s" * 40, executor_url="http://x", _env_file=None).check()
    dev = ApiSettings(dev_mode=True, _env_file=None)
    dev.check()
    assert dev.jwt_secret is not None


def test_no_cors_headers_unless_origins_are_configured(api: Api) -> None:
    preflight = api.http.options(
        "/v1/tools/call",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture(scope="module")
def cors_api() -> Iterator[Api]:
    yield from start_api(_port(), cors_origins='["https://app.example"]')


def test_configured_origins_only(cors_api: Api) -> None:
    ok = httpx.options(
        f"{cors_api.url}/v1/tools/call",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    other = httpx.options(
        f"{cors_api.url}/v1/tools/call",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


@functools.cache  # two keys serve every test: making one takes a noticeable moment
def _rsa(which: int = 0) -> tuple[str, str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public, key


def _claims(user: str) -> dict[str, object]:
    now = int(time.time())
    return {"sub": user, "aud": "code-exec", "iss": "code-exec", "iat": now, "exp": now + 60}


def test_rs256_with_a_public_key() -> None:
    private, public, _ = _rsa()
    auth = Authenticator(ApiSettings(jwt_algorithm="RS256", jwt_public_key=public, _env_file=None))
    assert auth.verify(jwt.encode(_claims("ann"), private, "RS256")) == "ann"
    other_private, _, _ = _rsa(1)
    with pytest.raises(Unauthorized):
        auth.verify(jwt.encode(_claims("ann"), other_private, "RS256"))
    # An HS256 token signed with the public key as secret (the classic confusion) is refused.
    with pytest.raises(Unauthorized):
        auth.verify(jwt.encode(_claims("ann"), "x" * 64, "HS256"))


def test_rs256_with_a_jwks_served_on_loopback() -> None:
    private, _, key = _rsa()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        auth = Authenticator(ApiSettings(jwt_algorithm="RS256", jwks_url=url, _env_file=None))
        token = jwt.encode(_claims("bo"), private, "RS256", headers={"kid": "k1"})
        assert auth.verify(token) == "bo"
        with pytest.raises(Unauthorized):
            auth.verify(jwt.encode(_claims("bo"), _rsa(1)[0], "RS256", headers={"kid": "k1"}))
    finally:
        server.shutdown()


def test_blank_secrets_count_as_missing() -> None:
    from executor.config import ExecutorSettings

    with pytest.raises(RuntimeError, match="CODE_EXEC_JWT_SECRET is not set"):
        ApiSettings(jwt_secret="  ", _env_file=None).check()
    with pytest.raises(RuntimeError, match="CODE_EXEC_INTERNAL_TOKEN is not set"):
        ExecutorSettings(internal_token="", _env_file=None).require_token()
