"""The three tools, defined once: name, description for the model, arguments, result.

The OpenAI function list and the MCP tool list are both generated from TOOLS.
"""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from schemas.execution import ExecuteRequest, ExecuteResult
from schemas.languages import Language, LanguageName
from schemas.sessions import SessionInfo


class FileArg(BaseModel):
    """A text file to place in the workspace before the code runs."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path relative to /home/user, e.g. 'data/input.csv'.")
    content: str = Field(description="The file's text.")


class RunCodeArgs(BaseModel):
    """Arguments of run_code."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="The source code to run.")
    language: LanguageName | None = Field(
        default=None,
        description="python (default), javascript, bash or c. In a session, the session's.",
    )
    session_id: str | None = Field(
        default=None,
        description="Run in this session (from open_session) to keep variables between calls.",
    )
    timeout: float | None = Field(
        default=None, description="Seconds before the run is stopped (default 30, max 300)."
    )
    max_output_tokens: int | None = Field(
        default=None, description="Token budget of the result (default 2000)."
    )
    files: list[FileArg] | None = Field(
        default=None, description="Text files to write into /home/user before running."
    )

    def to_request(self) -> ExecuteRequest:
        """The executor request these arguments stand for."""
        return ExecuteRequest(
            code=self.code,
            language=self.language,
            session_id=self.session_id,
            timeout=self.timeout,
            max_output_tokens=self.max_output_tokens,
            files={f.path: f.content for f in self.files} if self.files else None,
        )


class OpenSessionArgs(BaseModel):
    """Arguments of open_session."""

    model_config = ConfigDict(extra="forbid")

    language: LanguageName | None = Field(
        default=None, description="python (default), javascript, bash or c."
    )


class CloseSessionArgs(BaseModel):
    """Arguments of close_session."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(description="The session to close.")


class CloseSessionResult(BaseModel):
    """What close_session did."""

    session_id: str
    closed: bool


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what the model sees and what it gets back."""

    name: str
    description: str
    arguments: type[BaseModel]
    result: type[BaseModel]


RUN_CODE = ToolSpec(
    name="run_code",
    description=(
        "Run code in an isolated sandbox and get its output. Languages: python (with numpy, "
        "pandas, matplotlib; the value of a last bare expression is shown, as in a notebook; "
        "plots come back as images), javascript (Node.js), bash, c (compiled with gcc). "
        "There is no network access. Without session_id each call starts from a clean "
        "sandbox; pass a session_id from open_session to keep variables, imports and files "
        "between calls. Limits: timeout 30 s by default (max 300), 1 GiB of memory. Output "
        "is cut to a token budget (default 2000): the head and the tail are kept, and a line "
        "'[... N lines (~T tokens) of stdout cut here; ...]' says where the rest can be read "
        "(in a session, a file under /home/user/.outputs/ that your code can grep). Errors "
        "in the code come back with the exception and its traceback."
    ),
    arguments=RunCodeArgs,
    result=ExecuteResult,
)
OPEN_SESSION = ToolSpec(
    name="open_session",
    description=(
        "Open a stateful session: a sandbox that keeps Python/JavaScript variables, Bash's "
        "working directory and exported variables, and files in /home/user between run_code "
        "calls. Worth it for multi-step work (load data once, then analyse it). Returns a "
        "session_id for run_code. Sessions close after 15 minutes idle; close them with "
        "close_session when done."
    ),
    arguments=OpenSessionArgs,
    result=SessionInfo,
)
CLOSE_SESSION = ToolSpec(
    name="close_session",
    description="Close a session opened with open_session and free its sandbox.",
    arguments=CloseSessionArgs,
    result=CloseSessionResult,
)

TOOLS: dict[str, ToolSpec] = {t.name: t for t in (RUN_CODE, OPEN_SESSION, CLOSE_SESSION)}

__all__ = [
    "CLOSE_SESSION",
    "OPEN_SESSION",
    "RUN_CODE",
    "TOOLS",
    "CloseSessionArgs",
    "CloseSessionResult",
    "ExecuteResult",
    "FileArg",
    "Language",
    "OpenSessionArgs",
    "RunCodeArgs",
    "ToolSpec",
]
