"""The conventions' static checks: ruff, mypy --strict and the layer contracts stay clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = ("schemas", "executor", "openai_tools", "mcp_server", "code_exec")


def test_ruff_is_clean() -> None:
    done = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # about 15 s without mypy's cache
def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([BIN / "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_layer_contracts_hold() -> None:
    done = subprocess.run(
        [BIN / "lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 6 kept, 0 broken." in done.stdout


UPWARD_IMPORTS = [
    ("mcp_server/server.py", "import executor.server.app", "Front-ends never import"),
    ("schemas/render.py", "import executor.errors", "schemas imports nothing of ours"),
    ("executor/backends/base.py", "import executor.core.service", "Backends never import"),
    ("executor/clients/http.py", "import executor.core", "The executor is layered"),
    ("mcp_server/http.py", "import openai_tools.auth", "The packages are layered"),
    ("executor/core/pool.py", "import executor.core.service", "No cycles between sibling"),
]


def test_upward_imports_break_the_contracts(tmp_path: Path) -> None:
    """On a copy of the tree with deliberate violations, import-linter fails and names each."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, upward_import, _ in UPWARD_IMPORTS:
        target = tmp_path / module
        target.write_text(f"{upward_import}  # a deliberate violation\n{target.read_text()}")
    done = subprocess.run(
        [BIN / "lint-imports", "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0, done.stdout
    assert "Contracts: 0 kept, 6 broken." in done.stdout, done.stdout
    broken = done.stdout.split("Broken contracts")[-1]
    for module, _, contract in UPWARD_IMPORTS:
        assert contract in broken, (contract, done.stdout)
        assert module.rsplit("/", 1)[-1].removesuffix(".py") in broken, (module, done.stdout)
