"""The arguments of the three tools, as a model sends them.

Each is validated once, here, file paths included; the tool declarations that call, render and
describe them are in executor.tools. RunCodeArgs is a view of ExecuteRequest (the same field
definitions) with files as a list, since OpenAI's strict mode forbids open objects.
"""

from pydantic import BaseModel, ConfigDict, Field

from schemas.execution import ExecuteRequest, RunFields
from schemas.file_uris import InputList
from schemas.files import FileArg
from schemas.languages import LanguageName
from schemas.network import Network
from schemas.outputs import Stream
from schemas.packages import PackageList
from schemas.text import Text


class RunCodeArgs(RunFields):
    """Arguments of run_code."""

    files: list[FileArg] | None = Field(
        default=None, description="Text files to write into /home/user before running."
    )

    def to_request(self) -> ExecuteRequest:
        """The executor request these (already validated) arguments stand for."""
        files = {f.path: f.inline() for f in self.files} if self.files else None
        return ExecuteRequest.of(self, files=files)


class OpenSessionArgs(BaseModel):
    """Arguments of open_session."""

    model_config = ConfigDict(extra="forbid")

    language: LanguageName | None = None
    packages: PackageList = Field(default=None, description="Packages to install first.")
    network: Network | None = None
    inputs: InputList = None


class CloseSessionArgs(BaseModel):
    """Arguments of close_session."""

    model_config = ConfigDict(extra="forbid")

    session_id: Text


class SearchToolsArgs(BaseModel):
    """Arguments of search_tools."""

    model_config = ConfigDict(extra="forbid")

    query: Text = Field(max_length=500)
    limit: int | None = Field(default=None, gt=0, le=50)


class ReadOutputArgs(BaseModel):
    """Arguments of read_output."""

    model_config = ConfigDict(extra="forbid")

    execution_id: Text
    stream: Stream = "stdout"
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=200, gt=0, le=2000)
