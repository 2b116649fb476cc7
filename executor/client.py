"""How front-ends reach the executor: one interface, two implementations.

InProcessClient calls an Executor living in the same process (the embedded default);
HttpClient calls a remote executor's HTTP API (the two-machine deployment). Both raise the
same exceptions (executor.errors), so a front-end never knows which one it holds.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx

from executor.backends.base import OutputCallback
from executor.errors import (
    ERRORS_BY_CODE,
    ExecutorError,
    ExecutorUnreachable,
    SandboxFailure,
    Unavailable,
)
from executor.outputs import OutputPage
from executor.service import Executor
from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.files import FileInfo
from schemas.languages import Language
from schemas.sessions import SessionInfo

AUTH_HEADER = "Internal-Auth-Token"
USER_HEADER = "X-Code-Exec-User"


class ExecutorClient(Protocol):
    """What a front-end may ask of the executor."""

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code; stream output to on_output when given."""
        ...

    async def read_output(
        self,
        execution_id: str,
        user: str,
        stream: str = "stdout",
        offset: int = 0,
        limit: int = 200,
    ) -> OutputPage:
        """Lines of the whole output of a cut result."""
        ...

    async def open_session(self, language: Language, user: str) -> SessionInfo:
        """Open a session."""
        ...

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        ...

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        ...

    async def close_session(self, session_id: str, user: str) -> None:
        """Close a session."""
        ...

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file into a session's workspace."""
        ...

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List a session's workspace."""
        ...

    async def download_file(self, session_id: str, user: str, path: str) -> bytes:
        """Read a file of a session's workspace."""
        ...

    async def health(self) -> dict[str, Any]:
        """The executor's health."""
        ...

    async def aclose(self) -> None:
        """Release the client's resources."""
        ...


class InProcessClient:
    """Calls an Executor in this process."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code."""
        return await self.executor.execute(request, user, on_output)

    async def read_output(
        self,
        execution_id: str,
        user: str,
        stream: str = "stdout",
        offset: int = 0,
        limit: int = 200,
    ) -> OutputPage:
        """Lines of a stored output."""
        return await self.executor.read_output(execution_id, user, stream, offset, limit)

    async def open_session(self, language: Language, user: str) -> SessionInfo:
        """Open a session."""
        return await self.executor.open_session(language, user)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        return await self.executor.get_session(session_id, user)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        return await self.executor.list_sessions(user)

    async def close_session(self, session_id: str, user: str) -> None:
        """Close a session."""
        await self.executor.close_session(session_id, user)

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file."""
        return await self.executor.upload_file(session_id, user, path, data)

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List files."""
        return await self.executor.list_files(session_id, user, path)

    async def download_file(self, session_id: str, user: str, path: str) -> bytes:
        """Read a file."""
        return await self.executor.download_file(session_id, user, path)

    async def health(self) -> dict[str, Any]:
        """The executor's health."""
        return self.executor.health()

    async def aclose(self) -> None:
        """Nothing to release: the executor's owner closes it."""


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        cls = ERRORS_BY_CODE.get(error["code"], ExecutorError)
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        cls, message = ExecutorError, f"executor answered {response.status_code}: {response.text}"
    retry = response.headers.get("Retry-After")
    raise cls(message, retry_after=float(retry) if retry else None)


class HttpClient:
    """Calls a remote executor over HTTP."""

    def __init__(self, base_url: str, token: str, *, timeout_margin_s: float = 30.0) -> None:
        self._margin = timeout_margin_s
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={AUTH_HEADER: token},
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ExecutorUnreachable(
                f"the executor at {self._http.base_url} is unreachable ({exc!r}); retry shortly",
                retry_after=1.0,
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the executor at {self._http.base_url} failed during the request ({exc!r})",
                retry_after=1.0,
            ) from exc

    async def execute(
        self, request: ExecuteRequest, user: str, on_output: OutputCallback | None = None
    ) -> ExecuteResult:
        """Run code; output events go to on_output as they arrive."""
        body = request.model_dump(mode="json", exclude_none=True)
        headers = {USER_HEADER: user}
        # Always the NDJSON stream: if this call is cancelled, the executor sees the
        # connection close and cancels the run, freeing its sandbox.
        async with (
            self._call(),
            self._http.stream(
                "POST", "/execute", params={"stream": "true"}, json=body, headers=headers
            ) as response,
        ):
            if not response.is_success:
                await response.aread()
                _raise_for(response)
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
                    cls = ERRORS_BY_CODE.get(error["code"], ExecutorError)
                    raise cls(error["message"])
        raise SandboxFailure("the executor's stream ended without a result")

    async def read_output(
        self,
        execution_id: str,
        user: str,
        stream: str = "stdout",
        offset: int = 0,
        limit: int = 200,
    ) -> OutputPage:
        """Lines of a stored output."""
        async with self._call():
            response = await self._http.get(
                f"/executions/{execution_id}/output",
                params={"stream": stream, "offset": offset, "limit": limit},
                headers={USER_HEADER: user},
            )
        _raise_for(response)
        return OutputPage(**response.json())

    async def open_session(self, language: Language, user: str) -> SessionInfo:
        """Open a session."""
        async with self._call():
            response = await self._http.post(
                "/sessions", json={"language": language.value}, headers={USER_HEADER: user}
            )
        _raise_for(response)
        return SessionInfo.model_validate_json(response.content)

    async def get_session(self, session_id: str, user: str) -> SessionInfo:
        """Describe a session."""
        async with self._call():
            response = await self._http.get(f"/sessions/{session_id}", headers={USER_HEADER: user})
        _raise_for(response)
        return SessionInfo.model_validate_json(response.content)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The user's sessions."""
        async with self._call():
            response = await self._http.get("/sessions", headers={USER_HEADER: user})
        _raise_for(response)
        return [SessionInfo.model_validate(s) for s in response.json()]

    async def close_session(self, session_id: str, user: str) -> None:
        """Close a session."""
        async with self._call():
            response = await self._http.delete(
                f"/sessions/{session_id}", headers={USER_HEADER: user}
            )
        _raise_for(response)

    async def upload_file(self, session_id: str, user: str, path: str, data: bytes) -> FileInfo:
        """Write a file."""
        async with self._call():
            response = await self._http.post(
                f"/sessions/{session_id}/files",
                data={"path": path},
                files={"file": (path.rsplit("/", 1)[-1], data)},
                headers={USER_HEADER: user},
            )
        _raise_for(response)
        return FileInfo.model_validate_json(response.content)

    async def list_files(self, session_id: str, user: str, path: str = "") -> list[FileInfo]:
        """List files."""
        async with self._call():
            response = await self._http.get(
                f"/sessions/{session_id}/files", params={"path": path}, headers={USER_HEADER: user}
            )
        _raise_for(response)
        return [FileInfo.model_validate(f) for f in response.json()]

    async def download_file(self, session_id: str, user: str, path: str) -> bytes:
        """Read a file."""
        async with self._call():
            response = await self._http.get(
                f"/sessions/{session_id}/files/{path.lstrip('/')}", headers={USER_HEADER: user}
            )
        _raise_for(response)
        return response.content

    async def health(self) -> dict[str, Any]:
        """The executor's health."""
        async with self._call():
            response = await self._http.get("/health")
        _raise_for(response)
        result: dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
