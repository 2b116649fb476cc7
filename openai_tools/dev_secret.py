"""Secrets the API host makes itself and keeps under the state dir, so they survive restarts:
the dev-mode HS256 secret (dev tokens), and the key of signed download URLs when none is set.

Each is a 0600 file in a 0700 directory of this user (`<state_dir>/api-<uid>/<name>`),
opened without following links; one that another user owns or can read is refused, with
what to do. Concurrent first starts agree on one secret.
"""

import os
import secrets
import stat
from pathlib import Path

DEV_SECRET_FILE = "dev-jwt-secret"
URL_KEY_FILE = "url-signing-key"
MIN_SECRET_CHARS = 32
MAX_SECRET_BYTES = 1024


def kept_secret_path(state_dir: Path, name: str) -> Path:
    """Where a kept secret lives: a 0600 file in a 0700 directory of this user."""
    return state_dir / f"api-{os.getuid()}" / name


def dev_secret_path(state_dir: Path) -> Path:
    """Where dev mode keeps its signing secret: a 0600 file in a 0700 directory of this user."""
    return kept_secret_path(state_dir, DEV_SECRET_FILE)


def _private(info: os.stat_result, path: Path, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise RuntimeError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}); {what} "
            "must be this user's own: remove it, or set CODE_EXEC_STATE_DIR to a "
            "directory of yours"
        )
    if info.st_mode & 0o077:
        mode = "700" if stat.S_ISDIR(info.st_mode) else "600"
        raise RuntimeError(
            f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); run "
            f"`chmod {mode} {path}`, or remove it to have a new one made"
        )


def _read_secret(directory: int, path: Path, what: str) -> str:
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise RuntimeError(f"cannot read {what} {path} ({exc}); remove it") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RuntimeError(f"{path} is not a regular file; remove it")
        _private(info, path, what)
        secret = file.read(MAX_SECRET_BYTES + 1).decode("ascii", "replace").strip()
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_BYTES:
        raise RuntimeError(
            f"{path} does not hold a usable secret ({MIN_SECRET_CHARS} to {MAX_SECRET_BYTES} "
            "characters); remove it to have a new one made"
        )
    return secret


def dev_secret(state_dir: Path) -> str:
    """The dev-mode HS256 secret kept under state_dir: read, or made once (then kept)."""
    return kept_secret(state_dir, DEV_SECRET_FILE, "the dev secret", "CODE_EXEC_JWT_SECRET")


def kept_secret(state_dir: Path, name: str, what: str, setting: str) -> str:
    """The secret kept in the file name under state_dir: read, or made once (then kept).

    what names it in errors ("the dev secret"); setting is the variable that replaces it."""
    path = kept_secret_path(state_dir, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise RuntimeError(
            f"cannot keep {what} in {path.parent} ({exc}); set CODE_EXEC_STATE_DIR to a "
            f"directory of yours, or set {setting}"
        ) from None
    try:
        _private(os.fstat(directory), path.parent, what)
        try:
            return _read_secret(directory, path, what)
        except FileNotFoundError:
            pass
        # Written whole under a temporary name, then linked into place: a concurrent start
        # either wins the link or reads the winner's secret, never a half-written one.
        temporary = f"{name}.{os.getpid()}.{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(temporary, flags, 0o600, dir_fd=directory)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary, dir_fd=directory)
        return _read_secret(directory, path, what)
    finally:
        os.close(directory)
