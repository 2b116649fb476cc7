"""Who is calling: bearer tokens (JWT, pyjwt) and API keys, checked once per request.

A token is routed by its `iss` claim (read unverified, only to choose) to the one issuer
that may have made it, and then verified completely against that issuer alone:

- this server's own tokens (`iss` CODE_EXEC_JWT_ISSUER): HS256 with a shared secret, or RS256
  with a public key or a JWKS; their subject is the user as it stands;
- tokens of external OAuth authorization servers (the MCP authorization specification; this
  server is their resource server): RS256 or ES256 with the issuer's JWKS, audience this
  server's resource identifier (<public_url>/mcp, or <public_url>); their user is
  `<issuer>#<sub>`. An issuer has no '#', so two issuers never name the same user, and this
  server's own subjects may not contain '://', so no own token names an external user.

'none', and any algorithm an issuer is not configured for, are refused (so is HS256 signed
with a public key). A JWKS is fetched with a time and size limit, kept five minutes, fetched
again for an unknown key id at most every 30 s, and not at all for 5 s after a failure.

AuthMiddleware reads the credentials of every HTTP and WebSocket request once (the
Authorization header, or ?token= on a WebSocket, which browsers cannot give headers) and
leaves the verdict in the ASGI scope; routes, the WebSocket endpoint and the MCP front-end
ask require_user for it. Public routes simply never ask. A GET without credentials but with
?signature= (a signed download URL, which a browser follows) goes on to its route too: the
download route checks the signature against the file it serves (deps.download_user); every
other route asks require_user, which refuses it as the middleware would have. Every 401
carries a challenge that names this server's protected resource metadata (RFC 9728), where
clients find the authorization servers. API keys are configured as sha256 digests and
exchanged for short-lived tokens; a keys file is read again when it changes.
"""

import functools
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import jwt
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executor.errors import ExecutorError, Forbidden, InvalidRequest, Unauthorized
from executor.web import error_response
from openai_tools.config import ApiSettings, OAuthIssuer
from openai_tools.jwks import JwksKeys
from schemas.text import check_text

log = logging.getLogger(__name__)

SCOPE_KEY = "code_exec.auth"
MAX_SUBJECT_CHARS = 256
MAX_CREDENTIALS_CHARS = 16 * 1024
MAX_KEY_ID_CHARS = 256
MAX_KEYS_FILE_BYTES = 1024 * 1024
MAX_DESCRIPTION_CHARS = 300
MAX_FETCH_THREADS = 4
RESOURCE_NAME = "code-exec"
METADATA_PATH = "/.well-known/oauth-protected-resource"
MCP_PATH = "/mcp"
_LOOPBACK_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")


def _pem(value: str) -> str:
    if "-----BEGIN" in value:
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise RuntimeError(f"cannot read the PEM key {value}: {exc}") from None


def hash_api_key(key: str) -> str:
    """The sha256 hex digest under which an API key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


MISSING = "missing Authorization: Bearer <token> (get one at /v1/auth/token)"


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized(MISSING)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def issue_token(settings: ApiSettings, user: str, ttl_s: int | None = None) -> str:
    """A token of this server's own for user, valid ttl_s seconds (default token_ttl_s)."""
    ttl = ttl_s or settings.token_ttl_s
    if ttl <= 0 or ttl > settings.max_token_ttl_s:
        raise InvalidRequest(f"ttl must be 1 to {settings.max_token_ttl_s} seconds")
    if not user or "://" in user or len(user) > MAX_SUBJECT_CHARS:
        raise InvalidRequest(
            f"user {user[:80]!r}: a user name is 1 to {MAX_SUBJECT_CHARS} characters without '://'"
        )
    now = int(time.time())
    claims = {
        "sub": user,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + ttl,
    }
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is None:
            raise RuntimeError(
                "CODE_EXEC_JWT_SECRET is not set: set it to the secret of the server that will "
                "check the token, or use dev mode (`code-exec token create --dev`) to sign with "
                "the secret a dev server (`code-exec serve`) keeps in the same "
                f"CODE_EXEC_STATE_DIR ({settings.state_dir})"
            )
        return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
    if not settings.jwt_private_key:
        raise InvalidRequest(
            "this server verifies RS256 tokens but has no private key to issue them; "
            "get a token from your identity provider"
        )
    return jwt.encode(claims, _pem(settings.jwt_private_key), algorithm="RS256")


