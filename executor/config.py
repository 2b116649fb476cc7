"""Settings of every code-exec process: one base, one section per role.

Every process reads the same environment (prefix CODE_EXEC_, or a .env file):
    SharedSettings      dev mode, the internal token, blank secrets count as missing
    ├── ExecutorSettings    the executor: backend, pools, limits, sessions, paths
    └── ClientSettings      how front-ends reach executors, and the per-user run cap
        └── ApiSettings     (openai_tools.config) the API host: address, tokens, CORS
"""

import secrets
import socket
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.health import Limits
from schemas.languages import Language
from schemas.network import Network, check_allowlist
from schemas.upstream import UpstreamConfig


def default_runtime_dir() -> Path:
    """Where `make` (or an install) puts the sandbox runtime: beside the installation."""
    return Path(sys.prefix) / "share" / "code-exec" / "runtime"


class SharedSettings(BaseSettings):
    """What every role shares: the environment prefix, dev mode and the internal token."""

    model_config = SettingsConfigDict(env_prefix="CODE_EXEC_", env_file=".env", extra="ignore")

    dev_mode: bool = Field(default=False, description="Generate missing secrets, and say so.")
    internal_token: SecretStr | None = Field(
        default=None,
        description="Shared secret of the executor API, sent as the Internal-Auth-Token header.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection that has not sent a request's headers within this is closed.",
    )

    @model_validator(mode="after")
    def _blank_secrets_are_missing(self) -> Self:
        # An empty value (e.g. `CODE_EXEC_INTERNAL_TOKEN=` left blank) is no secret at all.
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and not value.get_secret_value().strip():
                setattr(self, name, None)
        return self

    def require_token(self) -> str:
        """The internal token, or a clear error when a production start has none."""
        if self.internal_token is None:
            raise RuntimeError(
                "CODE_EXEC_INTERNAL_TOKEN is not set. Set it to a long random secret shared "
                "between the executors and the API, or set CODE_EXEC_DEV_MODE=1 to generate "
                "one for local use."
            )
        return self.internal_token.get_secret_value()


