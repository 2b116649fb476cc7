"""The API host: one app, its settings, authentication and error envelope; front-ends inside.

    request ─► CORS ─► BodyLimit ─► AuthMiddleware (credentials judged once) ─► routes:
        /v1/tools…                        the OpenAI front-end   (openai_tools.tool_routes)
        /v1/code_interpreter…, /executions the seeds' REST API     (openai_tools.seed_rest)
        /execute, /execute-stream, ws /   the seeds' streaming   (openai_tools.seed_stream)
        /mcp                              MCP over HTTP          (mcp_server.http)
        /v1/auth/token, /health           the host's own
        /.well-known/oauth-protected-resource[/mcp]  RFC 9728 metadata (openai_tools.auth)
    every front-end ─► the one ExecutorClient the composition root connected (capped per user)
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.routing import Route

from executor.errors import ExecutorError, InvalidRequest, NotFound
from executor.interface import ExecutorClient
from executor.tools import ToolSet
from executor.web import BodyLimit, install_error_handlers
from mcp_server.http import McpHttp
from openai_tools import seed_rest, seed_stream, tool_routes
from openai_tools.auth import MCP_PATH, METADATA_PATH, Authenticator, AuthMiddleware, require_user
from openai_tools.config import ApiSettings
from openai_tools.deps import AuthDep, ClientDep
from openai_tools.signed_urls import UrlSigner
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
        ("GET", METADATA_PATH),
        ("GET", METADATA_PATH + MCP_PATH),
    }
)
"""What anyone may call without a token; every other HTTP request is refused before its body."""


class TokenRequest(BaseModel):
    """Exchange an API key for a short-lived bearer token."""

    api_key: Text = Field(max_length=1024)
    ttl_s: int | None = Field(default=None, gt=0)


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
    app.state.signer = UrlSigner.of(settings)
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
    install_error_handlers(app)  # 401s get their challenge in AuthMiddleware

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

    @app.get(METADATA_PATH, tags=["auth"])
    @app.get(METADATA_PATH + MCP_PATH, tags=["auth"])
    async def protected_resource(request: Request) -> JSONResponse:
        """RFC 9728 metadata of this server (/mcp's under …/mcp): where its tokens come from."""
        base = auth.public_base(request.scope)
        if base is None:
            raise NotFound(
                "this server does not know its public URL: set CODE_EXEC_PUBLIC_URL to its "
                "origin (https://…), or reach it as localhost"
            )
        resource = MCP_PATH if request.scope["path"].endswith(MCP_PATH) else ""
        # Public and credential-free: any page may read it (browser clients discover here).
        return JSONResponse(
            auth.resource_metadata(base, resource), headers={"Access-Control-Allow-Origin": "*"}
        )

    app.include_router(tool_routes.router)
    app.include_router(seed_rest.router)
    app.include_router(seed_stream.router)
    app.router.routes.append(Route(MCP_PATH, mcp, methods=["GET", "POST", "DELETE"]))
    return app
