"""Installed as users install MCP servers (pip, pipx and uv install the package into a venv of
their own; no checkout, no make): `code-exec setup` builds the sandbox runtime beside the
installation, and `code-exec mcp` then serves real runs to the official client."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from tests.clients.servers import stdio_state
from tests.processes import new_state_dir

__all__ = ["stdio_state"]
pytestmark = [pytest.mark.slow, pytest.mark.anyio]
CHECKOUT = Path(__file__).resolve().parents[2]


def _run(
    *command: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """`pip install <checkout>` into a new venv (what pipx and `uv tool install` do)."""
    where = new_state_dir("code-exec-install-")
    try:
        # A copy of what git tracks: pip builds in the source folder (build/, egg-info).
        source = where / "source"
        tracked = _run("git", "-C", CHECKOUT, "ls-files", "-z").stdout.split("\0")
        for name in filter(None, tracked):
            if (CHECKOUT / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(CHECKOUT / name, source / name)
        venv = where / "venv"
        assert _run(sys.executable, "-m", "venv", venv).returncode == 0
        done = _run(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", source)
        assert done.returncode == 0, done.stderr[-3000:]
        yield venv
    finally:
        shutil.rmtree(where, ignore_errors=True)


async def test_pip_install_then_setup_then_serve_over_stdio(
    installed: Path, stdio_state: Path
) -> None:
    code_exec = installed / "bin" / "code-exec"
    env = {**os.environ, "CODE_EXEC_STATE_DIR": str(stdio_state)}
    env.pop("CODE_EXEC_RUNTIME_DIR", None)
    assert _run(code_exec, "--version", env=env).stdout.strip() == "code-exec 0.1.0"
    # Before setup: one line that says what to do.
    before = _run(code_exec, "mcp", env=env)
    runtime = installed / "share" / "code-exec" / "runtime"
    assert before.returncode == 2
    assert before.stderr.strip().splitlines() == [
        f"code-exec: the sandbox runtime is missing at {runtime}: build it with `code-exec setup` "
        "(`make setup` in a checkout), or set CODE_EXEC_RUNTIME_DIR to where it was built"
    ]
    built = _run(code_exec, "setup", env=env)
    assert built.returncode == 0, built.stderr
    assert (runtime / "python" / ".installed").exists()
    assert "ready at" in _run(code_exec, "setup", env=env).stderr  # the second time: nothing to do
    server = StdioServerParameters(command=str(code_exec), args=["mcp"], env=env)
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await session.call_tool(
            "run_code", {"code": "import numpy, pandas, matplotlib\nprint(numpy.arange(4).sum())"}
        )
        [text] = [c.text for c in result.content if isinstance(c, types.TextContent)]
        assert text == "exit_code: 0\nstdout:\n6"
