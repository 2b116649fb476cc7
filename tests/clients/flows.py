"""The flows users run, as one script every client test plays through its own client.

A client test turns each Step into a tool call the way its client makes one (a scripted fake
model's tool call, or a direct call), gives back what the model would see (Seen), and the
Step checks it. Episodes are separate connections (separate processes over stdio, separate
agent runs): what one episode opens, the next one uses.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Args = dict[str, Any]
Memory = dict[str, str]

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 4])\nplt.show()"
ROWS = "for i in range(3000):\n    print(f'row {i}')"
C_SOURCE = '#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 0; }'
MARKER = re.compile(r"read_output\(execution_id='([^']+)', stream='(\w+)', offset=(\d+)\)")
SESSION_ID = re.compile(r"session_id: (\S+)")
CHART = (
    "import os\nimport matplotlib.pyplot as plt\nos.makedirs('outputs', exist_ok=True)\n"
    "plt.plot([1, 2, 4])\nplt.savefig('outputs/chart.png')\nplt.savefig('outputs/chart.pdf')\n"
    "plt.close()"
)
CSV_OUT = "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/clean.csv', 'w').write('n\\n40\\n2\\n')"
CSV_IN = "import csv\nprint(sum(int(row['n']) for row in csv.DictReader(open('clean.csv'))))"
# How a result names a file for later runs: its code-exec:// URI (MCP), or its download URL
# (Chat and Responses messages); either is an input.
CSV_REF = re.compile(
    r"(code-exec://executions/[^\s'\"]+/outputs/clean\.csv|https?://[^\s'\"]+/outputs/clean\.csv"
    r"(?:\?[^\s'\"]*)?)"
)
# Printed 42, seen as text ("stdout:\n42") or as structured data ("stdout: 42\n").
SIX_TIMES_SEVEN = r"stdout:\s42\b"


@dataclass(frozen=True)
class Seen:
    """What a model saw of one tool call: its text, and how many images came beside it.

    Some clients show the model the structured result instead of the text (pydantic-ai does
    when a result has no image): data holds it then, and the checks read it as `key: value`
    lines, so one pattern serves both views.
    """

    text: str
    images: int = 0
    data: dict[str, Any] | None = None

    @property
    def view(self) -> str:
        """The text the checks search."""
        if self.data is None:
            return self.text
        return "\n".join(f"{key}: {value}" for key, value in _leaves(self.data))


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, data


@dataclass(frozen=True)
class Step:
    """One tool call of a flow and what must come of it."""

    flow: str
    tool: str
    args: Args | Callable[[Memory], Args]
    has: tuple[str, ...] = ()
    images: int = 0
    remember: Callable[[str, Memory], None] | None = None

    def arguments(self, memory: Memory) -> Args:
        """The call's arguments, given what earlier steps remembered."""
        return self.args(memory) if callable(self.args) else dict(self.args)

    def check(self, seen: Seen, memory: Memory) -> None:
        """Assert the model saw what this flow promises; remember what later steps need."""
        for pattern in self.has:
            pattern = pattern.format(**memory)
            assert re.search(pattern, seen.view), f"{self.flow}: no {pattern!r} in {seen.view!r}"
        assert seen.images == self.images, f"{self.flow}: {seen.images} images, not {self.images}"
        if self.remember is not None:
            self.remember(seen.view, memory)


def _marker(text: str, memory: Memory) -> None:
    found = MARKER.search(text)
    assert found, f"no read_output marker in {text!r}"
    memory["execution_id"], memory["stream"], memory["offset"] = found.groups()
    memory["next"] = str(int(memory["offset"]) + 1)


def _session(text: str, memory: Memory) -> None:
    found = SESSION_ID.search(text)
    assert found, f"no session id in {text!r}"
    memory["session_id"] = found.group(1)


def _csv(text: str, memory: Memory) -> None:
    found = CSV_REF.search(text)
    assert found, f"no reference to clean.csv in {text!r}"
    memory["csv"] = found.group(1)


def _read_back(memory: Memory) -> Args:
    return {
        "execution_id": memory["execution_id"],
        "stream": memory["stream"],
        "offset": int(memory["offset"]),
        "limit": 2,
    }


def _in_session(code: str) -> Callable[[Memory], Args]:
    return lambda memory: {"code": code, "session_id": memory["session_id"]}


FIRST = [
    Step("run python", "run_code", {"code": "print(6 * 7)"}, (SIX_TIMES_SEVEN,)),
    Step(
        "run javascript",
        "run_code",
        {"code": "console.log(6 * 7)", "language": "javascript"},
        (SIX_TIMES_SEVEN,),
    ),
    Step(
        "run bash", "run_code", {"code": "echo $((6 * 7))", "language": "bash"}, (SIX_TIMES_SEVEN,)
    ),
    Step("run c", "run_code", {"code": C_SOURCE, "language": "c"}, (SIX_TIMES_SEVEN,)),
    Step("error", "run_code", {"code": "1 / 0"}, ("ZeroDivisionError",)),
    Step("bad arguments", "run_code", {"code": "print(1)", "language": "cobol"}, ("cobol",)),
    Step("image", "run_code", {"code": PLOT}, ("1 PNG",), images=1),
    Step(
        "cut output",
        "run_code",
        {"code": ROWS, "max_output_tokens": 150},
        ("row 0", r"read_output\(execution_id="),
        remember=_marker,
    ),
    Step("cut output read back", "read_output", _read_back, ("row {offset}\nrow {next}",)),
    Step(
        "files: a chart as PNG and PDF",
        "run_code",
        {"code": CHART},
        (r"chart\.png", "image/png", r"chart\.pdf", "application/pdf"),
    ),
    Step("files: a CSV made", "run_code", {"code": CSV_OUT}, ("clean.csv",), remember=_csv),
    Step("open session", "open_session", {}, ("session_id: ",), remember=_session),
    Step("session state", "run_code", _in_session("x = 41")),
]
SECOND = [
    Step("session across connections", "run_code", _in_session("print(x + 1)"), (SIX_TIMES_SEVEN,)),
    Step(
        "files: the CSV read by reference",
        "run_code",
        lambda memory: {"code": CSV_IN, "inputs": [memory["csv"]]},
        (SIX_TIMES_SEVEN,),
    ),
    Step(
        "close session",
        "close_session",
        lambda memory: {"session_id": memory["session_id"]},
        (r"{session_id}\W+closed",),
    ),
]
EPISODES = [FIRST, SECOND]
FLOWS = [step.flow for episode in EPISODES for step in episode]


@dataclass
class Play:
    """A flow being played: the memory of earlier steps and what each step's model saw."""

    memory: Memory = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)

    def record(self, step: Step, seen: Seen) -> None:
        """Check a step's outcome and keep it."""
        self.seen[step.flow] = seen
        step.check(seen, self.memory)
