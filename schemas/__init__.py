"""One pydantic source of truth for every request and result shape; imports nothing of ours.

The executor's HTTP API, the OpenAI tool definitions and the MCP tools are all built from
these models; nothing else defines the shape of a request or a result.
"""

from schemas.execution import (
    ExecuteRequest,
    ExecuteResult,
    ExecutionError,
    Image,
    RunFields,
    StreamTruncation,
    Truncation,
    WorkspacePath,
)
from schemas.files import FileArg, FileInfo
from schemas.health import BackendHealth, Health, Limits, PoolHealth, RouteHealth
from schemas.languages import LANGUAGE_ALIASES, Language, parse_language
from schemas.outputs import OutputPage, OutputQuery
from schemas.sessions import CloseSessionResult, OpenSessionRequest, SessionInfo

__all__ = [
    "LANGUAGE_ALIASES",
    "BackendHealth",
    "CloseSessionResult",
    "ExecuteRequest",
    "ExecuteResult",
    "ExecutionError",
    "FileArg",
    "FileInfo",
    "Health",
    "Image",
    "Language",
    "Limits",
    "OpenSessionRequest",
    "OutputPage",
    "OutputQuery",
    "PoolHealth",
    "RouteHealth",
    "RunFields",
    "SessionInfo",
    "StreamTruncation",
    "Truncation",
    "WorkspacePath",
    "parse_language",
]
