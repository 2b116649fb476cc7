"""Fit a result into a token budget, keeping what the model needs.

The budget covers the rendered result (schemas.render.render_result) exactly. The error
(message and traceback) comes first, then the value of the last expression, then stderr and
stdout share what is left. A cut keeps the head and the tail of a text, drops the middle and
puts one marker line there saying what was dropped and where the whole text can be read.
A Python traceback keeps its first frame, its last frames and the exception line.

Counting is exact on every text that is kept. Texts too large to tokenize cheaply (over
_EXACT_LIMIT characters) are never tokenized whole: their token count is estimated from
windows at both ends, and the marker says "~".
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import tiktoken

from executor.backends.capture import trim_incomplete_utf8_end, trim_incomplete_utf8_start
from schemas.execution import ExecuteResult, ExecutionError, StreamTruncation, Truncation
from schemas.render import render_result, show_traceback

_EXACT_LIMIT = 16 * 1024  # characters counted exactly; above, estimated from windows
_WINDOW = 8 * 1024
_HEAD_SHARE = 0.4  # the end of an output is where results and errors usually are
_MIN_SHARE = 24  # tokens kept for each lower-priority part while a higher one is cut
_FRAME = re.compile(r"^  File ")


@dataclass
class Count:
    """A token count, exact or estimated, of a text of `chars` characters."""

    tokens: int
    exact: bool
    chars: int = 0


def count_tokens(encoding: tiktoken.Encoding, text: str) -> Count:
    """Tokens of text: exact up to _EXACT_LIMIT characters, else estimated from its ends."""
    if len(text) <= _EXACT_LIMIT:
        return Count(len(encoding.encode_ordinary(text)), True, len(text))
    head, tail = text[:_WINDOW], text[-_WINDOW:]
    sampled = len(encoding.encode_ordinary(head)) + len(encoding.encode_ordinary(tail))
    return Count(round(sampled * len(text) / (2 * _WINDOW)), False, len(text))


def _prefix(encoding: tiktoken.Encoding, text: str, tokens: int) -> str:
    """The longest start of text that is at most `tokens` tokens, cut on a character."""
    if tokens <= 0:
        return ""
    window = min(len(text), tokens * 8 + 64)
    while True:
        ids = encoding.encode_ordinary(text[:window])
        if len(ids) > tokens or window >= len(text):
            break
        window = min(len(text), window * 4)
    data = trim_incomplete_utf8_end(encoding.decode_bytes(ids[:tokens]))
    return data.decode("utf-8", errors="replace")


def _suffix(encoding: tiktoken.Encoding, text: str, tokens: int) -> str:
    """The longest end of text that is at most `tokens` tokens, cut on a character."""
    if tokens <= 0:
        return ""
    window = min(len(text), tokens * 8 + 64)
    while True:
        ids = encoding.encode_ordinary(text[-window:])
        if len(ids) > tokens + 1 or window >= len(text):
            break
        window = min(len(text), window * 4)
    # Tokens near the window's start may differ from the whole text's; those kept are not.
    data = trim_incomplete_utf8_start(encoding.decode_bytes(ids[-tokens:]))
    return data.decode("utf-8", errors="replace")


def _snap_head(head: str) -> str:
    """End the head at a line end when one is near, so the marker starts its own line."""
    cut = head.rfind("\n")
    return head[: cut + 1] if cut >= len(head) * 0.7 else head


def _snap_tail(tail: str) -> str:
    """Start the tail at a line start when one is near."""
    cut = tail.find("\n")
    return tail[cut + 1 :] if 0 <= cut <= len(tail) * 0.3 else tail


def cut_text(
    encoding: tiktoken.Encoding,
    text: str,
    allowance: int,
    marker: Callable[[int, int, Count], str],
    need: Count | None = None,
) -> str:
    """Text within `allowance` tokens: whole, or head + marker line + tail."""
    need = need or count_tokens(encoding, text)
    if need.tokens <= allowance and (
        need.exact or len(encoding.encode_ordinary(text)) <= allowance
    ):
        return text
    # Room for the marker, sized with the largest numbers it could show.
    probe = marker(10**9, 10**9, Count(10**12, False))
    room = allowance - len(encoding.encode_ordinary(probe)) - 2
    if room <= 0:
        return _fit_marker(encoding, probe, marker, text, allowance)
    head = _snap_head(_prefix(encoding, text, int(room * _HEAD_SHARE)))
    tail = _snap_tail(_suffix(encoding, text, room - int(room * _HEAD_SHARE)))
    if len(head) + len(tail) >= len(text):
        return text
    dropped = text[len(head) : len(text) - len(tail)]
    first_line = head.count("\n") + 1
    line = marker(first_line, _lines(dropped), count_tokens(encoding, dropped))
    sep = "" if not head or head.endswith("\n") else "\n"
    end = "" if not tail or tail.startswith("\n") else "\n"
    return f"{head}{sep}{line}{end}{tail}"


def _fit_marker(
    encoding: tiktoken.Encoding,
    probe: str,
    marker: Callable[[int, int, Count], str],
    text: str,
    allowance: int,
) -> str:
    """When only a marker fits: the marker for all of text, or nothing at all."""
    line = marker(1, text.count("\n") + 1, count_tokens(encoding, text))
    return line if len(encoding.encode_ordinary(line)) <= allowance else ""


def cut_traceback(
    encoding: tiktoken.Encoding,
    traceback: str,
    allowance: int,
    marker: Callable[[int, int, Count], str],
    need: Count | None = None,
) -> str:
    """A Python traceback within allowance: first frame, last frames, the exception line."""
    lines = traceback.rstrip("\n").split("\n")
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    need = need or count_tokens(encoding, traceback)
    if (
        len(frames) < 3
        or not lines[0].startswith("Traceback")
        or need.tokens <= allowance
        # Cutting by frames counts every line whole; a line this long (a huge exception
        # message) would cost seconds to count: cut it as plain text, by its ends.
        or max(map(len, lines)) > _EXACT_LIMIT
    ):
        return cut_text(encoding, traceback, allowance, marker, need)
    head = lines[: frames[1]]  # the header and the first frame
    # Per-line counts (newlines included) find the cut in one pass; the text is then checked.
    costs = [len(encoding.encode_ordinary(line + "\n")) for line in lines]
    suffix = [0] * (len(lines) + 1)
    for i in range(len(lines) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + costs[i]
    probe = marker(10**9, 10**9, Count(10**12, False))
    room = allowance - sum(costs[: len(head)]) - len(encoding.encode_ordinary(probe)) - 2
    starts = [f for f in frames[1:] if suffix[f] <= room]
    for start in starts:  # the earliest start that fits keeps the most frames
        dropped = lines[len(head) : start]
        dropped_tokens = Count(sum(costs[len(head) : start]), False)
        line = marker(len(head) + 1, len(dropped), dropped_tokens)
        text = "\n".join([*head, line, *lines[start:]]) if dropped else traceback
        if len(encoding.encode_ordinary(text)) <= allowance:
            return text
    return cut_text(encoding, traceback, allowance, marker)


@dataclass
class Budget:
    """A request's budget and what is needed to point at the full output."""

    tokens: int
    encoding: tiktoken.Encoding
    where: Callable[[str, int], str]
    """(part, first dropped line) -> how to read the full text, for the marker."""
    lost: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per part, lines and bytes the capture already dropped from the middle of the text."""


def _marker_for(budget: Budget, part: str) -> Callable[[int, int, Count], str]:
    lost_lines, lost_bytes = budget.lost.get(part, (0, 0))

    def marker(first_line: int, lines: int, tokens: Count) -> str:
        if lost_lines or lost_bytes:
            # What the capture dropped lies inside what this cut drops: count it too.
            lines += lost_lines
            per_char = tokens.tokens / max(tokens.chars, 1)
            tokens = Count(tokens.tokens + round(lost_bytes * per_char), False)
        approx = "" if tokens.exact else "~"
        return (
            f"[... {lines} lines ({approx}{tokens.tokens} tokens) of {part} cut here; "
            f"{budget.where(part, first_line)} ...]"
        )

    return marker


def _render_tokens(budget: Budget, result: ExecuteResult) -> int:
    return len(budget.encoding.encode_ordinary(render_result(result)))


def _with_parts(result: ExecuteResult, parts: dict[str, str]) -> ExecuteResult:
    error = result.error
    if error is not None:
        error = ExecutionError(
            name=error.name,
            value=parts.get("error", error.value),
            traceback=parts.get("traceback", error.traceback),
        )
    return result.model_copy(
        update={
            "stdout": parts.get("stdout", result.stdout),
            "stderr": parts.get("stderr", result.stderr),
            "value": parts.get("value", result.value) if result.value is not None else None,
            "error": error,
        }
    )


def _parts(result: ExecuteResult) -> dict[str, str]:
    """The budgeted texts of a result, highest priority first."""
    parts: dict[str, str] = {}
    if result.error is not None:
        parts["error"] = result.error.value
        if show_traceback(result):
            parts["traceback"] = result.error.traceback
    if result.value is not None:
        parts["value"] = result.value
    parts["stderr"] = result.stderr
    parts["stdout"] = result.stdout
    return {k: v for k, v in parts.items() if v}


def _allocate(need: dict[str, int], room: int) -> dict[str, int]:
    """Priority order for error, traceback and value; stderr and stdout share the rest."""
    alloc: dict[str, int] = {}
    names = list(need)
    for i, name in enumerate(names):
        if name in ("stderr", "stdout"):
            break
        later = sum(min(need[n], _MIN_SHARE) for n in names[i + 1 :])
        alloc[name] = max(0, min(need[name], room - later))
        room -= alloc[name]
    streams = [n for n in ("stderr", "stdout") if n in need]
    while streams:
        share = room // len(streams)
        small = [n for n in streams if need[n] <= share]
        if not small:
            for n in streams:
                alloc[n] = share
            room -= share * len(streams)
            # Rounding leftovers go to stdout, which usually carries the answer.
            alloc[streams[-1]] += room
            break
        for n in small:
            alloc[n] = need[n]
            room -= need[n]
            streams.remove(n)
    return alloc


def fit_result(result: ExecuteResult, budget: Budget) -> tuple[ExecuteResult, bool]:
    """The result cut to the budget (rendered), and whether anything was cut."""
    encoding = budget.encoding
    if _small(result) and _render_tokens(budget, result) <= budget.tokens:
        return result, False
    parts = _parts(result)
    counts = {name: count_tokens(encoding, text) for name, text in parts.items()}
    need = {name: count.tokens for name, count in counts.items()}
    skeleton = _with_parts(result, dict.fromkeys(parts, ""))
    overhead = _render_tokens(budget, skeleton) + 2 * len(parts)
    alloc = _allocate(need, max(0, budget.tokens - overhead))
    for _ in range(12):
        kept = {}
        for name, text in parts.items():
            cut = cut_traceback if name == "traceback" else cut_text
            kept[name] = cut(encoding, text, alloc[name], _marker_for(budget, name), counts[name])
        fitted = _with_parts(result, kept)
        excess = _render_tokens(budget, fitted) - budget.tokens
        if excess <= 0:
            return fitted, kept != parts
        # Joining texts can merge or split tokens at the seams: shrink the largest and retry.
        largest = max(alloc, key=lambda n: alloc[n])
        if alloc[largest] == 0:
            break
        alloc[largest] = max(0, alloc[largest] - excess - 4)
    emptied = _with_parts(result, dict.fromkeys(parts, ""))
    return emptied, True


def _small(result: ExecuteResult) -> bool:
    total = len(result.stdout) + len(result.stderr) + len(result.value or "")
    if result.error is not None:
        total += len(result.error.value) + len(result.error.traceback)
    return total <= _EXACT_LIMIT


def truncation_info(
    result: ExecuteResult,
    fitted: ExecuteResult,
    encoding: tiktoken.Encoding,
    original: Truncation | None,
) -> Truncation | None:
    """Per stream: bytes and lines of the whole output, tokens kept."""
    streams: dict[str, StreamTruncation] = {}
    for name in ("stdout", "stderr"):
        before = getattr(original, name) if original else None
        full_text: str = getattr(result, name)
        kept_text: str = getattr(fitted, name)
        if before is None and kept_text == full_text:
            continue
        streams[name] = StreamTruncation(
            original_bytes=before.original_bytes if before else len(full_text.encode()),
            original_lines=before.original_lines if before else _lines(full_text),
            kept_bytes=len(kept_text.encode()),
            kept_tokens=len(encoding.encode_ordinary(kept_text)),
        )
    return Truncation(**streams) if streams else None


def _lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)
