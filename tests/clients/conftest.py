"""The npm clients the tests drive: the MCP conformance suite and the MCP Inspector's CLI.

They are pinned in tests/clients/npm (package.json and its package-lock.json), with their own
Node 22 (the `node` package; the system's may be older), and installed by `make setup` with
`npm ci`: nothing is downloaded while the tests run.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

NPM = Path(__file__).parent / "npm"
NPM_BIN = NPM / "node_modules" / ".bin"


def node_env(**extra: str) -> dict[str, str]:
    """The environment for the npm CLIs: the pinned Node first on PATH, since their scripts
    start with `#!/usr/bin/env node` and may start more node processes."""
    return {**os.environ, "PATH": f"{NPM_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


# The agent frameworks report to their vendors' services when the environment says so (the
# Agents SDK exports traces whenever OPENAI_API_KEY is set; LangChain traces to LangSmith with
# LANGSMITH_TRACING): these tests talk to loopback only, whatever the machine's environment.
_PHONE_HOME = (
    "OPENAI_API_KEY",
    "LANGSMITH_TRACING",
    "LANGSMITH_API_KEY",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_API_KEY",
    "LOGFIRE_TOKEN",
)


@pytest.fixture(autouse=True)
def no_vendor_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """No trace export, no telemetry: not from this process, nor from what it starts."""
    from agents import set_tracing_disabled

    for name in _PHONE_HOME:
        monkeypatch.delenv(name, raising=False)
    set_tracing_disabled(True)


@pytest.fixture(scope="session")
def npm_bin() -> Callable[[str], Path]:
    """Locate an installed npm CLI by name (node, conformance, mcp-inspector)."""

    def locate(name: str) -> Path:
        path = NPM_BIN / name
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make setup` (it runs npm ci in {NPM})")
        return path

    return locate
