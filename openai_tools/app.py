"""The API service app: tools for OpenAI-style agents, the seeds' API, tokens, health."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.routing import Route

from executor.app import BodyLimit, error_response, validation_message
from executor.client import ExecutorClient, HttpClient, InProcessClient
from executor.config import ExecutorSettings
from executor.errors import ExecutorError, InvalidRequest
from executor.routing import RoutingClient
from executor.service import Executor
from mcp_server.mount import McpMount
from openai_tools.auth import Authenticator
from openai_tools.config import ApiSettings
from openai_tools.deps import AuthDep, ClientDep
from openai_tools.limits import RunLimiter
from openai_tools.seed_routes import router as seed_router
from openai_tools.seed_routes import websocket_endpoint
from openai_tools.streaming import WsHub
from openai_tools.tool_routes import router as tool_router

log = logging.getLogger(__name__)


class TokenRequest(BaseModel):
    """Exchange an API key for a short-lived bearer token."""

    api_key: str
    ttl_s: int | None = None


def create_api_app(
    settings: ApiSettings | None = None,
    *,
    client: ExecutorClient | None = None,
    executor_settings: ExecutorSettings | None = None,
) -> FastAPI:
    """The API app. Its executor client: the one given, HTTP to executor_url, or in-process."""
    settings = settings or ApiSettings()
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor: Executor | None = None
        if client is not None:
            app.state.client = client
        elif settings.executor_urls:
            assert settings.internal_token is not None
            router = RoutingClient(
                settings.executor_urls, settings.internal_token.get_secret_value()
            )
            await router.start()
            app.state.client = router
        elif settings.executor_url:
            assert settings.internal_token is not None
            app.state.client = HttpClient(
                settings.executor_url, settings.internal_token.get_secret_value()
            )
        else:
            executor = Executor(executor_settings or ExecutorSettings())
            await executor.start()
            app.state.client = InProcessClient(executor)
            app.state.executor = executor
        mcp.bind(app.state.client)
        try:
            async with mcp.running():
                yield
        finally:
            if client is None:
                await app.state.client.aclose()
            if executor is not None:
                await executor.close()

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
    app.state.auth = Authenticator(settings)
    app.state.limiter = RunLimiter(settings.max_concurrent_runs_per_user)
    app.state.ws_hub = WsHub()
    mcp = McpMount(app.state.auth)
    app.add_middleware(BodyLimit, limit=80 * 1024 * 1024)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ExecutorError)
    async def executor_error(request: Request, exc: ExecutorError) -> JSONResponse:
        response = error_response(exc)
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "invalid_request", "message": validation_message(exc)}},
            status_code=422,
        )

    @app.get("/health", tags=["health"])
    async def health(client: ClientDep) -> dict[str, Any]:
        """Liveness and the executor's state; no token needed."""
        try:
            executor = await client.health()
        except ExecutorError as exc:
            return {"status": "degraded", "executor": {"error": exc.message}}
        return {"status": "ok", "executor": executor}

    @app.post("/v1/auth/token", tags=["auth"])
    async def token(auth: AuthDep, body: Annotated[TokenRequest, Body()]) -> dict[str, Any]:
        """A short-lived bearer token for an API key."""
        user = auth.user_for_key(body.api_key)
        ttl = body.ttl_s or settings.token_ttl_s
        if ttl > settings.token_ttl_s:
            raise InvalidRequest(f"ttl_s may be at most {settings.token_ttl_s}")
        return {"access_token": auth.issue(user, ttl), "token_type": "bearer", "expires_in": ttl}

    app.include_router(tool_router)
    app.include_router(seed_router)
    app.router.routes.append(Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    app.add_api_websocket_route("/", websocket_endpoint)
    app.add_api_websocket_route("/ws", websocket_endpoint)
    return app
