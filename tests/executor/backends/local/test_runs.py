"""Runs against hostile code: forged and broken runner messages, oversized results, NUL bytes,
streams of garbage, and processes that pose as the sandbox's own. Nothing of it may make a run
raise, hold the executor's memory, or break the next run."""

import asyncio
import base64
import json

import pytest

from executor.backends.local.protocol import IMAGES_LIMIT, TEXT_LIMIT
from executor.backends.local.sandbox import LocalSandbox

from ._helpers import ok, pid_exists, run, vm_rss, wait_gone

pytestmark = pytest.mark.anyio

_MIB = 1024 * 1024

# Python code can find its run's id in the runner's frames.
FIND_RUN_ID = """
import os, sys
frame = sys._getframe()
while frame.f_code.co_name != 'main':
    frame = frame.f_back
run_id = frame.f_locals['run_id']
"""


def comm(pid: int) -> str:
    """A host process's name ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def assert_protocol_broken(outcome: object, *, state_lost: bool) -> None:
    error = getattr(outcome, "error", None)
    assert error is not None and error.name == "SandboxError", error
    assert "protocol was broken" in error.value
    assert getattr(outcome, "exit_code", None) == 137
    assert getattr(outcome, "state_lost", None) is state_lost


# --- the control channel ---


@pytest.mark.usefixtures("bwrap_only")
@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b"[1]\n",
        b"[" * 100_000 + b"\n",
        b'{"op":"ready"}\n',
        b'{"op":"done"}\n',
    ],
    ids=["text", "array", "deep", "ready", "no-id"],
)
async def test_garbage_on_the_control_pipe_fails_the_run_and_restarts_the_session(
    py: LocalSandbox, garbage: bytes
) -> None:
    ok(await run(py, "kept = 1"))
    outcome = await run(py, f"import os\nos.write(4, {garbage!r})\nimport time\ntime.sleep(5)")
    assert_protocol_broken(outcome, state_lost=True)
    assert py.alive
    outcome = await run(py, "'kept' in globals()")
    assert ok(outcome) == "" and outcome.value == "False"


@pytest.mark.usefixtures("bwrap_only")
@pytest.mark.parametrize(
    "fields", ['"exit_code":"0"', '"exit_code":4294967296', '"value":42', '"error":"boom"']
)
async def test_a_malformed_done_of_this_run_breaks_the_protocol(
    py: LocalSandbox, fields: str
) -> None:
    code = (
        FIND_RUN_ID + f'os.write(4, (\'{{"op":"done","id":"%s",{fields}}}\\n\' % run_id).encode())'
    )
    assert_protocol_broken(await run(py, code), state_lost=True)
    assert ok(await run(py, "print('next')")) == "next\n"


async def test_a_broken_protocol_outside_a_session_kills_the_sandbox(py: LocalSandbox) -> None:
    outcome = await run(py, "import os\nos.write(4, b'nonsense\\n')", keep_state=False)
    assert_protocol_broken(outcome, state_lost=False)
    assert not py.alive
    assert py.process_ids() == []


async def test_a_forged_done_ends_the_run_and_the_real_one_is_not_taken_for_the_next(
    py: LocalSandbox,
) -> None:
    forge = (
        FIND_RUN_ID
        + "forged = {'op': 'done', 'id': run_id, 'exit_code': 7, 'value': \"'forged'\"}\n"
        + "import json\nos.write(4, (json.dumps(forged) + '\\n').encode())\n"
        + "kept = 'yes'\n'real'"
    )
    outcome = await run(py, forge)
    # A done that parses is the code's own business: it ends the run with what it says.
    assert (outcome.exit_code, outcome.value, outcome.error) == (7, "'forged'", None)
    assert not outcome.state_lost
    # The runner's real done of that run ("'real'") comes later: the next run skips it.
    outcome = await run(py, "print('next')\nkept")
    assert ok(outcome) == "next\n"
    assert outcome.value == "'yes'"
    assert not outcome.state_lost


async def test_bash_forging_through_saved_descriptors_breaks_nothing(sh: LocalSandbox) -> None:
    ok(await run(sh, "KEEP=kept"))
    # bash keeps copies of the control fds it closed for the eval (10 and up).
    forge = (
        "for fd in 10 11 12 13 14 15; do\n"
        '  printf \'{"op":"done","id":"%s","exit_code":7}\\n\' "$__ce_id" >&$fd\n'
        "done 2>/dev/null\n"
        "true"
    )
    outcome = await run(sh, forge)
    assert outcome.exit_code in (0, 7)  # its own done, or the forged one: the code's business
    assert not outcome.state_lost
    outcome = await run(sh, 'echo "next $KEEP"')
    assert ok(outcome) == "next kept\n"
    assert not outcome.state_lost


async def test_a_node_control_line_over_the_limit_fails_the_run(js: LocalSandbox) -> None:
    code = "require('fs').writeSync(4, 'x'.repeat(9 * 1024 * 1024) + '\\n');"
    assert_protocol_broken(await run(js, code), state_lost=True)
    assert ok(await run(js, "console.log('next')")) == "next\n"


@pytest.mark.usefixtures("bwrap_only")
async def test_an_idle_session_writing_to_the_control_pipe_holds_no_executor_memory(
    py: LocalSandbox,
) -> None:
    ok(await run(py, "print('warm')"))
    start = vm_rss()
    code = (
        "import os, threading, time\n"
        "line = b'x' * (127 * 1024 * 1024)\n"
        "def write():\n"
        "    time.sleep(0.3)  # once the run is over\n"
        "    os.write(4, line)\n"
        "threading.Thread(target=write, daemon=True).start()\n"
        "print('writing')"
    )
    assert ok(await run(py, code)) == "writing\n"
    peak = start
    for _ in range(30):  # idle: between runs nothing is read
        await asyncio.sleep(0.05)
        peak = max(peak, vm_rss())
    task = asyncio.create_task(run(py, "print('next')"))
    while not task.done():
        peak = max(peak, vm_rss())
        await asyncio.sleep(0.01)
    outcome = await task
    assert peak - start < 32 * _MIB
    # The line arrives during this run: it answers, as a broken protocol, with a fresh runner.
    assert_protocol_broken(outcome, state_lost=True)
    assert ok(await run(py, "print('after')")) == "after\n"


# --- what the runners send ---


async def test_a_huge_python_error_is_cut_and_the_session_kept(py: LocalSandbox) -> None:
    ok(await run(py, "kept = 1"))
    outcome = await run(py, "raise ValueError('x' * 40_000_000)")
    assert outcome.error is not None and outcome.error.name == "ValueError"
    for text in (outcome.error.value, outcome.error.traceback):
        assert len(json.dumps(text)) <= TEXT_LIMIT
        assert "characters cut here" in text
    assert outcome.error.value.startswith("xxxx") and outcome.error.value.endswith("xxxx")
    assert not outcome.state_lost
    outcome = await run(
        py,
        "class Boom(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise type('E' * 100_000, (Boom,), {})()",
    )
    assert outcome.error is not None and len(outcome.error.name) <= 1024
    assert "cannot be shown" in outcome.error.value
    assert (await run(py, "kept")).value == "1"


async def test_a_huge_javascript_error_is_cut(js: LocalSandbox) -> None:
    outcome = await run(
        js, "const e = new Error('y'.repeat(20_000_000)); e.name = 'N'.repeat(5000); throw e;"
    )
    assert outcome.error is not None
    assert len(json.dumps(outcome.error.name)) <= 1024
    assert len(json.dumps(outcome.error.value)) <= TEXT_LIMIT
    assert len(json.dumps(outcome.error.traceback)) <= TEXT_LIMIT
    assert not outcome.state_lost
    assert ok(await run(js, "console.log('next')")) == "next\n"


async def test_figures_beyond_the_limit_are_dropped_and_said(py: LocalSandbox) -> None:
    # Noise does not compress: each figure is about 4 MiB of base64.
    code = """
