"""The policy as bubblewrap applies it: its command line, and the /etc files it binds in.

What a sandbox can see and do is decided in policy.py; this module only translates.
"""

import os
from pathlib import Path

from executor.backends.local.policy import Mount, MountKind, SandboxPaths, SandboxPolicy
from schemas.languages import Language

_UNSHARE = {
    "user": ["--unshare-user"],
    "pid": ["--unshare-pid"],
    "net": ["--unshare-net"],
    "ipc": ["--unshare-ipc"],
    "uts": ["--unshare-uts"],
    "mount": [],  # bubblewrap always makes one
    # As --unshare-all has it: kernels without cgroup namespaces still get a sandbox.
    "cgroup": ["--unshare-cgroup-try"],
}


def _mount_args(mount: Mount, paths: SandboxPaths) -> list[str]:
    match mount.kind:
        case MountKind.BIND:
            option = "--bind" if mount.writable else "--ro-bind"
            return [
                f"{option}-try" if mount.optional else option,
                mount.host_source(paths),
                mount.target,
            ]
        case MountKind.SYMLINK:
            return ["--symlink", mount.host_source(paths), mount.target]
        case MountKind.DIR:
            return ["--dir", mount.target]
        case MountKind.TMPFS:
            return ["--tmpfs", mount.target]
        case MountKind.PROC:
            return ["--proc", mount.target]
        case MountKind.DEV:
            return ["--dev", mount.target]
        case MountKind.REMOUNT_RO:
            return ["--remount-ro", mount.target]


def bwrap_command(policy: SandboxPolicy, language: Language, paths: SandboxPaths) -> list[str]:
    """Full argv: bwrap, the policy as its options, then the language's runner."""
    args = ["bwrap"]
    for namespace in policy.namespaces:
        args += _UNSHARE[namespace]
    if not policy.nested_user_namespaces:
        args.append("--disable-userns")
    if policy.die_with_parent:
        args.append("--die-with-parent")
    if policy.new_session:
        args.append("--new-session")
    args += ["--cap-drop", "ALL"]
    for capability in policy.capabilities:
        args += ["--cap-add", capability]
    args += ["--uid", str(policy.uid), "--gid", str(policy.gid), "--hostname", policy.hostname]
    for mount in policy.mounts:
        args += _mount_args(mount, paths)
    args += ["--chdir", policy.workdir, "--clearenv"]
    for key, value in policy.environment.items():
        args += ["--setenv", key, value]
    args += ["--", *policy.runners[language]]
    return args


def write_etc(etc: Path, policy: SandboxPolicy) -> None:
    """Write the /etc files the policy binds from the executor's etc directory."""
    etc.mkdir(parents=True, exist_ok=True)
    for name, text in policy.etc_files().items():
        (etc / name).write_text(text)
        os.chmod(etc / name, 0o644)
