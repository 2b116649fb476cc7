"""From what a sandbox reported to the result a model reads: fit to the budget, keep the rest.

A Shaping follows one run: it hands the sandbox the captures its output goes into, and once
the run is over it builds the ExecuteResult, cuts it to the plan's token budget (in a worker
thread when the text is large) and, when anything was cut, keeps the whole output for its
owner (the output store, and in a session a file the code can grep).
"""

import asyncio
import base64
import binascii
import logging
import secrets
from collections.abc import Callable

from executor.backends.base import RunOutcome, Sandbox
from executor.backends.capture import StreamCapture
from executor.core.admission import RunPlan
from executor.core.outputs import OutputStore
from executor.core.truncation import Budget, fit_result, truncation_info
from executor.errors import ExecutorError
from schemas.execution import (
    OUTPUTS_DIR,
    ExecuteResult,
    Image,
    OutputFile,
    StreamTruncation,
    Truncation,
)
from schemas.languages import Language
from schemas.outputs import STREAMS, image_name
from schemas.upstream import ToolUse

log = logging.getLogger(__name__)

# Characters of a result above which fitting it leaves the event loop: counting tokens of a
# large text (a 10 MB exception message, say) would stall every other request meanwhile.
_THREAD_OVER = 64 * 1024


def workspace_name(execution_id: str, stream: str) -> str:
    """Where a session keeps a cut output, relative to /home/user."""
    suffix = "" if stream == "stdout" else f".{stream}"
    return f".outputs/{execution_id}{suffix}.txt"


def _valid_images(images: list[Image]) -> tuple[list[Image], list[bytes]]:
    """The images whose data is base64, and their bytes (the others are dropped)."""
    valid, data = [], []
    for image in images:
        try:
            data.append(base64.b64decode(image.data, validate=True))
        except (binascii.Error, ValueError):
            continue
        valid.append(image)
    return valid, data


def _byte_cut(outcome: RunOutcome) -> Truncation | None:
    streams = {}
    for name in STREAMS:
        capture: StreamCapture = getattr(outcome, name)
        if capture.truncated:
            streams[name] = StreamTruncation(
                original_bytes=capture.total_bytes,
                original_lines=capture.total_lines,
                kept_bytes=capture.kept_bytes,
            )
    return Truncation(**streams) if streams else None


def _size(result: ExecuteResult) -> int:
    """Characters the budget has to look at: output, value, error and traceback."""
    size = len(result.stdout) + len(result.stderr) + len(result.value or "")
    if result.error is not None:
        size += len(result.error.value) + len(result.error.traceback)
    return size


class Shaping:
    """One run's output: captured while it runs, then fitted and kept."""

    def __init__(self, outputs: OutputStore, user: str, max_output_bytes: int) -> None:
        self.execution_id = f"exe_{secrets.token_hex(12)}"
        self.user = user
        self._outputs = outputs
        self.captures: dict[str, StreamCapture] = {
            stream: outputs.capture(self.execution_id, stream, max_output_bytes)
            for stream in STREAMS
        }
        self.files: list[OutputFile] = []
        self.tool_calls: list[ToolUse] = []  # code mode: the upstream tools the run called

    def keep_files(self, files: list[tuple[OutputFile, bytes]]) -> None:
        """Keep the files the run wrote under outputs/ for its owner; the result lists them."""
        for info, data in files:
            self._outputs.keep_file(
                self.execution_id, self.user, f"{OUTPUTS_DIR}/{info.name}", data
            )
            self.files.append(info)

    def discard(self) -> None:
        """The run never finished: drop what was captured."""
        self._outputs.discard(self.captures)

    def _pointer(self, session: Sandbox | None) -> Callable[[str, int], str]:
        """How a marker tells the model where the whole text is."""
        execution_id = self.execution_id

        def where(part: str, first_line: int) -> str:
            if part not in STREAMS:
                return "shorten what the code returns or prints"
            read = (
                f"read_output(execution_id={execution_id!r}, stream={part!r}, "
                f"offset={first_line - 1})"
            )
            if session is None:
                return f"read them with {read}"
            path = f"/home/user/{workspace_name(execution_id, part)}"
            return f"all of it is in {path} (from line {first_line}), or {read}"

        return where

    async def result(
        self,
        outcome: RunOutcome,
        plan: RunPlan,
        language: Language,
        seconds: float,
        session_id: str | None,
        session_sandbox: Sandbox | None,
    ) -> ExecuteResult:
        """The result within the budget; the whole output kept when anything was cut."""
        images, image_data = _valid_images(outcome.images)
        full = ExecuteResult(
            execution_id=self.execution_id,
            language=language,
            stdout=outcome.stdout.text(),
            stderr=outcome.stderr.text(),
            exit_code=outcome.exit_code,
            error=outcome.error,
            value=outcome.value,
            timed_out=outcome.timed_out,
            duration_ms=round(seconds * 1000),
            files=self.files,
            tool_calls=self.tool_calls,
            session_id=session_id,
            state_lost=outcome.state_lost,
            images=images,
        )
        if len(images) < len(outcome.images):  # what a sandbox sends is checked, all of it
            dropped = len(outcome.images) - len(images)
            note = f"[code-exec: {dropped} image(s) were not valid base64 and were dropped]\n"
            gap = "" if not full.stderr or full.stderr.endswith("\n") else "\n"
            full.stderr = f"{full.stderr}{gap}{note}"
        # What the byte capture already dropped, per stream: (lines, bytes).
        lost = {
            name: (capture.total_lines - full_lines + 1, capture.total_bytes - capture.kept_bytes)
            for name, capture in self.captures.items()
            if capture.truncated
            for full_lines in [getattr(full, name).count("\n") + 1]
        }
        budget = Budget(plan.budget_tokens, plan.encoding, self._pointer(session_sandbox), lost)
        if _size(full) > _THREAD_OVER:
            fitted, cut = await asyncio.to_thread(fit_result, full, budget)
        else:
            fitted, cut = fit_result(full, budget)
        byte_cut = _byte_cut(outcome)
        fitted.truncation = truncation_info(full, fitted, plan.encoding, byte_cut)
        for index, data in enumerate(image_data):
            # Kept like a cut output, so a front-end that cannot carry the image itself (Chat
            # Completions' tool messages are text) can point at it.
            self._outputs.keep_file(self.execution_id, self.user, image_name(index), data)
        if cut or byte_cut is not None:
            self._outputs.keep(self.execution_id, self.user, self.captures)
            if session_sandbox is not None:
                await self._save_in_workspace(session_sandbox)
        else:
            self.discard()
        return fitted

    async def _save_in_workspace(self, sandbox: Sandbox) -> None:
        """Also keep a cut output as a file of the session, where code can grep it."""
        for stream, capture in self.captures.items():
            if not capture.total_bytes:
                continue
            name = workspace_name(self.execution_id, stream)
            source = capture.spill_path if capture.spilled and capture.spill_path else None
            try:
                await sandbox.write_file(
                    name, source if source is not None else bytes(capture.head) + capture.tail
                )
            except (ExecutorError, OSError) as exc:  # e.g. a full workspace: the store has it
                log.warning("could not save %s in the session: %s", name, exc)
