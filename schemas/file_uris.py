"""The URIs of files code-exec serves: what a run wrote under outputs/, and a session's files.

They name MCP resources (resources/list, resources/read, a result's resource_link) and are what
run_code and open_session take as `inputs`, so a model passes a file by reference instead of
pasting it into its arguments. Whoever holds a URI still needs to be its owner to read it.
"""

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, unquote

from pydantic import AfterValidator

from schemas.text import Text

MAX_INPUTS = 20

_OUTPUT_URI = re.compile(r"^code-exec://executions/(exe_[0-9a-f]{1,64})/outputs/(.{1,1000})$")
_SESSION_URI = re.compile(r"^code-exec://sessions/(ses_[A-Za-z0-9_-]{1,64})/files/(.{1,4200})$")
# The download URLs the HTTP API gives for the same files (a Chat or Responses tool message
# names files by them): taken as inputs by their path, never fetched.
_OUTPUT_URL = re.compile(
    r"^https?://[^/?#]{1,255}(?:/[^?#]{0,200})?/executions/(exe_[0-9a-f]{1,64})/files/outputs/"
    r"([^?#]{1,1000})(?:\?[^#]{0,4000})?$"
)
_SESSION_URL = re.compile(
    r"^https?://[^/?#]{1,255}(?:/[^?#]{0,200})?/sessions/(ses_[A-Za-z0-9_-]{1,64})/files/"
    r"([^?#]{1,4200})(?:\?[^#]{0,4000})?$"
)


@dataclass(frozen=True)
class OutputRef:
    """A file a run wrote under /home/user/outputs/."""

    execution_id: str
    name: str

    @property
    def uri(self) -> str:
        """Its code-exec:// URI."""
        return output_uri(self.execution_id, self.name)

    @property
    def placed_as(self) -> str:
        """Where it lands in /home/user when given as an input: its name under outputs/."""
        return self.name


@dataclass(frozen=True)
class SessionFileRef:
    """A file of a session's workspace."""

    session_id: str
    path: str

    @property
    def uri(self) -> str:
        """Its code-exec:// URI."""
        return session_file_uri(self.session_id, self.path)

    @property
    def placed_as(self) -> str:
        """Where it lands in /home/user when given as an input: the same path."""
        return self.path


FileRef = OutputRef | SessionFileRef


def output_uri(execution_id: str, name: str) -> str:
    """The URI of a file a run wrote under outputs/."""
    return f"code-exec://executions/{execution_id}/outputs/{quote(name, safe='/')}"


def session_file_uri(session_id: str, path: str) -> str:
    """The URI of a file in a session's workspace (path relative to /home/user)."""
    return f"code-exec://sessions/{session_id}/files/{quote(path, safe='/')}"


def _relative_path(quoted: str) -> str | None:
    path = unquote(quoted)
    if "\x00" in path or any(part in ("", ".", "..") for part in path.split("/")):
        return None
    return path


def parse_output_uri(uri: str) -> tuple[str, str] | None:
    """(execution_id, name under outputs/) of an output URI, else None."""
    match = _OUTPUT_URI.match(uri)
    name = _relative_path(match.group(2)) if match else None
    return (match.group(1), name) if match and name else None


def parse_file_uri(uri: str) -> FileRef | None:
    """The file a code-exec:// URI names, or None when it names none."""
    output = parse_output_uri(uri)
    if output is not None:
        return OutputRef(*output)
    match = _SESSION_URI.match(uri)
    path = _relative_path(match.group(2)) if match else None
    return SessionFileRef(match.group(1), path) if match and path else None


def parse_input(uri: str) -> FileRef | None:
    """The file an input names: by its code-exec:// URI, or by the download URL the HTTP API
    gave for it (only its path is read: code-exec never fetches a URL)."""
    ref = parse_file_uri(uri)
    if ref is not None or not uri.startswith(("http://", "https://")):
        return ref
    for pattern, kind in ((_OUTPUT_URL, OutputRef), (_SESSION_URL, SessionFileRef)):
        match = pattern.match(uri)
        path = _relative_path(match.group(2)) if match else None
        if match and path:
            return kind(match.group(1), path)
    return None


def check_inputs(inputs: list[str] | None) -> list[str] | None:
    """Validate the `inputs` of a run or a session: at most MAX_INPUTS file URIs."""
    # Bounded here, not in the schema: every tool listing would carry a maxItems.
    if inputs is not None and len(inputs) > MAX_INPUTS:
        raise ValueError(f"at most {MAX_INPUTS} inputs")
    for uri in inputs or []:
        if parse_input(uri) is None:
            raise ValueError(
                f"input {uri[:100]!r} is not the URI of a file code-exec keeps: a run's output "
                "(code-exec://executions/ID/outputs/NAME, or its download URL, from a result's "
                "files) or a session's file (code-exec://sessions/ID/files/PATH); code-exec "
                "fetches no URL: put other files in with files, or download them in the code"
            )
    return inputs


InputList = Annotated[list[Text] | None, AfterValidator(check_inputs)]
"""Files to place in /home/user before code runs, by URI (validated by check_inputs)."""
