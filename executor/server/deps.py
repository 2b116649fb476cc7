"""FastAPI dependencies of the executor's HTTP API."""

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from executor.config import ExecutorSettings
from executor.core import Executor
from executor.errors import InvalidRequest, Unauthorized
from executor.interface import AUTH_HEADER, USER_HEADER, user_of_header
from executor.web import app_state

get_executor = app_state("executor", Executor)
get_settings = app_state("settings", ExecutorSettings)


async def check_token(
    settings: Annotated[ExecutorSettings, Depends(get_settings)],
    internal_auth_token: Annotated[str | None, Header(alias=AUTH_HEADER)] = None,
) -> None:
    """Refuse callers without the shared internal token (constant-time comparison)."""
    expected = settings.require_token()
    if internal_auth_token is None:
        raise Unauthorized(f"missing {AUTH_HEADER} header; the executor is internal")
    if not hmac.compare_digest(internal_auth_token.encode(), expected.encode()):
        raise Unauthorized(f"wrong {AUTH_HEADER}")


async def get_user(request: Request) -> str:
    """The user the caller acts for (the API service forwards its token's subject)."""
    try:
        user = user_of_header(request.headers.get(USER_HEADER, "default"))
    except UnicodeDecodeError:
        raise InvalidRequest(f"{USER_HEADER} must be percent-encoded UTF-8") from None
    if not user or len(user) > 256:
        raise InvalidRequest(f"{USER_HEADER} must be 1 to 256 characters")
    return user


ExecutorDep = Annotated[Executor, Depends(get_executor)]
SettingsDep = Annotated[ExecutorSettings, Depends(get_settings)]
UserDep = Annotated[str, Depends(get_user)]
