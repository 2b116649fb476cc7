"""The text a model reads for a result: concise, deterministic, the same for every front-end.

The OpenAI tool messages and the MCP text content both use render_result; the executor's
token budget is measured on this text.
"""

from collections.abc import Sequence
from typing import Protocol

from schemas.execution import ExecuteResult
from schemas.file_uris import output_uri


class NamedFile(Protocol):
    """A file a result names: an OutputFile, or a front-end's link to one."""

    name: str
    size: int
    mime_type: str


BEARER_URLS = "fetch with your bearer token"
URIS = "read by URI"


def files_line(files: Sequence[NamedFile], links: Sequence[str], how: str = URIS) -> str:
    """The lines naming a run's output files, each with its link (its code-exec:// URI, or the
    URL a front-end that carries only text gives it), and how the links are used."""
    listed = "".join(
        f"\n- {f.name} ({f.size:,} bytes, {f.mime_type}) {link}"
        for f, link in zip(files, links, strict=True)
    )
    return f"files in outputs/ ({how}; a link in inputs gives a later run the file):{listed}"


def tool_calls_line(result: ExecuteResult) -> str:
    """Code mode: the upstream tools the code called, e.g. `tool calls: notes.search x3,
    notes.read x12 (1 failed)`."""
    parts = []
    for use in result.tool_calls:
        failed = f" ({use.errors} failed)" if use.errors else ""
        parts.append(f"{use.tool} x{use.calls}{failed}")
    return "tool calls: " + ", ".join(parts)


def status_line(result: ExecuteResult) -> str:
    """One line: how the run ended."""
    parts = [f"exit_code: {result.exit_code}"]
    if result.timed_out:
        parts.append("timed out")
    if result.state_lost:
        parts.append("session state lost (interpreter restarted; files kept)")
    return "; ".join(parts)


def error_line(result: ExecuteResult) -> str:
    """`error: Name: value`, or '' when the code did not fail."""
    if result.error is None:
        return ""
    return f"error: {result.error.name}: {result.error.value}"


def show_traceback(result: ExecuteResult) -> bool:
    """Whether the traceback adds anything: not when it is empty or already in stderr."""
    if result.error is None or not result.error.traceback.strip():
        return False
    return result.error.traceback.strip() not in result.stderr


def render_result(result: ExecuteResult) -> str:
    """The model-ready text of a result (images are not in it; they travel separately)."""
    lines = [status_line(result)]
    if result.stdout:
        lines += ["stdout:", result.stdout.rstrip("\n")]
    if result.stderr:
        lines += ["stderr:", result.stderr.rstrip("\n")]
    if result.value is not None:
        lines += [f"value: {result.value}"]
    if result.error is not None:
        lines.append(error_line(result))
        if show_traceback(result):
            lines += ["traceback:", result.error.traceback.rstrip("\n")]
    if result.images:
        lines.append(f"images: {len(result.images)} PNG (returned separately)")
    if result.files:
        uris = [output_uri(result.execution_id, f.name) for f in result.files]
        lines.append(files_line(result.files, uris))
    if result.tool_calls:
        lines.append(tool_calls_line(result))
    if len(lines) == 1 and result.exit_code == 0:
        lines.append("(no output)")
    return "\n".join(lines)
