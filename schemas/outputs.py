"""The whole output of a run whose result was cut, read back by lines."""

import re
from typing import Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")


def image_name(index: int) -> str:
    """The name a run's figure is kept under (ExecutorClient.download_output)."""
    return f"image-{index}.png"


class OutputQuery(BaseModel):
    """Which lines of a stored output to read."""

    execution_id: str
    stream: Stream = "stdout"
    offset: int = Field(default=0, ge=0, description="First line, from 0.")
    limit: int = Field(default=200, gt=0, le=100_000, description="Lines at most.")


class OutputPage(BaseModel):
    """A slice of a stored stream, by lines."""

    execution_id: str
    stream: Stream
    offset: int
    limit: int
    total_lines: int
    text: str


_OUTPUT_URI = re.compile(r"^code-exec://executions/(exe_[0-9a-f]{1,64})/outputs/(.{1,1000})$")


def output_uri(execution_id: str, name: str) -> str:
    """The URI (an MCP resource's) of a file a run wrote under outputs/."""
    return f"code-exec://executions/{execution_id}/outputs/{quote(name, safe='/')}"


def parse_output_uri(uri: str) -> tuple[str, str] | None:
    """(execution_id, name under outputs/) of an output_uri, else None."""
    match = _OUTPUT_URI.match(uri)
    if match is None:
        return None
    name = unquote(match.group(2))
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return match.group(1), name
