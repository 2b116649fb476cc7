"""The API host as an OAuth resource server (MCP authorization, RFC 9728): its metadata, its
challenges, and tokens of external authorization servers verified with their JWKS, which a
server on 127.0.0.1 started here serves. Nothing but 127.0.0.1 is ever dialed: the issuers
and the public URL below are names only."""

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp import ClientSession
from mcp.client.auth.utils import extract_resource_metadata_from_www_auth
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed
from pydantic import ValidationError

from code_exec.compose import connect
from executor.errors import Forbidden, Unauthorized
from openai_tools.app import create_api_app
from openai_tools.auth import Authenticator
from openai_tools.config import ApiSettings
from openai_tools.jwks import JwksKeys
from tests.conftest import fake_settings
from tests.fakes import FakeBackend
from tests.openai_tools.conftest import SECRET, Api, in_process_api, mint
from tests.processes import free_port
from tests.threaded_server import serve_in_thread

PUBLIC = "https://code-exec.example"
RESOURCE = f"{PUBLIC}/mcp"
ISSUER = "https://idp.example/realms/a"
OTHER_ISSUER = "https://idp.example/realms/b"
SESSIONS = "/v1/code_interpreter/sessions"


@functools.cache
def rsa_key(which: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key (made once per test run: making one takes a moment)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    """The public half of key as a JWK with kid."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig")
    return dict(jwk)


@dataclass
class JwksServer:
    """A JWKS on 127.0.0.1: what it answers can change, and it counts the requests."""

    keys: list[dict[str, Any]]
    status: int = 200
    body: bytes | None = None
    delay_s: float = 0.0
    hits: int = 0
    asked: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def start(self) -> None:
        """Listen on a free loopback port, in a thread."""
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                jwks.hits += 1
                jwks.asked.set()
                time.sleep(jwks.delay_s)
                body = jwks.body if jwks.body is not None else json.dumps({"keys": jwks.keys})
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(jwks.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server under test stopped reading: what the size limit does

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def jwks_server(*keys: dict[str, Any]) -> Iterator[JwksServer]:
    """A JWKS server with these keys, stopped at the end."""
    server = JwksServer(list(keys))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    """The JWKS of ISSUER: RSA key k1 and P-256 key e1."""
    with jwks_server(public_jwk(rsa_key(), "k1"), public_jwk(ec_key(), "e1")) as server:
        yield server


def claims(**overrides: Any) -> dict[str, Any]:
    """An external access token's claims, as ISSUER makes them for this server."""
    now = int(time.time())
    values = {"iss": ISSUER, "sub": "ann", "aud": RESOURCE, "iat": now, "exp": now + 600}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def token(
    kid: str = "k1",
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    alg: str = "RS256",
    **overrides: Any,
) -> str:
    """An external token signed by key (ISSUER's RSA key by default)."""
    return jwt.encode(claims(**overrides), key or rsa_key(), alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(alg: str, secret: bytes | None, kid: str = "k1", **overrides: Any) -> str:
    """A token pyjwt would refuse to make: HS256 keyed with a public key, or alg none."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims(**overrides)).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest() if secret else b""
    return f"{header}.{payload}.{_b64(signature)}"


def public_pem() -> bytes:
    """ISSUER's public key as PEM: what an alg-confusion attacker uses as an HMAC secret."""
    return (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def oauth_settings(jwks_url: str, **more: Any) -> dict[str, Any]:
    """Settings that trust ISSUER (RS256 and ES256) for PUBLIC."""
    return {
        "public_url": PUBLIC,
        "oauth_issuer": ISSUER,
        "oauth_jwks_url": jwks_url,
        "oauth_algorithms": ("RS256", "ES256"),
        **more,
    }


@pytest.fixture
def api(jwks: JwksServer) -> Iterator[Api]:
    """The API in this process, trusting ISSUER besides its own HS256 tokens."""
    yield from in_process_api(**oauth_settings(jwks.url))


def bearer(value: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {value}"}


def test_the_metadata_documents_are_exact_and_public(api: Api) -> None:
    common = {
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "resource_name": "code-exec",
    }
    for path, resource in (("", PUBLIC), ("/mcp", RESOURCE)):
        response = api.http.get(f"/.well-known/oauth-protected-resource{path}")
        assert response.status_code == 200, response.text
        assert response.json() == {"resource": resource, **common}
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert list(response.json()) == [
            "resource",
            "authorization_servers",
            "bearer_methods_supported",
            "resource_name",
        ]
        # What the official MCP client makes of it.
        parsed = ProtectedResourceMetadata.model_validate(response.json())
        assert check_resource_allowed(RESOURCE, str(parsed.resource))


def test_without_a_public_url_localhost_derives_it_and_other_hosts_are_told(tmp_path: Path) -> None:
    with contextmanager(in_process_api)() as api:
        local = api.http.get("http://localhost:8123/.well-known/oauth-protected-resource/mcp")
        assert local.json() == {
            "resource": "http://localhost:8123/mcp",
            "bearer_methods_supported": ["header"],
            "resource_name": "code-exec",
        }
        refused = api.http.post("http://127.0.0.1:8123/mcp", json={})
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer resource_metadata="http://127.0.0.1:8123/.well-known/oauth-protected-resource'
            '/mcp"'
        )
        elsewhere = api.http.get("http://api.example/.well-known/oauth-protected-resource")
        assert elsewhere.status_code == 404
        assert "set CODE_EXEC_PUBLIC_URL" in elsewhere.json()["error"]["message"]
        # A Host header cannot smuggle text into the challenge.
        odd = api.http.post("/mcp", json={}, headers={"Host": 'localhost:1"x'})
        assert odd.headers["WWW-Authenticate"] == "Bearer"


def test_the_challenge_is_exact(api: Api) -> None:
    mcp_metadata = f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource/mcp"'
    root_metadata = f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource"'
    assert api.http.post("/mcp", json={}).headers["WWW-Authenticate"] == f"Bearer {mcp_metadata}"
    run = api.http.post("/v1/code_interpreter/run", json={"code": "1"})
    assert run.status_code == 401
    assert run.headers["WWW-Authenticate"] == f"Bearer {root_metadata}"
    expired = api.http.post("/mcp", json={}, headers=bearer(token(exp=int(time.time()) - 60)))
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == (
        f"the token has expired; get a new one from {ISSUER}"
    )
    assert expired.headers["WWW-Authenticate"] == (
        f'Bearer {mcp_metadata}, error="invalid_token", error_description="the token has '
        f'expired; get a new one from {ISSUER}"'
    )
    malformed = api.http.post("/mcp", json={}, headers={"Authorization": "Bearer "})
    assert malformed.headers["WWW-Authenticate"] == (
        f'Bearer {mcp_metadata}, error="invalid_request", error_description="the '
        "Authorization header must be 'Bearer <token>'\""
    )
    # A 401 from a route (an unknown API key) carries the same challenge.
    key = api.http.post("/v1/auth/token", json={"api_key": "ce_guess"})
    assert key.status_code == 401
    assert key.headers["WWW-Authenticate"] == f"Bearer {root_metadata}"


def test_an_error_description_is_a_valid_quoted_string(api: Api) -> None:
    sneaky = token(iss='https://x.example/"\r\nSet-Cookie: a=b\\')
    response = api.http.post("/mcp", json={}, headers=bearer(sneaky))
    challenge = response.headers["WWW-Authenticate"]
    description = challenge.split('error_description="', 1)[1]
    assert description.endswith('"') and '"' not in description[:-1]
    assert "\\" not in description and "\r" not in description and "\n" not in description
    assert "is not trusted here" in description


def test_an_external_token_works_on_the_api_and_its_user_is_namespaced(api: Api) -> None:
    external = bearer(token(sub="ann"))
    opened = api.http.post("/v1/tools/open_session", json={"language": "python"}, headers=external)
    assert opened.status_code == 200, opened.text
    mine = api.http.get("/v1/code_interpreter/sessions", headers=external).json()
    assert [s["session_id"] for s in mine] == [opened.json()["session_id"]]
    # Our own token for 'ann' is another user: it sees nothing of the external ann's.
    own = api.http.get("/v1/code_interpreter/sessions", headers=api.headers("ann"))
    assert own.status_code == 200 and own.json() == []
    # ES256 from the same issuer, as configured.
    es = bearer(token(kid="e1", key=ec_key(), alg="ES256", sub="ann"))
    ids = [s["session_id"] for s in mine]
    assert [s["session_id"] for s in api.http.get(SESSIONS, headers=es).json()] == ids
    # The public URL itself is accepted as the audience too (it names only this server).
    whole = bearer(token(aud=[PUBLIC, "https://another.example"]))
    assert [s["session_id"] for s in api.http.get(SESSIONS, headers=whole).json()] == ids


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "wrong audience": (
        lambda: token(aud="https://other-service.example/mcp"),
        f"the token is not for this service (its audience must be '{RESOURCE}' or '{PUBLIC}')",
    ),
    "no audience": (lambda: token(aud=None), "missing the 'aud' claim"),
    "unknown issuer": (
        lambda: token(iss="https://evil.example"),
        "its issuer 'https://evil.example' is not trusted here",
    ),
    "no issuer": (lambda: token(iss=None), "its issuer 'None' is not trusted here"),
    "expired": (lambda: token(exp=int(time.time()) - 60), "the token has expired"),
    "no expiry": (lambda: token(exp=None), "missing the 'exp' claim"),
    "not yet valid": (lambda: token(nbf=int(time.time()) + 600), "not yet valid"),
    "alg none": (lambda: forged("none", None), "algorithm 'none' is not accepted"),
    "HS256 keyed with the public key": (
        lambda: forged("HS256", public_pem()),
        f"algorithm 'HS256' is not accepted from issuer '{ISSUER}' (accepted: RS256, ES256)",
    ),
    "RS512": (lambda: token(alg="RS512"), "algorithm 'RS512' is not accepted"),
    "unknown kid": (
        lambda: token(kid="k9"),
        "its key id 'k9' is not among the signing keys at",
    ),
    "no kid": (
        lambda: jwt.encode(claims(), rsa_key(), "RS256"),
        "its header names no key id (kid)",
    ),
    "signed by another key under k1": (
        lambda: token(key=rsa_key(1)),
        "Signature verification failed",
    ),
    "RS256 under the EC key's kid": (
        lambda: token(kid="e1"),
        "it is signed with RS256 but key 'e1' is an ES256 key",
    ),
    "no subject": (lambda: token(sub=None), "missing the 'sub' claim"),
    "subject too long": (lambda: token(sub="s" * 250), "the subject is over 256 characters"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_external_tokens_are_refused_saying_why(api: Api, case: str) -> None:
    make, reason = REFUSED[case]
    for path in ("/mcp", "/v1/code_interpreter/sessions"):
        response = api.http.request(
            "POST" if path == "/mcp" else "GET", path, json={}, headers=bearer(make())
        )
        assert response.status_code == 401, (case, response.text)
        message = response.json()["error"]["message"].replace('"', "'")
        assert reason in message, (case, message)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_own_tokens_still_work_beside_external_ones(api: Api) -> None:
    response = api.http.get("/v1/code_interpreter/sessions", headers=api.headers("bob"))
    assert response.status_code == 200
    # Our own issuer's name in an external token signed with ISSUER's key: our HS256 check.
    posing = api.http.get(
        "/v1/code_interpreter/sessions", headers=bearer(token(iss="code-exec", aud="code-exec"))
    )
    assert posing.status_code == 401
    assert "algorithm 'RS256' is not accepted from issuer 'code-exec'" in posing.text


def test_an_overlong_header_is_refused_before_any_parsing(api: Api) -> None:
    response = api.http.post("/mcp", json={}, headers=bearer("a" * 17_000))
    assert response.status_code == 401
    assert "over 16384 bytes" in response.json()["error"]["message"]
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_two_issuers_cannot_speak_for_each_other(jwks: JwksServer) -> None:
    with jwks_server(public_jwk(rsa_key(1), "k1")) as other:
        more = [{"issuer": OTHER_ISSUER, "jwks_url": other.url}]
        settings = ApiSettings(
            jwt_secret=SECRET,
            _env_file=None,
            **oauth_settings(jwks.url, oauth_issuers=more),  # type: ignore[arg-type]
        )
        auth = Authenticator(settings)
        assert auth.verify(token(sub="ann")) == f"{ISSUER}#ann"
        assert auth.verify(token(key=rsa_key(1), iss=OTHER_ISSUER)) == f"{OTHER_ISSUER}#ann"
        # B's key (same kid) cannot make A's token, nor A's key B's.
        for forged_token in (token(key=rsa_key(1)), token(iss=OTHER_ISSUER)):
            with pytest.raises(Unauthorized, match="Signature verification failed"):
                auth.verify(forged_token)
        # Nor can a subject that looks like another issuer's user cross over.
        assert auth.verify(token(sub=f"{OTHER_ISSUER}#ann")) == f"{ISSUER}#{OTHER_ISSUER}#ann"
        with pytest.raises(Unauthorized, match="may not contain '://'"):
            auth.verify(mint(f"{ISSUER}#ann"))


def test_required_scopes_answer_403_insufficient_scope(jwks: JwksServer) -> None:
    settings = oauth_settings(jwks.url, oauth_scopes=["code-exec:run"])
    with contextmanager(in_process_api)(**settings) as api:
        metadata = api.http.get("/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["scopes_supported"] == ["code-exec:run"]
        lacking = api.http.post("/mcp", json={}, headers=bearer(token(scope="openid")))
        assert lacking.status_code == 403
        assert lacking.headers["WWW-Authenticate"] == (
            f'Bearer resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource/mcp", '
            'error="insufficient_scope", scope="code-exec:run", error_description="the token '
            f"lacks the scope code-exec:run; ask {ISSUER} for a token with the scopes "
            'code-exec:run"'
        )
        granted = bearer(token(scope="openid code-exec:run"))
        assert api.http.get("/v1/code_interpreter/sessions", headers=granted).status_code == 200
        as_list = bearer(token(scp=["code-exec:run"]))
        assert api.http.get("/v1/code_interpreter/sessions", headers=as_list).status_code == 200
        # Our own tokens carry no scopes and need none.
        assert (
            api.http.get("/v1/code_interpreter/sessions", headers=api.headers()).status_code == 200
        )


def _auth(jwks_url: str, **more: Any) -> Authenticator:
    values: dict[str, Any] = {"jwt_secret": SECRET, **oauth_settings(jwks_url, **more)}
    return Authenticator(ApiSettings(_env_file=None, **values))


def test_an_unreachable_jwks_is_401_saying_so_not_500() -> None:
    nobody = f"http://127.0.0.1:{free_port()}/jwks.json"
    with contextmanager(in_process_api)(**oauth_settings(nobody)) as api:
        response = api.http.post("/mcp", json={}, headers=bearer(token()))
        assert response.status_code == 401
        message = response.json()["error"]["message"]
        assert message.startswith(
            f"the authorization server's signing keys could not be fetched from {nobody} ("
        )
        assert "try again in a few seconds" in message and "CODE_EXEC_OAUTH_JWKS_URL" in message


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"status": 503}, "it answered HTTP 503"),
        ({"body": b"x" * (300 * 1024)}, "its answer is over 262144 bytes"),
        ({"body": b"<html>"}, "its answer is not a JWK set"),
        ({"body": b"[" * 200_000}, "its answer is not a JWK set"),
        ({"body": b'{"keys": []}'}, "its answer is not a JWK set"),
        (
            {"keys": [{**public_jwk(rsa_key(), "k1"), "use": "enc"}, {"kty": "RSA", "n": "AQAB"}]},
            "it holds no signing key with a key id",
        ),
    ],
)
def test_a_broken_jwks_is_401_saying_what_is_wrong(
    jwks: JwksServer, answer: dict[str, Any], reason: str
) -> None:
    for name, value in answer.items():
        setattr(jwks, name, value)
    auth = _auth(jwks.url)
    with pytest.raises(Unauthorized, match="could not be fetched") as refused:
        auth.verify(token())
    assert reason in refused.value.message
    # Within the pause after a failure, nobody makes it fetch again.
    with pytest.raises(Unauthorized):
        auth.verify(token())
    assert jwks.hits == 1


def test_a_slow_jwks_is_given_up_on_time(jwks: JwksServer) -> None:
    jwks.delay_s = 3.0
    auth = _auth(jwks.url, oauth_jwks_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(Unauthorized, match="could not be fetched"):
        auth.verify(token())
    assert time.monotonic() - started < 2.0


def test_unknown_key_ids_do_not_hammer_the_issuer_and_new_keys_are_found(
    jwks: JwksServer,
) -> None:
    keys = JwksKeys(jwks.url, 5.0)
    assert keys.key("k1").key_id == "k1"
    for n in range(20):
        with pytest.raises(Unauthorized, match="is not among the signing keys"):
            keys.key(f"random-{n}")
    assert jwks.hits == 1
    # The issuer rotates in a new key: found once the refresh pause has passed.
    rotating = JwksKeys(jwks.url, 5.0, refresh_pause_s=0.2)
    rotating.key("k1")
    jwks.keys.append(public_jwk(rsa_key(1), "k2"))
    with pytest.raises(Unauthorized):
        rotating.key("k2")
    time.sleep(0.3)
    assert rotating.key("k2").key_id == "k2"
    assert jwks.hits == 3


def test_known_keys_outlive_a_short_outage(jwks: JwksServer) -> None:
    keys = JwksKeys(jwks.url, 5.0, ttl_s=0.1, failure_pause_s=0.0)
    keys.key("k1")
    jwks.status = 500
    time.sleep(0.2)
    assert keys.key("k1").key_id == "k1"  # stale but kept: the issuer is down
    assert jwks.hits == 2
    gone = JwksKeys(jwks.url, 5.0, ttl_s=0.1, failure_pause_s=0.0, max_age_s=0.1)
    jwks.status = 200
    gone.key("k1")
    jwks.status = 500
    time.sleep(0.2)
    with pytest.raises(Unauthorized, match="could not be fetched"):
        gone.key("k1")  # too old to trust without the issuer


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"oauth_issuer": ISSUER, "oauth_jwks_url": "https://idp.example/jwks"}, "PUBLIC_URL"),
        ({"oauth_issuer": ISSUER, "public_url": PUBLIC}, "go together"),
        (
            {"oauth_issuer": "code-exec", "oauth_jwks_url": "https://i/j", "public_url": PUBLIC},
            "must be an https:// URL",
        ),
        (
            {"oauth_issuer": "http://idp.example", "oauth_jwks_url": "https://i/j"},
            "must use https",
        ),
        ({"public_url": "https://code.example/api"}, "with no path"),
        ({"public_url": "https://code.example/?x=1"}, "query or fragment"),
        ({"oauth_scopes": ["a b"]}, "not a scope token"),
        (
            {
                "oauth_issuers": [{"issuer": ISSUER, "jwks_url": "https://i/j"}] * 2,
                "public_url": PUBLIC,
            },
            "needs its own issuer",
        ),
        (
            {
                "oauth_issuers": [
                    {"issuer": ISSUER, "jwks_url": "https://i/j", "algorithms": ["HS256"]}
                ]
            },
            "algorithms",
        ),
    ],
)
def test_oauth_settings_are_checked(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises((RuntimeError, ValidationError), match=problem):
        ApiSettings(jwt_secret=SECRET, _env_file=None, **settings).check()  # type: ignore[arg-type]


def test_oauth_settings_come_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODE_EXEC_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("CODE_EXEC_OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("CODE_EXEC_OAUTH_JWKS_URL", "https://idp.example/jwks")
    monkeypatch.setenv("CODE_EXEC_OAUTH_ALGORITHMS", '["ES256"]')
    monkeypatch.setenv("CODE_EXEC_OAUTH_SCOPES", '["code-exec"]')
    monkeypatch.setenv(
        "CODE_EXEC_OAUTH_ISSUERS", json.dumps([{"issuer": OTHER_ISSUER, "jwks_url": "https://j/k"}])
    )
    settings = ApiSettings(jwt_secret=SECRET, _env_file=None)
    settings.check()
    servers = [(s.issuer, s.jwks_url, s.algorithms) for s in settings.authorization_servers]
    assert servers == [
        (ISSUER, "https://idp.example/jwks", ("ES256",)),
        (OTHER_ISSUER, "https://j/k", ("RS256",)),
    ]
    assert settings.oauth_scopes == ["code-exec"]


def test_blank_oauth_settings_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # As deploy/.env.example leaves them.
    for name in ("PUBLIC_URL", "OAUTH_ISSUER", "OAUTH_JWKS_URL", "API_KEYS_FILE"):
        monkeypatch.setenv(f"CODE_EXEC_{name}", "")
    monkeypatch.setenv("CODE_EXEC_OAUTH_ISSUERS", "[]")
    settings = ApiSettings(jwt_secret=SECRET, _env_file=None)
    settings.check()
    assert settings.public_url is None and settings.api_keys_file is None
    assert settings.authorization_servers == []


def test_the_public_url_is_kept_as_an_origin() -> None:
    settings = ApiSettings(
        jwt_secret=SECRET, public_url="https://Code.Example:8443/", _env_file=None
    )
    assert settings.public_url == "https://code.example:8443"


@contextmanager
def uvicorn_api(settings: ApiSettings, tmp_path: Path) -> Iterator[str]:
    """The API app served by uvicorn on 127.0.0.1 (over the fake backend), in a thread."""
    executor_settings = fake_settings(tmp_path)
    app = create_api_app(settings, lambda: connect(settings, executor_settings, FakeBackend()))
    with serve_in_thread(app, settings.api_port) as url:
        yield url


@pytest.mark.anyio
async def test_the_official_mcp_client_lists_tools_with_an_external_token(
    jwks: JwksServer, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "api_port": port,
        **oauth_settings(jwks.url),
        "public_url": base,
    }
    settings = ApiSettings(_env_file=None, **values)
    with uvicorn_api(settings, tmp_path) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            # Without a token: the SDK's own discovery finds and accepts the metadata.
            refused = await http.post(f"{url}/mcp", json={})
            assert refused.status_code == 401
            where = extract_resource_metadata_from_www_auth(refused)
            assert where == f"{base}/.well-known/oauth-protected-resource/mcp"
            document = ProtectedResourceMetadata.model_validate((await http.get(where)).json())
            assert [str(s) for s in document.authorization_servers] == [ISSUER]
            assert check_resource_allowed(f"{url}/mcp", str(document.resource))
        external = token(aud=f"{base}/mcp", sub="mcp-user")
        async with (
            httpx.AsyncClient(headers=bearer(external), timeout=30) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
        assert {tool.name for tool in tools.tools} == {
            "run_code",
            "open_session",
            "close_session",
            "read_output",
        }
        # The same token for another server's resource is refused.
        async with httpx.AsyncClient(timeout=30) as http:
            other = await http.post(
                f"{url}/mcp", json={}, headers=bearer(token(aud="https://elsewhere.example/mcp"))
            )
        assert other.status_code == 401


def test_a_lacking_scope_is_forbidden_not_unauthorized(jwks: JwksServer) -> None:
    auth = _auth(jwks.url, oauth_scopes=["code-exec:run"])
    with pytest.raises(Forbidden, match="lacks the scope code-exec:run"):
        auth.verify(token())


@pytest.mark.anyio
async def test_a_slow_jwks_holds_no_other_request(jwks: JwksServer, tmp_path: Path) -> None:
    jwks.delay_s = 1.5
    port = free_port()
    values: dict[str, Any] = {"jwt_secret": SECRET, "api_port": port, **oauth_settings(jwks.url)}
    with uvicorn_api(ApiSettings(_env_file=None, **values), tmp_path) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            waiting: list[httpx.Response] = []

            async def external() -> None:
                waiting.append(await http.get(SESSIONS, headers=bearer(token())))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(external)
                assert await anyio.to_thread.run_sync(jwks.asked.wait, 10)
                started = time.monotonic()
                own = await http.get(SESSIONS, headers=bearer(mint("bob")))
                health = await http.get("/health")
                assert time.monotonic() - started < 1.0  # answered while the fetch waits
                assert own.status_code == 200 and health.status_code == 200
                assert not waiting
            assert waiting[0].status_code == 200
