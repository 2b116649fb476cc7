"""Settings of the API host (environment prefix CODE_EXEC_; see executor.config for the base)."""

import secrets
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from executor.config import ClientSettings


class ApiSettings(ClientSettings):
    """Every knob of the API host; CODE_EXEC_<NAME> in the environment sets it."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000

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

    api_keys: str | None = Field(
        default=None,
        description="user:sha256-hex-of-key pairs, comma-separated (keys are never stored).",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file of 'user sha256-hex' lines."
    )

    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _dev_secret(self) -> Self:
        if self.dev_mode and self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            self.jwt_secret = SecretStr(secrets.token_urlsafe(32))
        return self

    def check(self) -> None:
        """Fail loudly when a production start lacks what it needs."""
        if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            raise RuntimeError(
                "CODE_EXEC_JWT_SECRET is not set: set it to a long random secret, or set "
                "CODE_EXEC_DEV_MODE=1 to generate one for local use"
            )
        if self.jwt_algorithm == "RS256" and not (self.jwt_public_key or self.jwks_url):
            raise RuntimeError("RS256 needs CODE_EXEC_JWT_PUBLIC_KEY or CODE_EXEC_JWKS_URL")
        super().check()
        if "*" in self.cors_origins:
            raise RuntimeError(
                "CODE_EXEC_CORS_ORIGINS may not be '*': name the origins (credentials are sent)"
            )
