"""Files in a session's workspace."""

from datetime import datetime

from pydantic import BaseModel, Field


class FileInfo(BaseModel):
    """One entry of a session's workspace (/home/user)."""

    path: str = Field(description="Path relative to the workspace /home/user.")
    size: int = Field(description="Size in bytes (0 for directories).")
    is_dir: bool = False
    modified_at: datetime
