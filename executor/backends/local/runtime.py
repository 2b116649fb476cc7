"""The sandbox's Python runtime: a venv of the host's /usr/bin/python3 with the packages of
runtime-requirements.txt (numpy, pandas, matplotlib, scipy, scikit-learn, ...), built once (by
`code-exec setup`, which `make` runs) and mounted read-only into every sandbox.

It is made from the system interpreter under /usr, so that it needs nothing outside /usr and
itself (the sandbox mounts both).
"""

import ctypes.util
import os
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

SYSTEM_PYTHON = Path("/usr/bin/python3")
REQUIREMENTS = "runtime-requirements.txt"
READY = Path("python") / ".installed"


def runtime_ready(runtime_dir: Path) -> bool:
    """Whether a whole runtime is at runtime_dir."""
    return (runtime_dir / READY).exists()


def _run(step: str, command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"building the sandbox runtime failed while {step}:\n{tail}")


def build_runtime(
    runtime_dir: Path, python: Path = SYSTEM_PYTHON, requirements: Path | None = None
) -> None:
    """Build the runtime at runtime_dir (replacing one that is there); RuntimeError says why not.

    The ready mark is written last: a build that fails or is interrupted leaves a runtime that
    the backend refuses (and says how to build), never a half one it would mount.
    """
    if not python.exists():
        raise RuntimeError(
            f"{python} is missing: the sandbox runtime is built from the system's Python "
            "(Debian/Ubuntu: apt-get install python3 python3-venv)"
        )
    runtime_dir = runtime_dir.absolute()
    shutil.rmtree(runtime_dir, ignore_errors=True)
    runtime_dir.mkdir(parents=True)
    venv = runtime_dir / "python"
    _run("making the venv", [str(python), "-m", "venv", "--clear", str(venv)])
    if requirements is None:
        requirements = Path(str(files("executor.backends.local").joinpath(REQUIREMENTS)))
    interpreter = str(venv / "bin" / "python")
    _run(
        "installing the runtime's packages (runtime-requirements.txt)",
        [interpreter, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         str(requirements)],
    )
    # A prebuilt matplotlib font cache, copied into each sandbox, spares every plot a rebuild.
    mplconfig = runtime_dir / "mplconfig"
    mplconfig.mkdir()
    env = {**os.environ, "MPLCONFIGDIR": str(mplconfig)}
    _run("building matplotlib's font cache", [interpreter, "-c", "import matplotlib.pyplot"], env)
    (runtime_dir / READY).touch()


# What the local backend needs of the host, and the Debian packages that give it (the same
# list deploy/install-system-deps.sh installs for `make`).
_SYSTEM_NEEDS = (
    ("bwrap", "bubblewrap"),
    ("gcc", "gcc libc6-dev"),
    ("/usr/bin/node", "nodejs"),
    ("/usr/bin/python3", "python3 python3-venv"),
)


def missing_system_packages() -> list[str]:
    """The Debian packages to install for what the local backend needs and cannot find."""
    missing = [
        package
        for tool, package in _SYSTEM_NEEDS
        if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))
    ]
    if ctypes.util.find_library("seccomp") is None:
        missing.append("libseccomp2")
    return missing