import matplotlib.pyplot as plt
import numpy as np
rng = np.random.default_rng(0)
for _ in range(3):
    fig = plt.figure(figsize=(10, 10), dpi=100)
    fig.figimage(rng.random((1000, 1000, 3)))
kept = 'yes'
"""
    outcome = await run(py, code, timeout=60)
    ok(outcome)
    assert 1 <= len(outcome.images) < 3
    assert sum(len(image.data) for image in outcome.images) <= IMAGES_LIMIT
    assert base64.b64decode(outcome.images[0].data).startswith(b"\x89PNG")
    assert "figures dropped" in outcome.stderr.text()
    assert (await run(py, "kept")).value == "'yes'"


async def test_sys_exit_with_a_huge_code_is_an_exit_status(py: LocalSandbox) -> None:
    assert (await run(py, "import sys\nsys.exit(10**5000)")).exit_code == 255
    assert (await run(py, "import sys\nsys.exit(256 + 3)")).exit_code == 3
    assert ok(await run(py, "print('next')")) == "next\n"


# --- NUL bytes ---


async def test_a_nul_byte_in_python_is_a_syntax_error_and_the_session_lives(
    py: LocalSandbox,
) -> None:
    ok(await run(py, "kept = 1"))
    outcome = await run(py, "print('a')\x00")
    assert outcome.error is not None and outcome.error.name == "SyntaxError"
    assert "null" in outcome.error.value
    assert not outcome.state_lost
    assert (await run(py, "kept")).value == "1"


async def test_a_nul_byte_in_c_bash_or_javascript_breaks_nothing(
    c: LocalSandbox, sh: LocalSandbox, js: LocalSandbox
) -> None:
    outcome = await run(c, '#include <stdio.h>\n/* \x00 */\nint main(void) { puts("c"); }\n')
    assert ok(outcome) == "c\n"
    ok(await run(sh, "KEEP=1"))
    assert ok(await run(sh, "echo a\x00b")) == "ab\n"  # bash cannot hold a NUL: it is dropped
    assert ok(await run(sh, "echo $KEEP")) == "1\n"
    ok(await run(js, "globalThis.kept = 1"))
    outcome = await run(js, "1 +\x00 2")
    assert outcome.error is not None and outcome.error.name == "SyntaxError"
    assert not outcome.state_lost
    assert (await run(js, "kept")).value == "1"


# --- processes ---


async def test_a_child_named_bwrap_does_not_survive_an_interrupted_run(
    py: LocalSandbox,
) -> None:
    code = """
import ctypes, os, shutil, subprocess, time
shutil.copy('/bin/sleep', '/tmp/bwrap')
subprocess.Popen(['/tmp/bwrap', '300'])  # its name (comm) is "bwrap"
if os.fork() == 0:
    ctypes.CDLL(None).prctl(15, b'bwrap', 0, 0, 0)  # PR_SET_NAME
    time.sleep(300)
    os._exit(0)
while True:
    pass
"""
    task = asyncio.create_task(run(py, code, timeout=3, keep_state=True))
    posers: list[int] = []
    while not task.done() and len(posers) < 2:  # both started, the run not yet interrupted
        await asyncio.sleep(0.05)
        posers = [
            pid for pid in py.process_ids() if pid not in py.own_pids() and comm(pid) == "bwrap"
        ]
    outcome = await task
    assert len(posers) == 2
    assert outcome.timed_out and not outcome.state_lost
    assert wait_gone(posers) == []
    assert not any(pid_exists(pid) for pid in posers)
    assert ok(await run(py, "print('next')")) == "next\n"
