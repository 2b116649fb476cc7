"""The launcher: the command that starts bubblewrap with the policy's limits applied.

A command prefix, not a preexec_fn: a preexec_fn would force a full fork() of the executor and
run Python in the child, blocking the event loop for tens of milliseconds per sandbox; a small
program keeps the spawn on the vfork path and does the child-side work in the child. That
program is code-exec-launch (launch.c), built with the host's C compiler when the backend
starts; where none is there, a bash prologue and setpriv do the same steps (about 3.6 ms more
CPU per sandbox).
"""

import fcntl
import hashlib
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from executor.backends.local.policy import SandboxPolicy
from executor.backends.local.protocol import CONTROL_IN_FD, CONTROL_OUT_FD
from schemas.languages import Language

# Runs in the child before bubblewrap: control pipes to the runner's control fds (the control
# input arrives as stdin), rlimits, join the sandbox's cgroups, then exec the rest of argv.
# bash's ulimit counts -f, -c and -v in KiB.
_PROLOGUE = rf"""
exec {CONTROL_IN_FD}<&0 {CONTROL_OUT_FD}>&"$1" 0</dev/null && eval "exec $1>&-"
ulimit -f "$2" -n "$3" -c "$4"
[ -n "$5" ] && ulimit -v "$5"
[ -n "$6" ] && ulimit -u "$6"
n=$7; shift 7
while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n - 1)); done
exec "$@"
"""
log = logging.getLogger(__name__)
LAUNCHER = "code-exec-launch"


def _trusted(path: Path) -> bool:
    """Whether path is a regular file of this user's that nobody else can change."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def build_launcher(directory: Path) -> Path | None:
    """code-exec-launch for this source, in directory: the one built there before (named by
    the source's and compiler's digest, this user's, writable by nobody else), or compiled now
    (blocking: call it off the event loop). None when the host has no C compiler or the build
    fails (the bash prologue serves then)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler: sandboxes start through bash and setpriv")
        return None
    source = files("executor.backends.local").joinpath("launch.c").read_bytes()
    digest = hashlib.sha256(source + compiler.encode()).hexdigest()[:16]
    target = directory / f"{LAUNCHER}-{digest}"
    if _trusted(target):
        return target  # compiling costs about 160 ms of CPU: once per source, not per start
    building = directory / f".{target.name}.{os.getpid()}"
    try:
        done = subprocess.run(
            [compiler, "-O2", "-Wall", "-Werror", "-x", "c", "-o", str(building), "-"],
            input=source,
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            os.chmod(building, 0o700)
            os.replace(building, target)  # whole, or not at all, for a concurrent start
            return target
        failure = done.stderr.decode(errors="replace")[-2000:]
    except OSError as exc:
        failure = str(exc)
    building.unlink(missing_ok=True)
    log.warning("building %s failed, using bash and setpriv: %s", LAUNCHER, failure)
    return None


# Descriptors the executor passes through the prologue are numbered from here, clear of 0-2 and
# of the control fds it takes over: `exec 3<&0` must not replace one of them.
_FIRST_PASSED_FD = 10


def above_launcher_fds(fd: int) -> int:
    """fd renumbered clear of the descriptors the prologue takes over; the original is closed."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FIRST_PASSED_FD)
    finally:
        os.close(fd)


def launch_prefix(
    policy: SandboxPolicy,
    language: Language,
    *,
    uid: int,
    gid: int,
    control_out: int,
    cgroup_procs: Sequence[str],
    launcher: Path | None = None,
) -> list[str]:
    """The argv that goes before bubblewrap's: limits, cgroups, host identity, death signal.

    control_out is the executor's fd (passed to the child) that becomes the runner's control
    output; the child's stdin becomes its control input. uid and gid are the sandbox's host
    identity, taken only when the policy gives each sandbox its own. With launcher (the built
    code-exec-launch) it does the work; else the bash prologue and setpriv.
    """
    limits = policy.limits
    address_space = limits.address_space_for(language)
    steps = [
        str(control_out),
        str(limits.file_size_mib * 1024),
        str(limits.open_files),
        str(limits.core_mib * 1024),
        str(address_space * 1024) if address_space is not None else "",
        str(limits.nproc) if limits.nproc is not None else "",
        str(len(cgroup_procs)),
        *cgroup_procs,
    ]
    if launcher is not None:
        identity = [str(uid), str(gid)] if policy.own_host_uid else ["", ""]
        death = "1" if policy.die_with_parent else "0"
        return [str(launcher), *steps, *identity, death, "--"]
    identity = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"] if policy.own_host_uid else []
    # setpriv applies the death signal after changing uid (which would clear it).
    setpriv_death = ["--pdeathsig", "KILL"] if policy.die_with_parent else []
    return [
        "/bin/bash",
        "--noprofile",
        "--norc",
        "-c",
        _PROLOGUE,
        LAUNCHER,
        *steps,
        "setpriv",
        *identity,
        *setpriv_death,
        "--",
    ]
