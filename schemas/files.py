"""Files in a session's workspace."""

import mimetypes
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from schemas.execution import Base64File, FileContent, WorkspacePath, decode_base64
from schemas.text import Text


def mime_type(path: str) -> str:
    """The MIME type a file's name says, application/octet-stream when it says none."""
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


class FileInfo(BaseModel):
    """One entry of a session's workspace (/home/user)."""

    path: str = Field(description="Path relative to the workspace /home/user.")
    size: int = Field(description="Size in bytes (0 for directories).")
    is_dir: bool = False
    modified_at: datetime


class FileArg(BaseModel):
    """A file to place in the workspace before the code runs: text, or base64 for binary."""

    model_config = ConfigDict(extra="forbid")

    path: WorkspacePath = Field(description="Relative to /home/user.")
    content: Text
    # Accepted, not listed: programs that must send a binary file inline set it (README);
    # every tool listing would pay for it, and a model has no business writing base64.
    base64: SkipJsonSchema[bool | None] = None

    @model_validator(mode="after")
    def _decodes(self) -> "FileArg":
        if self.base64:
            try:
                decode_base64(self.content)
            except ValueError as exc:
                raise ValueError(f"content of {self.path!r} {exc}") from None
        return self

    def inline(self) -> FileContent:
        """The file as ExecuteRequest.files holds it."""
        return Base64File(base64=self.content) if self.base64 else self.content
