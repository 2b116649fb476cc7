"""Run a command under a container's seccomp profile, as runc or crun would load it.

    python -m tests.deploy.under_profile PROFILE.json COMMAND...

Docker cannot run on this project's machine; this loads the same JSON (the subset of the OCI
profile format that deploy/seccomp-executor.json uses: a default action, architectures, rules
with names, SCMP_ACT_ERRNO or SCMP_ACT_ALLOW, errnoRet and argument conditions) with
libseccomp, then execs the command. As Docker does for a process that has CAP_SYS_ADMIN, it
does not set no_new_privs. Started under `setpriv --bounding-set` with a container's
capabilities, the command then runs as the executor would in the container, less its mount
and cgroup namespaces.
"""

import errno
import json
import os
import sys
from typing import Any

import pyseccomp as sc  # type: ignore[import-untyped]

_OPS = {"SCMP_CMP_EQ": sc.EQ, "SCMP_CMP_NE": sc.NE, "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ}
_ARCHES = {"SCMP_ARCH_X86_64": sc.Arch.X86_64, "SCMP_ARCH_X86": sc.Arch.X86, "SCMP_ARCH_X32": sc.Arch.X32}


def _action(name: str, errno_ret: int | None) -> Any:
    if name == "SCMP_ACT_ALLOW":
        return sc.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return sc.ERRNO(errno.EPERM if errno_ret is None else errno_ret)
    raise ValueError(f"this loader does not know the action {name}")


def load(profile: dict[str, Any]) -> None:
    """Load the profile into this process (and so into everything it execs and starts)."""
    flt = sc.SyscallFilter(_action(profile["defaultAction"], profile.get("defaultErrnoRet")))
    flt.set_attr(sc.Attr.CTL_NNP, 0)
    for arch in profile.get("architectures", []):
        if _ARCHES[arch] != sc.system_arch():
            flt.add_arch(_ARCHES[arch])
    for rule in profile["syscalls"]:
        action = _action(rule["action"], rule.get("errnoRet"))
        conditions = [
            sc.Arg(arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0))
            for arg in rule.get("args", [])
        ]
        for name in rule["names"]:
            flt.add_rule(action, name, *conditions)
    flt.load()


def main() -> None:
    profile_path, *command = sys.argv[1:]
    with open(profile_path) as f:
        load(json.load(f))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
