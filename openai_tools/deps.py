"""FastAPI dependencies of the API host, shared by its front-ends."""

from typing import Annotated

from fastapi import Depends, Query, Request

from executor.interface import ExecutorClient
from executor.tools import ToolSet
from executor.web import app_state
from openai_tools.auth import MAX_CREDENTIALS_CHARS, Authenticator, require_user
from openai_tools.config import ApiSettings
from openai_tools.signed_urls import UrlSigner

get_settings = app_state("settings", ApiSettings)
get_auth = app_state("auth", Authenticator)
get_client = app_state("client", ExecutorClient)  # type: ignore[type-abstract]
get_tools = app_state("tools", ToolSet)
get_signer = app_state("signer", UrlSigner)


async def current_user(request: Request) -> str:
    """The token's subject: the user who owns what this request opens."""
    return require_user(request.scope)


SignerDep = Annotated[UrlSigner, Depends(get_signer)]


async def download_user(
    request: Request,
    execution_id: str,
    name: str,
    signer: SignerDep,
    signature: Annotated[
        str | None,
        Query(
            max_length=MAX_CREDENTIALS_CHARS,
            description="From a signed URL (POST …/url): downloads without a token.",
        ),
    ] = None,
) -> str:
    """The token's subject or, for a request without a token, the user a signed URL of this very
    file was made for: the one dependency that reads a signature (the download route's)."""
    if signature is None or "authorization" in request.headers:
        return require_user(request.scope)
    return signer.verify(signature, execution_id, name)


UserDep = Annotated[str, Depends(current_user)]
ClientDep = Annotated[ExecutorClient, Depends(get_client)]
ToolsDep = Annotated[ToolSet, Depends(get_tools)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
