"""One remote executor over HTTP (the two-machine layout).

Every call goes through _request: one place that names the user, quotes the path, turns
transport failures into ExecutorUnreachable/Unavailable and error answers back into the
exception classes the executor raised. The transport is swappable (httpx), so tests can
reach an in-memory executor app without a socket.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from executor.errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_STATUS,
    ExecutorError,
    ExecutorUnreachable,
    InvalidRequest,
    SandboxFailure,
    Unavailable,
)
from executor.interface import (
    AUTH_HEADER,
    DOWNLOAD_CHUNK,
    USER_HEADER,
    Download,
    OutputCallback,
    user_header,
)
from schemas.execution import ExecuteRequest, ExecuteResult, check_workspace_path
from schemas.files import FileInfo
from schemas.health import Health
from schemas.languages import Language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, SessionInfo, SessionOptions
from schemas.upstream import ToolEntry

T = TypeVar("T")

_SESSIONS = TypeAdapter(list[SessionInfo])
_FILES = TypeAdapter(list[FileInfo])
_TOOLS = TypeAdapter(list[ToolEntry])


def _segment(value: str) -> str:
    """A path segment that stays one segment, whatever the caller sent (no '/', no '..')."""
    if not value:
        raise InvalidRequest("an id in the path must not be empty")
    quoted = quote(value, safe="")
    # Dot segments would be resolved away by the URL; encoded, they stay a name.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _file_path(path: str) -> str:
    """A workspace path as URL segments; '..' and absolute paths never reach the URL."""
    try:
        relative = check_workspace_path(path)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return "/".join(_segment(part) for part in relative.split("/"))


def _error_of(status: int, body: bytes, retry_after: str | None) -> ExecutorError:
    by_status = ERRORS_BY_STATUS.get(status, ExecutorError)
    try:
        error = json.loads(body)["error"]
        cls = ERRORS_BY_CODE.get(error["code"], by_status)
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        cls = by_status
        message = f"executor answered {status}: {body[:500].decode(errors='replace')}"
    try:
        retry = float(retry_after) if retry_after else None
    except ValueError:
        retry = None
    return cls(message, retry_after=retry)


class HttpClient:
    """Calls a remote executor over HTTP."""

    def __init__(
        self, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={AUTH_HEADER: token},
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            transport=transport,
        )

    @asynccontextmanager
    async def _reaching(self) -> AsyncIterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ExecutorUnreachable(
                f"the executor at {self.base_url} is unreachable ({exc!r}); retry shortly",
                retry_after=1.0,
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the executor at {self.base_url} failed during the request ({exc!r})",
                retry_after=1.0,
            ) from exc

    async def _send(self, method: str, path: str, user: str | None, **kwargs: Any) -> bytes:
        """The body of a successful answer, or the executor's error raised again here."""
        headers = {USER_HEADER: user_header(user)} if user is not None else {}
        async with self._reaching():
            response = await self._http.request(method, path, headers=headers, **kwargs)
        if not response.is_success:
            raise _error_of(
                response.status_code, response.content, response.headers.get("Retry-After")
            )
        return response.content

    async def _request(
        self, method: str, path: str, user: str | None, adapter: TypeAdapter[T], **kwargs: Any
    ) -> T:
        return adapter.validate_json(await self._send(method, path, user, **kwargs))

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code; output events go to on_output as they arrive."""
        body = request.model_dump(mode="json", exclude_none=True)
        # Always the NDJSON stream: if this call is cancelled, the executor sees the
        # connection close and cancels the run, freeing its sandbox.
        async with (
            self._reaching(),
            self._http.stream(
                "POST",
                "/execute",
                params={"stream": "true"},
                json=body,
                headers={USER_HEADER: user_header(user)},
            ) as response,
        ):
            if not response.is_success:
                content = await response.aread()
                raise _error_of(response.status_code, content, response.headers.get("Retry-After"))
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] in ("stdout", "stderr"):
                    if on_output is not None:
                        await on_output(event["type"], event["data"])
                elif event["type"] == "result":
                    return ExecuteResult.model_validate(event["result"])
                elif event["type"] == "error":
                    error = event["error"]
                    raise ERRORS_BY_CODE.get(error["code"], ExecutorError)(error["message"])
        raise SandboxFailure("the executor's stream ended without a result")

    async def read_output(self, query: OutputQuery, user: str) -> OutputPage:
        """Lines of a stored output."""
        params = query.model_dump(exclude={"execution_id"})
        path = f"/executions/{_segment(query.execution_id)}/output"
        return await self._request("GET", path, user, TypeAdapter(OutputPage), params=params)

    async def open_session(
        self, language: Language, user: str, options: SessionOptions | None = None
    ) -> SessionInfo:
        """Open a session."""
        body = options.model_dump(mode="json", exclude_none=True) if options else {}
        body["language"] = language.value
        return await self._request("POST", "/sessions", user, TypeAdapter(SessionInfo), json=body)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        path = f"/sessions/{_segment(session_id)}"
        return await self._request("GET", path, user, TypeAdapter(SessionInfo))

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        return await self._request("GET", "/sessions", user, _SESSIONS)

    async def search_tools(self, query: str, user: str, limit: int = 10) -> list[ToolEntry]:
        """Code mode's tools that match query."""
        params = {"q": query, "limit": str(limit)}
        return await self._request("GET", "/tools/search", user, _TOOLS, params=params)

    async def close_session(self, session_id: str, user: str) -> CloseSessionResult:
        """Close a session."""
        path = f"/sessions/{_segment(session_id)}"
        return await self._request("DELETE", path, user, TypeAdapter(CloseSessionResult))

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file."""
        url = f"/sessions/{_segment(session_id)}/files"
        upload = {"file": (path.rsplit("/", 1)[-1], data)}
        return await self._request(
            "POST", url, user, TypeAdapter(FileInfo), data={"path": path}, files=upload
        )

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List files."""
        url = f"/sessions/{_segment(session_id)}/files"
        return await self._request("GET", url, user, _FILES, params={"path": path})

    async def download_file(self, session_id: str, user: str, path: str) -> Download:
        """A file, streamed from the executor as it is sent on."""
        return await self._download(
            f"/sessions/{_segment(session_id)}/files/{_file_path(path)}", user
        )

    async def download_output(self, execution_id: str, name: str, user: str) -> Download:
        """A file a run made, streamed."""
        return await self._download(
            f"/executions/{_segment(execution_id)}/files/{_segment(name)}", user
        )

    async def _download(self, url: str, user: str) -> Download:
        request = self._http.build_request("GET", url, headers={USER_HEADER: user_header(user)})
        async with self._reaching():
            response = await self._http.send(request, stream=True)
        if not response.is_success:
            content = await response.aread()
            await response.aclose()
            raise _error_of(response.status_code, content, response.headers.get("Retry-After"))

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async with self._reaching():
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                        yield chunk
            finally:
                await response.aclose()

        return Download(int(response.headers.get("content-length", 0)), chunks())

    async def health(self) -> Health:
        """The executor's health."""
        return await self._request("GET", "/health", None, TypeAdapter(Health))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
