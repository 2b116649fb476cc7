"""One pydantic source of truth for every tool's arguments and results.

The executor's HTTP API, the OpenAI tool definitions and the MCP tools are all built from
these models; nothing else defines the shape of a request or a result.
"""

from schemas.execution import (
    ExecuteRequest,
    ExecuteResult,
    ExecutionError,
    Image,
    StreamTruncation,
    Truncation,
)
from schemas.files import FileInfo
from schemas.languages import LANGUAGE_ALIASES, Language, parse_language
from schemas.sessions import OpenSessionRequest, SessionInfo

__all__ = [
    "LANGUAGE_ALIASES",
    "ExecuteRequest",
    "ExecuteResult",
    "ExecutionError",
    "FileInfo",
    "Image",
    "Language",
    "OpenSessionRequest",
    "SessionInfo",
    "StreamTruncation",
    "Truncation",
    "parse_language",
]
