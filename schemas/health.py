"""What an executor reports of itself: pools, backend, the limits in force."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.network import Network


class Limits(BaseModel):
    """The limits a caller meets (the executor's settings say them); tool descriptions are
    written from these."""

    default_timeout_s: float
    max_timeout_s: float
    memory_limit_mb: int
    default_output_tokens: int
    max_output_tokens: int
    session_idle_ttl_s: float
    max_code_bytes: int
    network: Network = Network.NONE
    tool_servers: list[str] = Field(
        default_factory=list,
        description="Code mode: the upstream MCP servers whose tools code may call.",
    )


class PoolHealth(BaseModel):
    """One language's warm pool."""

    size: int
    ready: int
    starting: int = 0
    waiting: int = 0
    created: int = 0
    last_error: str | None = None
    failing: int = Field(
        default=0, description="Sandbox starts that failed in a row since the last that worked."
    )


class BackendHealth(BaseModel):
    """What a backend says of its isolation and limits (each backend adds its own fields)."""

    model_config = ConfigDict(extra="allow")

    backend: str
    live_sandboxes: int = 0
    policy: dict[str, Any] | None = Field(
        default=None, description="The sandbox policy in force, as the backend applies it."
    )


class RouteHealth(BaseModel):
    """One executor as a routing client sees it."""

    url: str
    healthy: bool
    ready: dict[str, int] = Field(default_factory=dict)
    error: str | None = None
    in_flight: int = 0


class UpstreamHealth(BaseModel):
    """Code mode: one upstream MCP server, as the executor's client sees it."""

    connected: bool
    tools: int = Field(description="Tools it lists (before the allowlists).")
    error: str | None = Field(default=None, description="Why it is not connected.")


class Health(BaseModel):
    """An executor's (or a router's) state, for /health."""

    # degraded: a pool's latest sandbox start failed (its last_error says why).
    status: Literal["ok", "degraded", "down"] = "ok"
    pools: dict[str, PoolHealth] = Field(default_factory=dict)
    backend: BackendHealth | None = None
    sessions: int = 0
    uptime_s: float = 0.0
    limits: Limits | None = None
    upstream: dict[str, UpstreamHealth] | None = Field(
        default=None, description="Code mode: each upstream MCP server's state."
    )
    executors: dict[str, RouteHealth] | None = Field(
        default=None, description="Several executors: each one's state (routing clients only)."
    )
