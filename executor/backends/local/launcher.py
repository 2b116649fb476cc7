"""The launcher: the command that starts bubblewrap with the policy's limits applied.

A command prefix, not a preexec_fn: a preexec_fn would force a full fork() of the executor and
run Python in the child, blocking the event loop for tens of milliseconds per sandbox; a small
bash prologue keeps the spawn on the vfork path and does the child-side work in the child.
"""

import fcntl
import os
from collections.abc import Sequence

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
) -> list[str]:
    """The argv that goes before bubblewrap's: limits, cgroups, host identity, death signal.

    control_out is the executor's fd (passed to the child) that becomes the runner's control
    output; the child's stdin becomes its control input. uid and gid are the sandbox's host
    identity, taken only when the policy gives each sandbox its own.
    """
    limits = policy.limits
    address_space = limits.address_space_for(language)
    identity = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"] if policy.own_host_uid else []
    # setpriv applies the death signal after changing uid (which would clear it).
    death = ["--pdeathsig", "KILL"] if policy.die_with_parent else []
    return [
        "/bin/bash",
        "--noprofile",
        "--norc",
        "-c",
        _PROLOGUE,
        "code-exec-launch",
        str(control_out),
        str(limits.file_size_mib * 1024),
        str(limits.open_files),
        str(limits.core_mib * 1024),
        str(address_space * 1024) if address_space is not None else "",
        str(limits.nproc) if limits.nproc is not None else "",
        str(len(cgroup_procs)),
        *cgroup_procs,
        "setpriv",
        *identity,
        *death,
        "--",
    ]
