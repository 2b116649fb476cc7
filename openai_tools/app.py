"""The API host: one app, its settings, authentication and error envelope; front-ends inside.

    request ─► CORS ─► BodyLimit ─► AuthMiddleware (credentials judged once) ─► routes:
        /v1/tools…                        the OpenAI front-end   (openai_tools.tool_routes)
        /v1/code_interpreter…, /executions the seeds' REST API     (openai_tools.seed_rest)
        /execute, /execute-stream, ws /   the seeds' streaming   (openai_tools.seed_stream)
        /mcp                              MCP over HTTP          (mcp_server.http)
        /v1/auth/token, /health           the host's own
    every front-end ─► the one ExecutorClient the composition root connected (capped per user)
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, Field
from starlette.routing import Route

from executor.errors import ExecutorError, InvalidRequest, Unauthorized
from executor.interface import ExecutorClient
from executor.tools import ToolSet
from executor.web import BodyLimit, install_error_handlers
from mcp_server.http import McpHttp
from openai_tools import seed_rest, seed_stream, tool_routes
from openai_tools.auth import Authenticator, AuthMiddleware, require_user
from openai_tools.config import ApiSettings
from openai_tools.deps import AuthDep, ClientDep
from schemas.text import Text

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[tuple[ExecutorClient, ToolSet]]]
"""Opens the executor client (and the tools described for its limits) for the app's life."""

MAX_BODY_BYTES = 80 * 1024 * 1024
PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/health"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/tools"),
        ("POST", "/v1/auth/token"),
    }
)
"""What anyone may call without a token; every other HTTP request is refused before its body."""


class TokenRequest(BaseModel):
    """Exchange an API key for a short-lived bearer token."""

    api_key: Text = Field(max_length=1024)
    ttl_s: int | None = Field(default=None, gt=0)


def _challenge(exc: ExecutorError) -> dict[str, str]:
    return {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}


def create_api_app(settings: ApiSettings, connect: Connect) -> FastAPI:
    """The API app over the executor client `connect` opens when the app starts."""
    settings.check()
    auth = Authenticator(settings)
    mcp = McpHttp(require_user, allowed_origins=tuple(settings.cors_origins))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with connect() as (client, tools):
            app.state.client = client
            app.state.tools = tools
            mcp.bind(client, tools)
            async with mcp.running():
                yield

    app = FastAPI(
        title="code-exec",
        description=(
            "Sandboxed code execution for LLM agents: OpenAI-compatible tools (run_code, "
            "open_session, close_session), the code interpreter REST API and streaming."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth = auth
    app.state.ws_hub = seed_stream.WsHub()
    # Added innermost first: a request meets CORS, then the body limit, then authentication.
    app.add_middleware(AuthMiddleware, auth=auth, public=PUBLIC_ROUTES)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, small=PUBLIC_ROUTES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    install_error_handlers(app, _challenge)

    @app.get("/health", tags=["health"])
    async def health(client: ClientDep) -> dict[str, Any]:
        """Liveness and the executor's state; no token needed."""
        try:
            executor = await client.health()
        except ExecutorError as exc:
            return {"status": "degraded", "executor": {"error": exc.message}}
        return {"status": "ok", "executor": executor.model_dump(mode="json", exclude_none=True)}

    @app.post("/v1/auth/token", tags=["auth"])
    async def token(auth: AuthDep, body: Annotated[TokenRequest, Body()]) -> dict[str, Any]:
        """A short-lived bearer token for an API key."""
        user = auth.user_for_key(body.api_key)
        ttl = body.ttl_s or settings.token_ttl_s
        if ttl > settings.token_ttl_s:
            raise InvalidRequest(f"ttl_s may be at most {settings.token_ttl_s}")
        return {"access_token": auth.issue(user, ttl), "token_type": "bearer", "expires_in": ttl}

    app.include_router(tool_routes.router)
    app.include_router(seed_rest.router)
    app.include_router(seed_stream.router)
    app.router.routes.append(Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    return app
