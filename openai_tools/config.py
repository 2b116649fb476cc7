"""Settings of the API host (environment prefix CODE_EXEC_; see executor.config for the base).

Besides its own tokens (HS256, or RS256 by public key or JWKS), the host accepts tokens of
external OAuth authorization servers (OAuthIssuer) as a resource server: the MCP
authorization specification's part. In dev mode, the HS256 secret is generated once and kept
in the state dir (dev_secret), so that tokens survive restarts.
"""

import tempfile
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from executor.config import ClientSettings
from openai_tools.dev_secret import MIN_SECRET_CHARS, dev_secret, dev_secret_path

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_ISSUER_CHARS = 128


def visible(value: str) -> bool:
    """Whether value is non-empty visible ASCII without '"' or '\\' (safe in a quoted header)."""
    return bool(value) and all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in value)


def checked_url(value: str, name: str, *, query: bool = False) -> str:
    """value, if it is an https URL (http only on loopback) with no fragment, else ValueError."""
    if not visible(value):
        raise ValueError(f"{name} must be a URL of visible ASCII characters, not {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an https:// URL, not {value!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"{name} must use https (plain http only on localhost, 127.0.0.1 or [::1]): {value!r}"
        )
    if parts.fragment or "#" in value or (parts.query and not query):
        raise ValueError(f"{name} may not have a {'fragment' if query else 'query or fragment'}")
    return value


