"""The whole output of a run whose result was cut, read back by lines."""

from typing import Literal

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