@dataclass
class TrustedIssuer:
    """One issuer whose tokens are accepted, and how they are checked.

    Exactly one of key (a shared secret or a PEM public key) and jwks is set. A user is
    namespace + the token's subject: "" for this server's own tokens, '<issuer>#' for others.
    """

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    namespace: str
    renew: str
    key: str | None = None
    jwks: JwksKeys | None = None
    scopes: tuple[str, ...] = ()
    external: bool = False

    def may_fetch(self, header: dict[str, Any]) -> bool:
        """Whether verifying a token with this header may have to fetch keys (blocking)."""
        kid = header.get("kid")
        return self.jwks is not None and isinstance(kid, str) and self.jwks.cached(kid) is None

    def verify(self, token: str, header: dict[str, Any]) -> str:
        """The user the token names, or Unauthorized (Forbidden: a scope is missing)."""
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized(
                f"invalid token: algorithm {str(alg)[:20]!r} is not accepted from issuer "
                f"{self.issuer!r} (accepted: {', '.join(self.algorithms)})"
            )
        key: Any = self.key
        if self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid or len(kid) > MAX_KEY_ID_CHARS:
                raise Unauthorized("invalid token: its header names no key id (kid)")
            jwk = self.jwks.key(kid)
            if jwk.algorithm_name != alg:
                raise Unauthorized(
                    f"invalid token: it is signed with {alg} but key {kid!r} is an "
                    f"{jwk.algorithm_name} key"
                )
            key = jwk.key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(self.audiences),
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized(f"the token has expired; {self.renew}") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                "the token is not for this service (its audience must be "
                f"{' or '.join(map(repr, self.audiences))})"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        self._check_scopes(claims)
        return self._user(claims.get("sub"))

    def _check_scopes(self, claims: dict[str, Any]) -> None:
        if not self.scopes:
            return
        granted = claims.get("scope", claims.get("scp", ""))
        have = set(granted.split() if isinstance(granted, str) else granted or ())
        missing = [scope for scope in self.scopes if scope not in have]
        if missing:
            raise Forbidden(
                f"the token lacks the scope {' '.join(missing)}; ask {self.issuer} for a token "
                f"with the scopes {' '.join(self.scopes)}"
            )

    def _user(self, subject: object) -> str:
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("invalid token: no subject")
        try:
            check_text(subject)
        except ValueError:
            raise Unauthorized("invalid token: the subject is not valid Unicode") from None
        if not self.external and "://" in subject:
            raise Unauthorized(
                "invalid token: this server's own subjects may not contain '://' (that form "
                "names users of external authorization servers)"
            )
        user = self.namespace + subject
        if len(user) > MAX_SUBJECT_CHARS:
            raise Unauthorized(f"invalid token: the subject is over {MAX_SUBJECT_CHARS} characters")
        return user


@dataclass(frozen=True)
class Verdict:
    """What the credentials of one request came to: a user, or why there is none.

    code is the RFC 6750 error code for the challenge: None when no credentials came,
    'invalid_request' when they were malformed, 'invalid_token' when a token was refused,
    'insufficient_scope' when it lacked a scope.
    """

    user: str | None
    error: ExecutorError | None = None
    code: str | None = None


