"""Settings of the executor process (environment prefix CODE_EXEC_)."""

import secrets
import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.languages import Language

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ExecutorSettings(BaseSettings):
    """Every knob of the executor; CODE_EXEC_<NAME> in the environment sets it."""

    model_config = SettingsConfigDict(env_prefix="CODE_EXEC_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8001
    dev_mode: bool = Field(
        default=False, description="Generate a random internal token when none is set."
    )
    internal_token: SecretStr | None = Field(
        default=None, description="Shared secret callers send as the Internal-Auth-Token header."
    )

    backend: Literal["local", "e2b"] = "local"
    e2b_api_key: SecretStr | None = Field(
        default=None, description="E2B API key; E2B_API_KEY in the environment works too."
    )
    e2b_templates: dict[Language, str] = Field(
        default_factory=dict,
        description="E2B template per language (default: E2B's code-interpreter template).",
    )
    e2b_creates_per_s: float = Field(
        default=1.0, description="Sandbox creations per second (E2B Hobby 1, Pro 5)."
    )
    e2b_sandbox_timeout_s: int = Field(
        default=600, description="E2B lifetime, extended while a session is used."
    )
    e2b_executor_name: str = Field(
        default_factory=lambda: socket.gethostname(),
        description="Tags this executor's E2B sandboxes, to find leftovers after a crash.",
    )
    pool_sizes: dict[Language, int] = Field(
        default_factory=lambda: {
            Language.PYTHON: 4,
            Language.JAVASCRIPT: 1,
            Language.BASH: 1,
            Language.C: 1,
        },
        description="Warm sandboxes kept ready per language.",
    )
    pool_wait_s: float = Field(default=10.0, description="How long a run waits for a sandbox.")
    max_concurrent_starts: int = Field(default=2, description="Sandboxes started at once.")

    default_timeout_s: float = 30.0
    max_timeout_s: float = 300.0
    interrupt_grace_s: float = Field(
        default=2.0, description="After a session timeout, how long to wait for the interrupt."
    )
    max_code_bytes: int = 1024 * 1024
    max_output_bytes: int = Field(
        default=1024 * 1024, description="Bytes of each stream kept (head and tail halves)."
    )
    max_file_bytes: int = 64 * 1024 * 1024

    default_output_tokens: int = Field(
        default=2000, description="Token budget of a result when the request names none."
    )
    max_output_tokens: int = 100_000
    min_output_tokens: int = 100
    output_ttl_s: float = Field(default=3600.0, description="How long cut outputs stay readable.")
    output_store_mb: int = Field(default=1024, description="Disk kept for cut outputs in all.")
    output_spill_mb: int = Field(default=64, description="Bytes of one stream kept on disk.")

    memory_limit_mb: int = 1024
    pids_limit: int = 128
    disk_limit_mb: int = 512
    file_size_limit_mb: int = 256
    open_files_limit: int = 1024

    session_idle_ttl_s: float = 900.0
    session_max_lifetime_s: float = 4 * 3600.0
    max_sessions_per_user: int = 8
    max_sessions: int = 64
    reaper_interval_s: float = 5.0

    state_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "code-exec")
    runtime_dir: Path = Field(
        default=_PROJECT_ROOT / ".runtime",
        description="Built by `make`: python/ (the sandbox venv) and mplconfig/.",
    )
    sandbox_uid_base: int = Field(
        default=200_000, description="When run as root, each sandbox gets its own host uid here."
    )
    sandbox_uid_count: int = 10_000

    @model_validator(mode="after")
    def _token_or_dev_mode(self) -> "ExecutorSettings":
        # An empty value (e.g. `CODE_EXEC_INTERNAL_TOKEN=` left blank) is no secret at all.
        for name in ("internal_token", "e2b_api_key"):
            value = getattr(self, name)
            if value is not None and not value.get_secret_value().strip():
                setattr(self, name, None)
        if self.internal_token is None and self.dev_mode:
            self.internal_token = SecretStr(secrets.token_urlsafe(32))
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s is above max_timeout_s")
        return self

    def require_token(self) -> str:
        """The internal token, or a clear error when a production start has none."""
        if self.internal_token is None:
            raise RuntimeError(
                "CODE_EXEC_INTERNAL_TOKEN is not set. Set it to a long random secret shared "
                "with the API service, or set CODE_EXEC_DEV_MODE=1 to generate one for local use."
            )
        return self.internal_token.get_secret_value()
