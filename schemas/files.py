"""Files in a session's workspace."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.execution import WorkspacePath
from schemas.text import Text


class FileInfo(BaseModel):
    """One entry of a session's workspace (/home/user)."""

    path: str = Field(description="Path relative to the workspace /home/user.")
    size: int = Field(description="Size in bytes (0 for directories).")
    is_dir: bool = False
    modified_at: datetime


class FileArg(BaseModel):
    """A text file to place in the workspace before the code runs."""

    model_config = ConfigDict(extra="forbid")

    path: WorkspacePath = Field(description="Relative to /home/user.")
    content: Text
