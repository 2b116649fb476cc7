"""Who is calling: bearer tokens (JWT, pyjwt) and API keys, checked once per request.

Tokens are HS256 with a shared secret by default, RS256 with a public key or a JWKS as an
option; 'none' and any algorithm but the configured one are refused. A token's subject is the
user: it owns the sessions it opens. API keys are configured as sha256 digests and exchanged
for short-lived tokens.

AuthMiddleware reads the credentials of every HTTP and WebSocket request once (the
Authorization header, or ?token= on a WebSocket, which browsers cannot give headers) and
leaves the verdict in the ASGI scope; routes, the WebSocket endpoint and the MCP front-end
ask require_user for it. Public routes simply never ask.
"""

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from executor.errors import InvalidRequest, Unauthorized
from executor.web import error_response
from openai_tools.config import ApiSettings
from schemas.text import check_text

SCOPE_KEY = "code_exec.auth"
MAX_SUBJECT_CHARS = 256


def _pem(value: str) -> str:
    return value if "-----BEGIN" in value else Path(value).read_text()


def hash_api_key(key: str) -> str:
    """The sha256 hex digest under which an API key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token> (get one at /v1/auth/token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


@dataclass(frozen=True)
class Verdict:
    """What the credentials of one request came to: a user, or why there is none."""

    user: str | None
    error: Unauthorized | None = None


class Authenticator:
    """Issues and verifies the API's tokens."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        self._keys = self._load_keys()

    def _load_keys(self) -> dict[str, str]:
        pairs: list[tuple[str, str]] = []
        if self.settings.api_keys:
            for item in self.settings.api_keys.split(","):
                user, _, digest = item.strip().partition(":")
                if user and digest:
                    pairs.append((user, digest.lower()))
        if self.settings.api_keys_file:
            for line in self.settings.api_keys_file.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and not line.startswith("#"):
                    pairs.append((parts[0], parts[1].lower()))
        return {digest: user for user, digest in pairs}

    def issue(self, user: str, ttl_s: int | None = None) -> str:
        """A signed token for user, valid ttl_s seconds."""
        settings = self.settings
        ttl = ttl_s or settings.token_ttl_s
        if ttl <= 0 or ttl > settings.max_token_ttl_s:
            raise InvalidRequest(f"ttl must be 1 to {settings.max_token_ttl_s} seconds")
        now = int(time.time())
        claims = {
            "sub": user,
            "aud": settings.jwt_audience,
            "iss": settings.jwt_issuer,
            "iat": now,
            "exp": now + ttl,
        }
        if settings.jwt_algorithm == "HS256":
            assert settings.jwt_secret is not None
            return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
        if not settings.jwt_private_key:
            raise InvalidRequest(
                "this server verifies RS256 tokens but has no private key to issue them; "
                "get a token from your identity provider"
            )
        return jwt.encode(claims, _pem(settings.jwt_private_key), algorithm="RS256")

    def verify(self, token: str) -> str:
        """The user a token names, or Unauthorized saying why it is refused."""
        settings = self.settings
        try:
            if settings.jwt_algorithm == "HS256":
                assert settings.jwt_secret is not None
                key: object = settings.jwt_secret.get_secret_value()
            elif self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                assert settings.jwt_public_key is not None
                key = _pem(settings.jwt_public_key)
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[settings.jwt_algorithm],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired; get a new one at /v1/auth/token") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"the token is not for this service (audience must be {settings.jwt_audience!r})"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("invalid token: no subject")
        try:
            check_text(subject)
        except ValueError:
            raise Unauthorized("invalid token: the subject is not valid Unicode") from None
        if len(subject) > MAX_SUBJECT_CHARS:
            raise Unauthorized(f"invalid token: the subject is over {MAX_SUBJECT_CHARS} characters")
        return subject

    async def judge(self, scope: Scope) -> Verdict:
        """The verdict on a request's credentials (a JWKS lookup runs off the event loop)."""
        try:
            token = _credentials(scope)
            if self._jwks is not None:
                return Verdict(await asyncio.to_thread(self.verify, token))
            return Verdict(self.verify(token))
        except Unauthorized as exc:
            return Verdict(None, exc)

    def user_for_key(self, key: str) -> str:
        """The user an API key belongs to (constant-time comparison of digests)."""
        digest = hash_api_key(key)
        for known, user in self._keys.items():
            if hmac.compare_digest(known, digest):
                return user
        raise Unauthorized("unknown API key")


def _credentials(scope: Scope) -> str:
    if scope["type"] == "websocket":
        query: dict[str, list[str]] = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization")
    return bearer_token(authorization.decode("latin-1") if authorization is not None else None)


class AuthMiddleware:
    """Judges every HTTP and WebSocket request's credentials once; the verdict goes in scope.

    An HTTP request without a user is answered 401 here, before its body is read, unless it is
    for one of the public routes: a caller with no token cannot make the server hold a body.
    """

    def __init__(
        self, app: ASGIApp, auth: Authenticator, public: frozenset[tuple[str, str]]
    ) -> None:
        self.app = app
        self.auth = auth
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Judge, refuse the unauthenticated (but on public routes), pass the rest on."""
        if scope["type"] in ("http", "websocket"):
            verdict = await self.auth.judge(scope)
            scope[SCOPE_KEY] = verdict
            if (
                scope["type"] == "http"
                and verdict.user is None
                and scope["method"] != "OPTIONS"
                and (scope["method"], scope["path"]) not in self.public
            ):
                error = verdict.error or Unauthorized("invalid credentials")
                response = error_response(error, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def require_user(scope: Scope) -> str:
    """The authenticated user of a request, or the Unauthorized its credentials earned."""
    verdict: Verdict | None = scope.get(SCOPE_KEY)
    if verdict is None:
        raise Unauthorized("this request was not authenticated")
    if verdict.user is None:
        raise verdict.error or Unauthorized("invalid credentials")
    user: str = verdict.user
    return user
