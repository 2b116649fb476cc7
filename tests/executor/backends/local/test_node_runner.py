"""The Node.js runner's protocol, driven directly over its pipes (no sandbox in between).

node_runner_harness.py checks each promise of the protocol (state across runs, top-level
await, errors, SIGINT during sync loops and pending awaits, sentinel ordering); this test runs
it and fails on any check that fails.
"""

import subprocess
import sys
from pathlib import Path

import pytest

# The real Node.js runner.
pytestmark = pytest.mark.slow

HARNESS = Path(__file__).with_name("node_runner_harness.py")


def test_node_runner_protocol_harness_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS)], capture_output=True, text=True, timeout=120
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed, _, total = summary.partition(" ")[0].partition("/")
    assert passed == total and int(total) >= 30, summary
