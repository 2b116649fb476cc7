"""The bubblewrap command line of a sandbox: what it can see and what it runs.

Namespaces: user, pid, net, ipc, uts, mount, cgroup (all new); no further user namespaces.
Visible: /usr and the runtime read-only, a private /home/user and /tmp, a fresh /proc and /dev.
Nothing else of the host's filesystem, no network but a private loopback, a clean environment.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from schemas.languages import Language

RUNNERS_DIR = Path(__file__).resolve().parent / "runners"
SANDBOX_RUNNERS = "/opt/code-exec/runners"
# Fixed, so that no host path of the runtime (which may lie under /tmp) is shadowed or shown.
SANDBOX_RUNTIME = Path("/opt/code-exec/runtime")
SANDBOX_UID = 1000
SANDBOX_GID = 1000

# Files of /etc the runtimes read; everything else of the host's /etc stays hidden.
_ETC_FILES = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
)


@dataclass(frozen=True)
class SandboxPaths:
    """Host paths a sandbox mounts."""

    home: Path
    tmp: Path
    runtime: Path
    etc: Path


def runner_command(language: Language) -> list[str]:
    """The command that starts the runner of a language inside the sandbox."""
    python = str(SANDBOX_RUNTIME / "python" / "bin" / "python")
    match language:
        case Language.PYTHON:
            return [python, "-I", f"{SANDBOX_RUNNERS}/python_runner.py", "python"]
        case Language.C:
            return ["/usr/bin/python3", "-I", f"{SANDBOX_RUNNERS}/python_runner.py", "c"]
        case Language.BASH:
            return ["/bin/bash", "--noprofile", "--norc", f"{SANDBOX_RUNNERS}/bash_runner.sh"]
        case Language.JAVASCRIPT:
            return ["/usr/bin/node", f"{SANDBOX_RUNNERS}/node_runner.js"]


def sandbox_environment() -> dict[str, str]:
    """The whole environment of a sandbox: nothing of the executor's own."""
    return {
        "PATH": f"{SANDBOX_RUNTIME / 'python' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/user",
        "USER": "user",
        "LOGNAME": "user",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        # glibc reserves 64 MiB of address space per malloc arena and thread; with the
        # address-space limit that would make a few threads exhaust it.
        "MALLOC_ARENA_MAX": "2",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "module://code_exec_mpl_backend",
        "PYTHONPATH": f"{SANDBOX_RUNNERS}/pythonpath",
        "MPLCONFIGDIR": "/tmp/.config/matplotlib",
    }


def _usr_merged_links() -> list[str]:
    args: list[str] = []
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def bwrap_command(language: Language, paths: SandboxPaths, hostname: str = "sandbox") -> list[str]:
    """Full argv: bwrap, its options, then the language's runner."""
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--hostname",
        hostname,
        "--ro-bind",
        "/usr",
        "/usr",
        # /usr/local holds whatever the host installed by hand; the runtimes do not need it.
        "--tmpfs",
        "/usr/local",
        *_usr_merged_links(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--dir",
        "/etc",
    ]
    for name in _ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts", "hostname", "nsswitch.conf"):
        args += ["--ro-bind", str(paths.etc / name), f"/etc/{name}"]
    args += [
        "--ro-bind",
        str(paths.runtime),
        str(SANDBOX_RUNTIME),
        "--ro-bind",
        str(RUNNERS_DIR),
        SANDBOX_RUNNERS,
        "--bind",
        str(paths.home),
        "/home/user",
        "--bind",
        str(paths.tmp),
        "/tmp",
        # Everything not mounted writable above (/, /etc, /opt, ...) becomes read-only: the
        # workspace and /tmp, with their size limit, are the only places to write.
        "--remount-ro",
        "/",
        "--chdir",
        "/home/user",
        "--clearenv",
    ]
    for key, value in sandbox_environment().items():
        args += ["--setenv", key, value]
    args += ["--", *runner_command(language)]
    return args


def write_etc(etc: Path, hostname: str = "sandbox") -> None:
    """The few /etc files a sandbox sees, naming its unprivileged user."""
    etc.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"user:x:{SANDBOX_UID}:{SANDBOX_GID}:user:/home/user:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\nuser:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1 localhost {hostname}\n::1 localhost\n",
        "hostname": f"{hostname}\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }
    for name, text in files.items():
        (etc / name).write_text(text)
        os.chmod(etc / name, 0o644)
