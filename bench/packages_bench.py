"""Packages (issue 16): a package the runtime lacks, installed in a sandbox through the egress
proxy and the package mirror, cold (the mirror fetches every file from the index) and cached
(a second sandbox, another run: nothing reaches the index), against pip installing the same
wheels straight from the same index on the host (`pip install --target`, no sandbox, no
proxy); and what a sandbox costs to start with the runtime as it is built.

The runtime's size and start cost are set against the runtime as it was before the richer
default (numpy, pandas and matplotlib only), which the benchmark builds once in
/var/tmp/code-exec-bench-runtime-lean.

The index is on loopback (tests/package_index.py), serving wheels pip downloaded once from
PyPI into ~/.cache/code-exec/bench-wheels (the package registry, as `make setup` reaches it;
nothing else leaves this machine). A loopback index makes "cold" cheap: from PyPI itself a
cold install adds the download time, which the cache then saves.
"""

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, ms, table
from executor.backends.local.backend import LocalBackend
from executor.backends.local.runtime import build_runtime, runtime_ready
from executor.backends.local.zygote import runtime_python
from executor.config import ExecutorSettings, default_runtime_dir
from schemas.languages import Language
from schemas.network import Network
from tests.package_index import PackageIndex, serve_index

PACKAGES = ["networkx==3.4.2", "tabulate==0.9.0"]
LEAN = "numpy>=2.0,<3\npandas>=2.2,<4\nmatplotlib>=3.9,<4\n"  # the runtime before issue 16
LEAN_DIR = Path("/var/tmp/code-exec-bench-runtime-lean")  # sandbox uids must reach it
WHEELS = Path.home() / ".cache" / "code-exec" / "bench-wheels"
ROUNDS = 3
STARTS = 20

INSTALL = """
import subprocess, sys, time
began = time.perf_counter()
done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *{packages!r}],
                      capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-2000:]
import networkx, tabulate
print(time.perf_counter() - began)
"""


def wheels() -> list[Path]:
    """The wheels of PACKAGES (and their dependencies), downloaded once."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
         "-d", str(WHEELS), *PACKAGES],
        check=True,
    )  # fmt: skip
    return sorted(WHEELS.glob("*.whl"))


def lean_runtime() -> Path:
    """The runtime as it was before the richer default, built once."""
    if not runtime_ready(LEAN_DIR):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write(LEAN)
            requirements.flush()
            build_runtime(LEAN_DIR, requirements=Path(requirements.name))
        for directory in (LEAN_DIR, *LEAN_DIR.parents):
            if directory == Path("/var/tmp"):
                break
            directory.chmod(0o755)
    return LEAN_DIR


def index_of(files: list[Path]) -> PackageIndex:
    index = PackageIndex()
    for path in files:
        index.add_wheel_file(path.name.split("-")[0], path.name, path.read_bytes())
    return index


async def sandbox_install(backend: LocalBackend) -> float:
    sandbox = await backend.create(Language.PYTHON, stateless=True)
    try:
        outcome = await sandbox.run(
            INSTALL.format(packages=PACKAGES), env={}, timeout=300, keep_state=False
        )
        assert outcome.exit_code == 0, outcome.stderr.text()
        return float(outcome.stdout.text().split()[-1])
    finally:
        await sandbox.close()


def host_install(index: PackageIndex) -> float:
    python = runtime_python(default_runtime_dir())
    with tempfile.TemporaryDirectory() as target:
        began = time.perf_counter()
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-cache-dir", "--target", target,
             "--index-url", index.pypi_url, *PACKAGES],
            check=True,
        )  # fmt: skip
        return time.perf_counter() - began


async def start_cost(backend: LocalBackend, stateless: bool) -> float:
    samples = []
    for _ in range(STARTS):
        began = time.perf_counter()
        sandbox = await backend.create(Language.PYTHON, stateless=stateless)
        samples.append(time.perf_counter() - began)
        await sandbox.close()
    return statistics.median(samples)


async def measure(index: PackageIndex) -> list[tuple[str, str, str, str, str]]:
    cold, cached, host = [], [], []
    reached: list[int] = []  # requests that reached the index during cached installs
    starts: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="code-exec-bench-") as state:
            backend = LocalBackend(
                ExecutorSettings(
                    state_dir=Path(state),
                    network=Network.PACKAGES,
                    pypi_index_url=index.pypi_url,
                )
            )
            await backend.start()
            try:
                cold.append(await sandbox_install(backend))
                asked = len(index.requests)
                cached.append(await sandbox_install(backend))
                reached.append(len(index.requests) - asked)
            finally:
                await backend.close()
        host.append(await asyncio.to_thread(host_install, index))
    for name, runtime in (("richer", default_runtime_dir()), ("lean", lean_runtime())):
        with tempfile.TemporaryDirectory(prefix="code-exec-bench-") as state:
            backend = LocalBackend(ExecutorSettings(state_dir=Path(state), runtime_dir=runtime))
            await backend.start()
            try:
                starts[f"bubblewrap, {name}"] = await start_cost(backend, stateless=False)
                if backend.separate_stateless(Language.PYTHON):
                    starts[f"zygote, {name}"] = await start_cost(backend, stateless=True)
            finally:
                await backend.close()
        du = ["du", "-sm", str(runtime)]
        done = await asyncio.to_thread(
            subprocess.run, du, capture_output=True, text=True, check=True
        )
        sizes[name] = int(done.stdout.split()[0])
    anchor = statistics.median(host)
    names = " ".join(PACKAGES)
    rows = [
        (f"pip install {names}: cold (mirror fetches)", ms(statistics.median(cold)),
         f"{ms(anchor)} (pip on the host)", f"{statistics.median(cold) / anchor:.2f}x", ""),
        (f"pip install {names}: cached", ms(statistics.median(cached)),
         f"{ms(anchor)}", f"{statistics.median(cached) / anchor:.2f}x",
         f"index requests: {sum(reached)}"),
    ]  # fmt: skip
    rows.append(
        ("sandbox runtime size", f"{sizes['richer']} MiB", f"{sizes['lean']} MiB (lean)",
         f"{sizes['richer'] / sizes['lean']:.2f}x", "")
    )  # fmt: skip
    for kind in ("bubblewrap", "zygote"):
        if f"{kind}, richer" in starts:
            richer, lean = starts[f"{kind}, richer"], starts[f"{kind}, lean"]
            rows.append(
                (f"python sandbox start p50 ({kind})", ms(richer), f"{ms(lean)} (lean)",
                 f"{richer / lean:.2f}x", "")
            )  # fmt: skip
    return rows


def main() -> None:
    """Print the table."""
    print(f"machine: {machine()}")
    index = index_of(wheels())
    with serve_index(index):
        rows = asyncio.run(measure(index))
    print(table(rows))


if __name__ == "__main__":
    main()