class Authenticator:
    """Issues this server's tokens, verifies every issuer's, and speaks for the resource."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.own = self._own_issuer(settings)
        self.issuers = {self.own.issuer: self.own}
        for server in settings.authorization_servers:
            self.issuers[server.issuer] = self._external_issuer(settings, server)
        self._static_keys = self._parse_keys(
            (user, digest)
            for user, _, digest in (
                item.strip().partition(":") for item in (settings.api_keys or "").split(",")
            )
        )
        self._file_keys: dict[str, str] = {}
        self._file_stamp: tuple[int, int, int] | None = None
        self._fetchers: anyio.CapacityLimiter | None = None

    @staticmethod
    def _own_issuer(settings: ApiSettings) -> TrustedIssuer:
        own = TrustedIssuer(
            issuer=settings.jwt_issuer,
            audiences=(settings.jwt_audience,),
            algorithms=(settings.jwt_algorithm,),
            namespace="",
            renew="get a new one at /v1/auth/token",
        )
        if settings.jwt_algorithm == "HS256":
            assert settings.jwt_secret is not None
            own.key = settings.jwt_secret.get_secret_value()
        elif settings.jwks_url:
            own.jwks = JwksKeys(settings.jwks_url, settings.oauth_jwks_timeout_s)
        else:
            assert settings.jwt_public_key is not None
            own.key = _pem(settings.jwt_public_key)
        return own

    @staticmethod
    def _external_issuer(settings: ApiSettings, server: OAuthIssuer) -> TrustedIssuer:
        assert settings.public_url is not None
        return TrustedIssuer(
            issuer=server.issuer,
            audiences=(settings.public_url + MCP_PATH, settings.public_url),
            algorithms=server.algorithms,
            namespace=f"{server.issuer}#",
            renew=f"get a new one from {server.issuer}",
            jwks=JwksKeys(server.jwks_url, settings.oauth_jwks_timeout_s),
            scopes=tuple(settings.oauth_scopes),
            external=True,
        )

    @staticmethod
    def _parse_keys(pairs: Iterable[Sequence[str]]) -> dict[str, str]:
        return {digest.lower(): user for user, digest in pairs if user and digest}

    def issue(self, user: str, ttl_s: int | None = None) -> str:
        """A signed token for user, valid ttl_s seconds."""
        return issue_token(self.settings, user, ttl_s)

    def route(self, token: str) -> tuple[TrustedIssuer, dict[str, Any]]:
        """The issuer a token claims (read unverified, only to choose), and its header."""
        if len(token) > MAX_CREDENTIALS_CHARS:
            raise Unauthorized(f"invalid token: it is over {MAX_CREDENTIALS_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        issuer = claims.get("iss")
        trusted = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if trusted is None:
            raise Unauthorized(
                f"invalid token: its issuer {str(issuer)[:100]!r} is not trusted here "
                f"(trusted: {', '.join(map(repr, self.issuers))})"
            )
        return trusted, header

    def verify(self, token: str) -> str:
        """The user a token names, or Unauthorized saying why it is refused (may block)."""
        trusted, header = self.route(token)
        return trusted.verify(token, header)

    async def judge(self, scope: Scope) -> Verdict:
        """The verdict on a request's credentials (a JWKS fetch runs off the event loop)."""
        try:
            token = _credentials(scope)
        except Unauthorized as exc:
            return Verdict(None, exc, "invalid_request")
        if token is None:
            return Verdict(None, Unauthorized(MISSING))
        try:
            trusted, header = self.route(token)
            if trusted.may_fetch(header):
                # In threads of its own, so that a slow JWKS holds none the loop needs.
                self._fetchers = self._fetchers or anyio.CapacityLimiter(MAX_FETCH_THREADS)
                verify = functools.partial(trusted.verify, token, header)
                return Verdict(await anyio.to_thread.run_sync(verify, limiter=self._fetchers))
            return Verdict(trusted.verify(token, header))
        except Forbidden as exc:
            return Verdict(None, exc, "insufficient_scope")
        except Unauthorized as exc:
            return Verdict(None, exc, "invalid_token")

    def user_for_key(self, key: str) -> str:
        """The user an API key belongs to (constant-time comparison of digests)."""
        digest = hash_api_key(key)
        user = None
        for keys in (self._static_keys, self._keys_of_file()):
            for known, owner in keys.items():
                if hmac.compare_digest(known, digest):
                    user = owner
        if user is None:
            raise Unauthorized("unknown API key")
        return user

    def _keys_of_file(self) -> dict[str, str]:
        """The keys file's keys, read again when its inode, size or mtime has changed."""
        path = self.settings.api_keys_file
        if path is None:
            return {}
        try:
            info = path.stat()
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
            if stamp != self._file_stamp:
                if info.st_size > MAX_KEYS_FILE_BYTES:
                    raise OSError(f"it is over {MAX_KEYS_FILE_BYTES} bytes")
                lines = path.read_text().splitlines()
                self._file_keys = self._parse_keys(
                    line.split() for line in lines if len(line.split()) == 2 and line[:1] != "#"
                )
                self._file_stamp = stamp
        except (OSError, UnicodeDecodeError) as exc:
            # Fail closed: a key removed with its file must stop working.
            log.warning("API keys file %s unreadable, its keys refused: %s", path, exc)
            self._file_keys, self._file_stamp = {}, None
        return self._file_keys

    def public_base(self, scope: Scope) -> str | None:
        """This server's origin: CODE_EXEC_PUBLIC_URL, else the request's own on localhost."""
        if self.settings.public_url is not None:
            return self.settings.public_url
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        if scope.get("scheme") in ("http", "https") and _LOOPBACK_HOST.fullmatch(host):
            return f"{scope['scheme']}://{host}"
        return None

    def resource_metadata(self, base: str, resource_path: str) -> dict[str, Any]:
        """The RFC 9728 protected resource metadata of base + resource_path ('' or '/mcp')."""
        document: dict[str, Any] = {"resource": base + resource_path}
        servers = self.settings.authorization_servers
        if servers:
            document["authorization_servers"] = [server.issuer for server in servers]
        document["bearer_methods_supported"] = ["header"]
        if self.settings.oauth_scopes:
            document["scopes_supported"] = list(self.settings.oauth_scopes)
        document["resource_name"] = RESOURCE_NAME
        return document

    def challenge(self, scope: Scope, verdict: Verdict | None) -> str:
        """The WWW-Authenticate value of a refusal: where the metadata is, and what was wrong."""
        params = []
        base = self.public_base(scope)
        if base is not None:
            path = scope.get("path", "")
            mcp = path == MCP_PATH or path.startswith(MCP_PATH + "/")
            params.append(f'resource_metadata="{base}{METADATA_PATH}{MCP_PATH if mcp else ""}"')
        if verdict is not None and verdict.code is not None:
            params.append(f'error="{verdict.code}"')
            if verdict.code == "insufficient_scope":
                params.append(f'scope="{" ".join(self.settings.oauth_scopes)}"')
            if verdict.error is not None:
                params.append(f'error_description="{_quotable(verdict.error.message)}"')
        return f"Bearer {', '.join(params)}" if params else "Bearer"


