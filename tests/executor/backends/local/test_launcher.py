"""code-exec-launch (launch.c) run directly: the steps before bubblewrap, each checked from
the command it execs, and a clear failure for what it cannot do. (Every sandbox test runs on
it and on the bash fallback: the `backend` fixture.)"""

import os
import subprocess
from pathlib import Path

import pytest

from executor.backends.local.launcher import build_launcher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_launcher(tmp_path_factory.mktemp("launcher"))
    assert built is not None, "no C compiler on this host"
    return built


def launch(launcher: Path, *steps: str, command: str) -> subprocess.CompletedProcess[str]:
    read, write = os.pipe()
    try:
        return subprocess.run(
            [str(launcher), str(write), *steps, "--", "/bin/sh", "-c", command],
            pass_fds=(write,),
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(read)
        os.close(write)


def test_limits_identity_and_descriptors(launcher: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("taking another uid needs root")
    probe = (
        "grep -E '^Max (file size|open files|core file size|address space|processes) ' "
        "/proc/self/limits | awk '{print $(NF-1)}' | tr '\\n' ' '; echo;"
        " id -u; id -g; id -G; grep -E '^(CapEff|CapPrm)' /proc/self/status | tr -s '\\t' ' ';"
        " ls /proc/self/fd | sort -n | tr '\\n' ' '"
    )
    done = launch(
        launcher, "9216", "77", "0", "307200", "40", "0", "65534", "65534", "1", command=probe
    )
    assert done.returncode == 0, done.stderr
    limits, uid, gid, groups, capprm, capeff, fds = done.stdout.splitlines()  # status's order
    # file size, core, processes, open files, address space: as /proc/self/limits lists them.
    assert limits.split() == [str(9216 * 1024), "0", "40", "77", str(307200 * 1024)]
    assert (uid, gid, groups) == ("65534", "65534", "65534")
    assert capeff == "CapEff: 0000000000000000" and capprm == "CapPrm: 0000000000000000"
    # stdin, stdout, stderr, the control input (3) and output (4), and ls's own directory fd.
    assert fds.split()[:5] == ["0", "1", "2", "3", "4"]


def test_cgroups_are_joined(launcher: Path, tmp_path: Path) -> None:
    procs = [tmp_path / "memory.procs", tmp_path / "pids.procs"]
    for path in procs:
        path.write_text("")
    done = launch(
        launcher, "9216", "77", "0", "", "", "2", *map(str, procs), "", "", "0", command="true"
    )
    assert done.returncode == 0, done.stderr
    assert [path.read_text() for path in procs] == ["0", "0"]


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        (["x", "77", "0", "", "", "0", "", "", "0"], "RLIMIT_FSIZE"),
        (["9216", "77", "0", "", "", "5", "", "", "0"], "ncgroups"),
        (
            ["9216", "77", "0", "", "", "1", "/nonexistent/cgroup.procs", "", "", "0"],
            "/nonexistent",
        ),
    ],
)
def test_what_it_cannot_do_is_exit_125_with_the_step(
    launcher: Path, steps: list[str], says: str
) -> None:
    done = launch(launcher, *steps, command="echo ran")
    assert done.returncode == 125
    assert done.stdout == ""
    assert done.stderr.startswith("code-exec-launch: ") and says in done.stderr
