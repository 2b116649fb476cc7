"""A request to run code, and what came of it.

"The user's code failed" is a value here (exit_code, error); it is never an exception.
"""

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.languages import Language, LanguageName

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_workspace_path(path: str) -> str:
    """Validate a path inside the workspace and return it relative to /home/user."""
    original = path
    if path.startswith("/home/user/"):
        path = path[len("/home/user/") :]
    if not path or path.startswith("/") or "\x00" in path:
        raise ValueError(
            f"file path {original!r} must be relative to the workspace /home/user "
            "(e.g. 'data/input.csv')"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"file path {original!r} must stay inside /home/user (no '..')")
    return "/".join(parts)


class ExecuteRequest(BaseModel):
    """Run code once in a fresh sandbox, or in a session when session_id is given."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Source code to run.")
    language: LanguageName | None = Field(
        default=None,
        description=(
            "python, javascript (node, js), bash (shell, sh) or c. "
            "Defaults to the session's language, or python."
        ),
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Wall-clock limit in seconds; the executor's default when omitted.",
    )
    session_id: str | None = Field(
        default=None, description="Run inside this session (state persists across runs)."
    )
    files: dict[str, str] | None = Field(
        default=None,
        description="Files to write into the workspace /home/user before running: {path: text}.",
    )
    env: dict[str, str] | None = Field(
        default=None, description="Environment variables for this run."
    )
    max_output_tokens: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Token budget of the whole result as rendered for a model (stdout, stderr, value, "
            "error); the executor's default when omitted. Cut output stays retrievable."
        ),
    )
    token_encoding: str | None = Field(
        default=None,
        description="Count tokens as this encoding (o200k_base, cl100k_base) or model (gpt-4o).",
    )

    @field_validator("files")
    @classmethod
    def _files_inside_workspace(cls, files: dict[str, str] | None) -> dict[str, str] | None:
        if files is None:
            return None
        return {check_workspace_path(path): content for path, content in files.items()}

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str] | None) -> dict[str, str] | None:
        if env is None:
            return None
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"environment variable name {name!r} is invalid; use letters, digits and _"
                )
            if "\x00" in value:
                raise ValueError(f"environment variable {name!r} contains a NUL byte")
        return env


class ExecutionError(BaseModel):
    """How the user's code failed: an exception, a compile error, a signal or a timeout."""

    name: str = Field(description="e.g. ZeroDivisionError, CompileError, Signal, Timeout.")
    value: str = Field(description="The message.")
    traceback: str = Field(default="", description="Traceback or compiler output.")


class StreamTruncation(BaseModel):
    """What was cut from one output stream."""

    original_bytes: int
    original_lines: int
    kept_bytes: int
    kept_tokens: int | None = None


class Truncation(BaseModel):
    """What was cut from each stream (null when the stream was kept whole)."""

    stdout: StreamTruncation | None = None
    stderr: StreamTruncation | None = None


class Image(BaseModel):
    """A figure produced by the code (e.g. a matplotlib plot), base64-encoded."""

    format: Literal["png"] = "png"
    data: str = Field(description="Base64 of the image bytes.")


class ExecuteResult(BaseModel):
    """The outcome of one run."""

    execution_id: str
    language: Language
    stdout: str = ""
    stderr: str = ""
    exit_code: int = Field(description="0 on success; 124 on timeout; 128+N for signal N.")
    error: ExecutionError | None = None
    value: str | None = Field(
        default=None, description="Display of the last expression's value, as a notebook shows it."
    )
    timed_out: bool = False
    duration_ms: int
    session_id: str | None = None
    state_lost: bool = Field(
        default=False,
        description=(
            "The session's interpreter had to be restarted: variables are gone, files kept."
        ),
    )
    truncation: Truncation | None = None
    images: list[Image] = Field(default_factory=list)