def _quotable(text: str) -> str:
    """text as an RFC 6750 error_description may hold it: printable ASCII, no quote or '\\'."""
    text = text.replace('"', "'").replace("\\", "/")
    text = "".join(c if 0x20 <= ord(c) <= 0x7E else "?" for c in text)
    return text if len(text) <= MAX_DESCRIPTION_CHARS else text[: MAX_DESCRIPTION_CHARS - 3] + "..."


def _credentials(scope: Scope) -> str | None:
    """The bearer token of a request, None when it brings none, Unauthorized when malformed."""
    if scope["type"] == "websocket":
        raw = scope.get("query_string", b"")
        if len(raw) > 2 * MAX_CREDENTIALS_CHARS:
            raise Unauthorized(f"the query string is over {2 * MAX_CREDENTIALS_CHARS} bytes")
        query: dict[str, list[str]] = parse_qs(raw.decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization")
    if authorization is None:
        return None
    if len(authorization) > MAX_CREDENTIALS_CHARS:
        raise Unauthorized(
            f"the Authorization header is over {MAX_CREDENTIALS_CHARS} bytes; a token is shorter"
        )
    return bearer_token(authorization.decode("latin-1"))


class AuthMiddleware:
    """Judges every HTTP and WebSocket request's credentials once; the verdict goes in scope.

    An HTTP request without a user is answered 401 here, before its body is read, unless it is
    for one of the public routes: a caller with no token cannot make the server hold a body.
    Every 401 answer (here or from a route) carries this server's challenge. A GET that brings
    a signature and no credentials is let through: its route decides (see the module's doc).
    """

    def __init__(
        self, app: ASGIApp, auth: Authenticator, public: frozenset[tuple[str, str]]
    ) -> None:
        self.app = app
        self.auth = auth
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Judge, refuse the unauthenticated (but on public routes), pass the rest on."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        verdict = await self.auth.judge(scope)
        scope[SCOPE_KEY] = verdict
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if (
            verdict.user is None
            and scope["method"] != "OPTIONS"
            and (scope["method"], scope["path"]) not in self.public
            and not _signed_get(scope, verdict)
        ):
            error = verdict.error or Unauthorized("invalid credentials")
            challenge = self.auth.challenge(scope, verdict)
            await error_response(error, {"WWW-Authenticate": challenge})(scope, receive, send)
            return

        async def send_challenged(message: Message) -> None:
            # A 401 from a route (an unknown API key) carries the same challenge.
            if message["type"] == "http.response.start" and message["status"] == 401:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"www-authenticate"
                ]
                challenge = self.auth.challenge(scope, verdict).encode("latin-1")
                message = {**message, "headers": [*headers, (b"www-authenticate", challenge)]}
            await send(message)

        await self.app(scope, receive, send_challenged)


# The one route a signature opens (a kept file's download): no other route is let through
# without credentials, whether or not it would ask for a user itself.
_SIGNED_PATH = re.compile(r"^(?:/v1)?/executions/[^/]+/files/.+$")


def _signed_get(scope: Scope, verdict: Verdict) -> bool:
    """Whether a request is a GET of a download with ?signature= and no credentials at all
    (a signed URL)."""
    if scope["method"] != "GET" or verdict.user is not None or verdict.code is not None:
        return False
    if not _SIGNED_PATH.match(scope["path"]):
        return False
    raw = scope.get("query_string", b"")
    return len(raw) <= 2 * MAX_CREDENTIALS_CHARS and "signature" in parse_qs(raw.decode("latin-1"))


def require_user(scope: Scope) -> str:
    """The authenticated user of a request, or the Unauthorized its credentials earned."""
    verdict: Verdict | None = scope.get(SCOPE_KEY)
    if verdict is None:
        raise Unauthorized("this request was not authenticated")
    if verdict.user is None:
        raise verdict.error or Unauthorized("invalid credentials")
    user: str = verdict.user
    return user
