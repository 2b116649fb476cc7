"""FastAPI dependencies of the API service."""

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from executor.client import ExecutorClient
from executor.errors import Unauthorized
from openai_tools.auth import Authenticator
from openai_tools.config import ApiSettings
from openai_tools.limits import RunLimiter


def get_settings(request: Request) -> ApiSettings:
    """The settings the app was built with."""
    settings: ApiSettings = request.app.state.settings
    return settings


def get_auth(request: Request) -> Authenticator:
    """The app's authenticator."""
    auth: Authenticator = request.app.state.auth
    return auth


def get_client(request: Request) -> ExecutorClient:
    """The executor client (HTTP or in-process): front-ends never know which."""
    client: ExecutorClient = request.app.state.client
    return client


def get_limiter(request: Request) -> RunLimiter:
    """The per-user run limiter."""
    limiter: RunLimiter = request.app.state.limiter
    return limiter


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token> (get one at /v1/auth/token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def current_user(request: Request, auth: Annotated[Authenticator, Depends(get_auth)]) -> str:
    """The token's subject: the user who owns what this request opens."""
    return auth.verify(bearer_token(request.headers.get("authorization")))


def websocket_user(websocket: WebSocket) -> str:
    """A WebSocket's user, from ?token= (browsers cannot set headers) or the header."""
    auth: Authenticator = websocket.app.state.auth
    token = websocket.query_params.get("token")
    if token:
        return auth.verify(token)
    return auth.verify(bearer_token(websocket.headers.get("authorization")))


UserDep = Annotated[str, Depends(current_user)]
ClientDep = Annotated[ExecutorClient, Depends(get_client)]
LimiterDep = Annotated[RunLimiter, Depends(get_limiter)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