class ExecutorSettings(SharedSettings):
    """Every knob of the executor; CODE_EXEC_<NAME> in the environment sets it."""

    host: str = "127.0.0.1"
    port: int = 8001

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
    cpu_limit: float = Field(
        default=1.0,
        ge=0,
        le=1024,
        description=(
            "CPU cores one sandbox may use at most, however many threads or processes it runs "
            "(cgroup cpu.max on v2, the CFS quota on v1); 0 for no quota. Sandboxes also get "
            "equal CPU weights, so under contention each gets a like share."
        ),
    )
    disk_limit_mb: int = 512
    file_size_limit_mb: int = 256
    open_files_limit: int = 1024

    network: Network = Field(
        default=Network.NONE,
        description=(
            "What sandboxed code may reach at most (a request can only narrow it): `none`, "
            "its own loopback; `packages`, also the package indexes below, through the "
            "executor's cache (pip and npm are set up for it); `allowlist`, also the hosts of "
            "network_allowlist. Sandboxes never get a network interface: they reach an HTTP "
            "proxy the executor serves on their loopback."
        ),
    )
    network_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Hosts that `allowlist` reaches: names, '*.domain', or IP addresses, each with an "
            "optional :port (else 80 and 443). A name that resolves to a private or loopback "
            "address is refused; list the address itself to allow it."
        ),
    )
    pypi_index_url: str = Field(
        default="https://pypi.org/simple/", description="The PyPI-compatible index (PEP 503)."
    )
    npm_registry_url: str = Field(
        default="https://registry.npmjs.org/", description="The npm-compatible registry."
    )
    upstream_config: Path | None = Field(
        default=None,
        description=(
            "Code mode: an mcp.json (mcpServers: command/args/env or url/headers, plus tools "
            "and users allowlists) of MCP servers whose tools sandbox code may call through "
            "`tools` (`from tools import NAME`); their credentials stay in the executor."
        ),
    )
    upstream_calls_per_run: int = Field(
        default=200, gt=0, description="Code mode: upstream tool calls one run may make."
    )
    upstream_mb_per_run: int = Field(
        default=16, gt=0, description="Code mode: bytes of upstream results one run may receive."
    )
    upstream_call_timeout_s: float = Field(
        default=30.0, gt=0, description="Code mode: how long one upstream call may take."
    )
    egress_run_mb: int = Field(
        default=1024, gt=0, description="Network traffic one run may move, both ways."
    )
    egress_user_mb_per_hour: int = Field(
        default=4096, gt=0, description="Network traffic one user's runs may move in an hour."
    )
    package_cache_mb: int = Field(
        default=4096, gt=0, description="Disk the package mirror's file cache may hold."
    )
    package_index_ttl_s: float = Field(
        default=600.0, ge=0, description="How long the mirror keeps an index page."
    )
    package_max_file_mb: int = Field(
        default=1024, gt=0, description="The largest package file the mirror fetches."
    )

    session_idle_ttl_s: float = 900.0
    session_max_lifetime_s: float = 4 * 3600.0
    max_sessions_per_user: int = 8
    max_sessions: int = 64
    reaper_interval_s: float = 5.0

    state_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "code-exec")
    runtime_dir: Path = Field(
        default_factory=default_runtime_dir,
        description=(
            "The sandbox runtime (python/, the sandbox venv, and mplconfig/): `make` builds it "
            "in <prefix>/share/code-exec/runtime of the service's venv."
        ),
    )
    sandbox_uid_base: int = Field(
        default=200_000, description="When run as root, each sandbox gets its own host uid here."
    )
    sandbox_uid_count: int = 10_000
    allow_unlimited_processes: bool = Field(
        default=False,
        description=(
            "Start even where no sandbox can get a process or memory limit (not root, and no "
            "cgroup delegated to the executor): a fork bomb or a JavaScript or bash run that "
            "fills memory can then take the host down. Without it the executor refuses to "
            "start there and says how to get the limits."
        ),
    )
    zygote: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "Stateless Python runs in sandboxes forked from a preloaded zygote "
            "(executor/backends/local/zygote.py): `auto` uses it where the host allows it "
            "(root with cgroups) and falls back to bubblewrap sandboxes otherwise; `on` "
            "refuses to start without it; `off` uses bubblewrap for every run."
        ),
    )

    @field_validator("upstream_config", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("network_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):  # from the environment: comma-separated
            return [entry for entry in value.split(",") if entry.strip()]
        return value

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.network_allowlist = list(check_allowlist(self.network_allowlist))
        if self.internal_token is None and self.dev_mode:
            self.internal_token = SecretStr(secrets.token_urlsafe(32))
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s is above max_timeout_s")
        return self

    def limits(self) -> Limits:
        """The limits callers meet, as tool descriptions and /health state them."""
        limits = Limits.model_validate(self, from_attributes=True)
        if self.upstream_config is not None:
            limits.tool_servers = list(UpstreamConfig.load(self.upstream_config).servers)
        return limits


class ClientSettings(SharedSettings):
    """How a front-end (the API, `code-exec mcp`) reaches executors, and its per-user cap."""

    executor_url: str | None = Field(
        default=None, description="A remote executor; the executor runs in-process when unset."
    )
    executor_urls: list[str] = Field(
        default_factory=list,
        description="Several executors (JSON list): runs go to the least-loaded healthy one.",
    )
    max_concurrent_runs_per_user: int = Field(
        default=4, description="Runs one user may have in progress at once, on every front-end."
    )

    @property
    def remote(self) -> bool:
        """Whether the executors are other processes."""
        return bool(self.executor_url or self.executor_urls)

    def check(self) -> None:
        """Fail loudly when a start lacks what it needs."""
        if self.remote and self.internal_token is None:
            raise RuntimeError(
                "CODE_EXEC_EXECUTOR_URL is set but CODE_EXEC_INTERNAL_TOKEN is not: the API "
                "needs the executor's internal token"
            )
