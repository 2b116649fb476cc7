"""FastAPI dependencies of the API host, shared by its front-ends."""

from typing import Annotated

from fastapi import Depends, Request

from executor.interface import ExecutorClient
from executor.tools import ToolSet
from executor.web import app_state
from openai_tools.auth import Authenticator, require_user
from openai_tools.config import ApiSettings

get_settings = app_state("settings", ApiSettings)
get_auth = app_state("auth", Authenticator)
get_client = app_state("client", ExecutorClient)  # type: ignore[type-abstract]
get_tools = app_state("tools", ToolSet)


async def current_user(request: Request) -> str:
    """The token's subject: the user who owns what this request opens."""
    return require_user(request.scope)


UserDep = Annotated[str, Depends(current_user)]
ClientDep = Annotated[ExecutorClient, Depends(get_client)]
ToolsDep = Annotated[ToolSet, Depends(get_tools)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
