"""The text a model reads for a result: concise, deterministic, the same for every front-end.

The OpenAI tool messages and the MCP text content both use render_result; the executor's
token budget is measured on this text.
"""

from collections.abc import Sequence
from typing import Protocol

from schemas.execution import ExecuteResult


class NamedFile(Protocol):
    """A file a result names: an OutputFile, or a front-end's link to one."""

    name: str
    size: int
    mime_type: str


def files_line(files: Sequence[NamedFile], urls: Sequence[str] | None = None) -> str:
    """The line naming a run's output files: as returned beside the text, or with the URLs a
    front-end that carries only text gives them."""
    if urls is None:
        listed = ", ".join(f"{f.name} ({f.size:,} bytes, {f.mime_type})" for f in files)
        return f"files in outputs/ (returned separately): {listed}"
    listed = ", ".join(
        f"{f.name} ({f.size:,} bytes, {f.mime_type}) {url}"
        for f, url in zip(files, urls, strict=True)
    )
    return f"files in outputs/, fetch with your bearer token: {listed}"


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
        lines.append(files_line(result.files))
    if len(lines) == 1 and result.exit_code == 0:
        lines.append("(no output)")
    return "\n".join(lines)