class OAuthIssuer(BaseModel):
    """An external authorization server whose access tokens this server accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        max_length=MAX_ISSUER_CHARS,
        description="Its issuer identifier, exactly as tokens carry it in `iss`.",
    )
    jwks_url: str = Field(max_length=2048, description="Where it publishes its signing keys.")
    algorithms: tuple[Literal["RS256", "ES256"], ...] = Field(
        default=("RS256",), min_length=1, description="Signature algorithms accepted from it."
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return checked_url(value, "the issuer")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str) -> str:
        return checked_url(value, "the JWKS URL", query=True)


class ApiSettings(ClientSettings):
    """Every knob of the API host; CODE_EXEC_<NAME> in the environment sets it."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    state_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "code-exec",
        description="The executor's state dir; dev mode keeps its JWT secret under it.",
    )

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 signing secret.")
    jwt_public_key: str | None = Field(
        default=None, description="RS256: PEM text, or a path to a PEM file."
    )
    jwt_private_key: str | None = Field(
        default=None, description="RS256: PEM (or path) to mint tokens here; optional."
    )
    jwks_url: str | None = Field(default=None, description="RS256: verify with this JWKS.")
    jwt_audience: str = "code-exec"
    jwt_issuer: str = "code-exec"
    token_ttl_s: int = 3600
    max_token_ttl_s: int = 7 * 24 * 3600

    public_url: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "This server's origin as clients reach it (https://code.example.com): its MCP "
            "resource is <public_url>/mcp. Unset, it is taken from requests to localhost only."
        ),
    )
    oauth_issuer: str | None = Field(
        default=None,
        max_length=MAX_ISSUER_CHARS,
        description="An external authorization server's issuer, exactly as its tokens' `iss`.",
    )
    oauth_jwks_url: str | None = Field(default=None, description="That issuer's JWKS URL.")
    oauth_algorithms: tuple[Literal["RS256", "ES256"], ...] = Field(
        default=("RS256",), min_length=1, description="Algorithms accepted from that issuer."
    )
    oauth_issuers: list[OAuthIssuer] = Field(
        default_factory=list,
        description='More of them, as JSON: [{"issuer": …, "jwks_url": …, "algorithms": […]}].',
    )
    oauth_scopes: list[str] = Field(
        default_factory=list,
        description="Scopes an external token must all carry (advertised as scopes_supported).",
    )
    oauth_jwks_timeout_s: float = Field(
        default=5.0, gt=0, le=30, description="Time allowed to fetch an issuer's JWKS."
    )

    api_keys: str | None = Field(
        default=None,
        description="user:sha256-hex-of-key pairs, comma-separated (keys are never stored).",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="A file of 'user sha256-hex' lines, read again whenever it changes.",
    )

    cors_origins: list[str] = Field(default_factory=list)

    url_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "HS256 key of signed download URLs (at least 32 characters, not the JWT secret). "
            "Unset, one is made once and kept in the state dir; several API replicas must "
            "share one: set it to the same value on each, or a URL one made fails on another."
        ),
    )
    download_url_ttl_s: int = Field(
        default=300, gt=0, description="How long a signed download URL works, unless asked."
    )
    max_download_url_ttl_s: int = Field(
        default=3600, gt=0, description="The longest a caller may ask a signed URL to work."
    )
    tool_result_urls: Literal["bearer", "signed"] = Field(
        default="bearer",
        description=(
            "The file links in /v1/tools/call results: 'bearer' (fetched with the user's "
            "token) or 'signed' (work without one until download_url_ttl_s has passed)."
        ),
    )

    _dev_secret_file: Path | None = PrivateAttr(default=None)

    @field_validator(
        "public_url",
        "oauth_issuer",
        "oauth_jwks_url",
        "api_keys_file",
        "url_signing_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `CODE_EXEC_PUBLIC_URL=` left blank (as in deploy/.env.example) sets nothing.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(checked_url(value.rstrip("/"), "CODE_EXEC_PUBLIC_URL"))
        if parts.path or parts.username or parts.password:
            raise ValueError(
                "CODE_EXEC_PUBLIC_URL must be this server's origin with no path (e.g. "
                "https://code.example.com): serve code-exec at the root of its own host"
            )
        return f"{parts.scheme}://{parts.netloc.lower()}"

    @field_validator("oauth_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        return None if value is None else checked_url(value, "CODE_EXEC_OAUTH_ISSUER")

    @field_validator("oauth_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else checked_url(value, "CODE_EXEC_OAUTH_JWKS_URL", query=True)

    @field_validator("oauth_scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not visible(scope):
                raise ValueError(f"scope {scope!r} is not a scope token (visible ASCII, no quote)")
        return value

    @model_validator(mode="after")
    def _dev_secret(self) -> Self:
        if self.dev_mode and self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            self.jwt_secret = SecretStr(dev_secret(self.state_dir))
            self._dev_secret_file = dev_secret_path(self.state_dir)
        return self

    @property
    def dev_secret_file(self) -> Path | None:
        """The file the JWT secret was read from, when dev mode kept it there."""
        return self._dev_secret_file

    @property
    def authorization_servers(self) -> list[OAuthIssuer]:
        """Every external authorization server trusted here."""
        single = []
        if self.oauth_issuer and self.oauth_jwks_url:
            single.append(
                OAuthIssuer(
                    issuer=self.oauth_issuer,
                    jwks_url=self.oauth_jwks_url,
                    algorithms=self.oauth_algorithms,
                )
            )
        return single + self.oauth_issuers

    def check(self) -> None:
        """Fail loudly when a production start lacks what it needs."""
        if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            raise RuntimeError(
                "CODE_EXEC_JWT_SECRET is not set: set it to a long random secret, or set "
                "CODE_EXEC_DEV_MODE=1 to generate one for local use (kept in "
                f"{dev_secret_path(self.state_dir)})"
            )
        if self.jwt_algorithm == "RS256" and not (self.jwt_public_key or self.jwks_url):
            raise RuntimeError("RS256 needs CODE_EXEC_JWT_PUBLIC_KEY or CODE_EXEC_JWKS_URL")
        self._check_oauth()
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise RuntimeError(
                f"CODE_EXEC_API_KEYS_FILE {self.api_keys_file} is not a file: create it (one "
                "'user sha256-hex' line per key, as `code-exec key create` prints them)"
            )
        self._check_url_signing()
        super().check()
        if "*" in self.cors_origins:
            raise RuntimeError(
                "CODE_EXEC_CORS_ORIGINS may not be '*': name the origins (credentials are sent)"
            )

    def _check_url_signing(self) -> None:
        if self.download_url_ttl_s > self.max_download_url_ttl_s:
            raise RuntimeError(
                f"CODE_EXEC_DOWNLOAD_URL_TTL_S ({self.download_url_ttl_s}) is above "
                f"CODE_EXEC_MAX_DOWNLOAD_URL_TTL_S ({self.max_download_url_ttl_s}): lower it, "
                "or raise the maximum"
            )
        if self.url_signing_key is None:
            return
        key = self.url_signing_key.get_secret_value()
        if len(key) < MIN_SECRET_CHARS:
            raise RuntimeError(
                f"CODE_EXEC_URL_SIGNING_KEY has {len(key)} characters: set a random key of at "
                f"least {MIN_SECRET_CHARS} (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'), or unset it to have one kept in the state dir"
            )
        if self.jwt_secret is not None and key == self.jwt_secret.get_secret_value():
            raise RuntimeError(
                "CODE_EXEC_URL_SIGNING_KEY is the JWT secret: give download URLs a key of their "
                "own, so that neither kind of token can stand in for the other"
            )

    def _check_oauth(self) -> None:
        if bool(self.oauth_issuer) != bool(self.oauth_jwks_url):
            raise RuntimeError(
                "CODE_EXEC_OAUTH_ISSUER and CODE_EXEC_OAUTH_JWKS_URL go together: set both (the "
                "JWKS URL is `jwks_uri` in <issuer>/.well-known/openid-configuration)"
            )
        servers = self.authorization_servers
        if servers and self.public_url is None:
            raise RuntimeError(
                "an external authorization server is set but CODE_EXEC_PUBLIC_URL is not: set it "
                "to this server's origin (https://…); tokens must name <public_url>/mcp as "
                "their audience"
            )
        issuers = [server.issuer for server in servers]
        if len(set(issuers)) != len(issuers) or self.jwt_issuer in issuers:
            raise RuntimeError(
                "each authorization server needs its own issuer, different from "
                f"CODE_EXEC_JWT_ISSUER ({self.jwt_issuer!r}); issuers: {', '.join(issuers)}"
            )
