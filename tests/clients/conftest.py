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


@pytest.fixture(scope="session")
def npm_bin() -> Callable[[str], Path]:
    """Locate an installed npm CLI by name (node, conformance, mcp-inspector)."""

    def locate(name: str) -> Path:
        path = NPM_BIN / name
        if not path.exists():
            pytest.fail(f"{path} is missing: run `make setup` (it runs npm ci in {NPM})")
        return path

    return locate
