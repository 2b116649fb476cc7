"""Bearer tokens (JWT, pyjwt) and API keys.

Tokens are HS256 with a shared secret by default, RS256 with a public key or a JWKS as an
option; 'none' and any algorithm but the configured one are refused. A token's subject is the
user: it owns the sessions it opens. API keys are configured as sha256 digests and exchanged
for short-lived tokens.
"""

import hashlib
import hmac
import time
from pathlib import Path

import jwt

from executor.errors import InvalidRequest, Unauthorized
from openai_tools.config import ApiSettings


def _pem(value: str) -> str:
    return value if "-----BEGIN" in value else Path(value).read_text()


def hash_api_key(key: str) -> str:
    """The sha256 hex digest under which an API key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


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
        return subject

    def user_for_key(self, key: str) -> str:
        """The user an API key belongs to (constant-time comparison of digests)."""
        digest = hash_api_key(key)
        for known, user in self._keys.items():
            if hmac.compare_digest(known, digest):
                return user
        raise Unauthorized("unknown API key")
