"""A request to run code, and what came of it.

"The user's code failed" is a value here (exit_code, error); it is never an exception.
ExecuteRequest is the one model of a run: the tool arguments (schemas.tools.RunCodeArgs) and
the seed APIs' bodies are narrower views of it, validated by the same field definitions.
"""

import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from schemas.file_uris import InputList
from schemas.languages import Language, LanguageName
from schemas.network import Network
from schemas.packages import PackageList
from schemas.text import Text, check_text
from schemas.upstream import ToolUse

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PATH_DEPTH = 64
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def check_workspace_path(path: str) -> str:
    """Validate a path inside the workspace and return it relative to /home/user."""
    original = path
    check_text(path)
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
    if len(parts) > MAX_PATH_DEPTH or len(path.encode()) > MAX_PATH_BYTES:
        raise ValueError(
            f"file path {original[:80]!r}... is too deep or too long: at most {MAX_PATH_DEPTH} "
            f"directories and {MAX_PATH_BYTES} bytes"
        )
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise ValueError(f"a name in file path {original[:80]!r} is over {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


WorkspacePath = Annotated[str, AfterValidator(check_workspace_path)]
"""A path inside /home/user, normalised to be relative to it."""


class RunFields(BaseModel):
    """The fields every way of asking for a run shares, each validated here once."""

    model_config = ConfigDict(extra="forbid")

    code: Text = Field(description="Source code to run.")
    language: LanguageName | None = Field(
        default=None,
        description=(
            "python, javascript (node, js), bash (shell, sh) or c. "
            "Defaults to the session's language, or python."
        ),
    )
    session_id: Text | None = Field(
        default=None, description="Run inside this session (state persists across runs)."
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Wall-clock limit in seconds; the executor's default when omitted.",
    )
    max_output_tokens: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Token budget of the whole result as rendered for a model (stdout, stderr, value, "
            "error); the executor's default when omitted. Cut output stays retrievable."
        ),
    )
    packages: PackageList = Field(
        default=None,
        description=(
            "Packages to install before the code runs: pip requirements for python "
            "('scipy', 'requests==2.32.3'), npm specs for javascript ('lodash@4'). Needs a "
            "network level of packages or more."
        ),
    )
    inputs: InputList = Field(
        default=None,
        description=(
            "Files to place in /home/user first, by URI: an earlier run's output "
            "(code-exec://executions/...) under its name, or a session's file under its path."
        ),
    )
    network: Network | None = Field(
        default=None,
        description=(
            "What the code may reach: none, packages (the package indexes) or allowlist (also "
            "the operator's hosts). The executor's setting when omitted; a run can only narrow "
            "it (and a session's)."
        ),
    )
    allow_hosts: list[Text] | None = Field(
        default=None,
        max_length=64,
        description=(
            "With network allowlist: only these of the executor's (or the session's) hosts."
        ),
    )


def decode_base64(text: str) -> bytes:
    """The bytes of base64 text (RFC 4648, line breaks allowed), or a ValueError saying so."""
    try:
        return binascii.a2b_base64("".join(text.split()), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"is not base64 ({exc}); send the file's bytes base64-encoded (RFC 4648, padded)"
        ) from None


class Base64File(BaseModel):
    """A binary file sent inline: {"base64": "..."} in place of its text."""

    model_config = ConfigDict(extra="forbid")

    base64: str = Field(description="The file's bytes, base64-encoded.")

    @field_validator("base64")
    @classmethod
    def _decodes(cls, value: str) -> str:
        decode_base64(value)
        return value

    def data(self) -> bytes:
        """The file's bytes."""
        return decode_base64(self.base64)


FileContent = Text | Base64File
"""A file sent inline: its text, or {"base64": ...} for binary files."""


def file_bytes(content: FileContent) -> bytes:
    """The bytes a file sent inline stands for."""
    return content.encode() if isinstance(content, str) else content.data()


class ExecuteRequest(RunFields):
    """Run code once in a fresh sandbox, or in a session when session_id is given."""

    files: dict[WorkspacePath, FileContent] | None = Field(
        default=None,
        description=(
            "Files to write into the workspace /home/user before running: {path: text}, or "
            '{path: {"base64": ...}} for binary files.'
        ),
    )
    env: dict[Text, Text] | None = Field(
        default=None, description="Environment variables for this run."
    )
    token_encoding: Text | None = Field(
        default=None,
        description="Count tokens as this encoding (o200k_base, cl100k_base) or model (gpt-4o).",
    )

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

    @classmethod
    def of(cls, fields: BaseModel, **extra: Any) -> "ExecuteRequest":
        """The request a validated model with the same fields stands for, not validated again.

        Every field of this model that `fields` has is taken from it; `extra` gives the rest.
        """
        values = {name: getattr(fields, name) for name in cls.model_fields if hasattr(fields, name)}
        return cls.model_construct(**{**values, **extra})


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


OUTPUTS_DIR = "outputs"  # under /home/user: what a run writes there comes back with its result


class OutputFile(BaseModel):
    """A file a run wrote into /home/user/outputs/."""

    name: str = Field(description="Its path under /home/user/outputs/.")
    size: int = Field(description="Bytes.")
    mime_type: str


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
    files: list[OutputFile] = Field(
        default_factory=list,
        description=(
            "Files the run wrote under /home/user/outputs/, kept for their owner like a cut "
            "output: GET .../executions/{execution_id}/files/outputs/{name}."
        ),
    )

    tool_calls: list[ToolUse] = Field(
        default_factory=list,
        description="Code mode: the upstream tools the code called, how often, how many failed.",
    )

    @property
    def failed(self) -> bool:
        """Whether the user's code failed (an error, a non-zero exit or a timeout)."""
        return self.error is not None or self.exit_code != 0 or self.timed_out
