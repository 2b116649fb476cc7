"""A sandbox's workspace on the host: /home/user and /tmp of the sandbox, size-limited.

When the executor is root, each workspace is its own tmpfs with a size limit (the disk quota).
The sandbox owns these files and may plant symlinks in them, so every host-side access walks
the path one component at a time with O_NOFOLLOW: nothing the sandbox writes can send the
executor to a file outside the workspace.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from executor.errors import FileNotFound, InvalidRequest, PayloadTooLarge
from schemas.execution import MAX_PATH_DEPTH, check_workspace_path
from schemas.files import FileInfo

_MS_NOSUID = 2
_MS_NODEV = 4
_MNT_DETACH = 2
_MAX_LISTED = 10_000

_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, size_bytes: int, uid: int, gid: int) -> None:
    options = f"size={size_bytes},mode=0755,uid={uid},gid={gid}".encode()
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def _umount(target: Path) -> None:
    _libc.umount2(str(target).encode(), _MNT_DETACH)


def on_tmpfs(path: Path) -> bool:
    """Whether path lies on a tmpfs: files there are memory, charged to the memory cgroup of
    the process that writes them (so a sandbox's files count against its memory limit)."""
    best, fstype = "", ""
    resolved = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[fields.index("-") + 1]
    return fstype == "tmpfs"


def tmpfs_supported(probe_dir: Path) -> bool:
    """Whether this process may mount a size-limited tmpfs (root, or CAP_SYS_ADMIN)."""
    probe = probe_dir / ".mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        _mount_tmpfs(probe, 1024 * 1024, os.getuid(), os.getgid())
    except OSError:
        return False
    finally:
        _umount(probe)
        with contextlib.suppress(OSError):
            probe.rmdir()
    return True


class Workspace:
    """The host directory holding one sandbox's home/ and tmp/."""

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.root = root
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.uid = uid
        self.gid = gid
        self.mounted = False

    def create(self, size_bytes: int | None) -> None:
        """Make the directories, on a tmpfs of size_bytes when given."""
        self.root.mkdir(parents=True, mode=0o700)
        if size_bytes is not None:
            _mount_tmpfs(self.root, size_bytes, self.uid, self.gid)
            self.mounted = True
        for d in (self.home, self.tmp):
            d.mkdir(mode=0o755)
            os.chown(d, self.uid, self.gid)
        os.chmod(self.tmp, 0o1777)

    def destroy(self) -> None:
        """Unmount and delete everything."""
        if self.mounted:
            _umount(self.root)
            self.mounted = False
        shutil.rmtree(self.root, ignore_errors=True)

    def copy_in(self, source: Path, relative_to_tmp: str) -> None:
        """Copy a host file into the sandbox's /tmp (e.g. a prebuilt font cache)."""
        target_dir = self.tmp / Path(relative_to_tmp).parent
        target_dir.mkdir(parents=True, exist_ok=True)
        os.chown(target_dir, self.uid, self.gid)
        target = self.tmp / relative_to_tmp
        shutil.copyfile(source, target)
        os.chown(target, self.uid, self.gid)

    # --- safe access to files the sandbox may have tampered with ---

    def _open_dir(self, parts: list[str], create: bool) -> int:
        fd = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in parts:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError:
            os.close(fd)
            raise
        return fd

    def write_file(self, path: str, data: bytes | Path) -> None:
        """Write data (or copy a host file) at path relative to /home/user, making dirs."""
        parts = check_workspace_path(path).split("/")
        try:
            dfd = self._open_dir(parts[:-1], create=True)
        except OSError as exc:
            raise InvalidRequest(
                f"cannot create the directory for {path!r}: {exc.strerror}"
            ) from exc
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
            try:
                fd = os.open(parts[-1], flags, 0o644, dir_fd=dfd)
            except OSError as exc:
                raise InvalidRequest(f"cannot write {path!r}: {exc.strerror}") from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise InvalidRequest(f"cannot write {path!r}: not a regular file")
                os.fchown(fd, self.uid, self.gid)
                if isinstance(data, Path):
                    with open(data, "rb") as source, os.fdopen(os.dup(fd), "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                else:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise PayloadTooLarge(
                        f"cannot write {path!r}: the workspace is full ({exc.strerror})"
                    ) from exc
                raise
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def open_regular(self, path: str, max_bytes: int) -> tuple[BinaryIO, int]:
        """A regular file of the workspace, opened for reading, and its size (at most max_bytes).

        The file object owns the descriptor, so one that is never read is still closed.
        """
        parts = check_workspace_path(path).split("/")
        try:
            dfd = self._open_dir(parts[:-1], create=False)
        except OSError as exc:
            raise FileNotFound(f"no file {path!r} in the workspace") from exc
        try:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except OSError as exc:
                raise FileNotFound(f"no file {path!r} in the workspace") from exc
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise FileNotFound(f"{path!r} is not a regular file")
                if st.st_size > max_bytes:
                    raise PayloadTooLarge(
                        f"{path!r} is {st.st_size} bytes, above the download limit of {max_bytes}"
                    )
            except BaseException:
                os.close(fd)
                raise
            return os.fdopen(fd, "rb", buffering=0), st.st_size
        finally:
            os.close(dfd)

    def read_file(self, path: str, max_bytes: int) -> bytes:
        """Read a regular file of the workspace, at most max_bytes."""
        file, _ = self.open_regular(path, max_bytes)
        with file:
            data = file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{path!r} is above the download limit of {max_bytes}")
        return data

    def list_files(self, path: str = "") -> list[FileInfo]:
        """Every file and directory under path (relative to /home/user), depth first.

        At most _MAX_LISTED entries, and nothing deeper than a path the API can name
        (MAX_PATH_DEPTH): a tree thousands of levels deep is listed to that depth, without
        recursion, holding one descriptor per level.
        """
        parts = check_workspace_path(path).split("/") if path not in ("", ".", "/home/user") else []
        try:
            dfd = self._open_dir(parts, create=False)
        except OSError as exc:
            raise FileNotFound(f"no directory {path!r} in the workspace") from exc
        found: list[FileInfo] = []
        self._walk(dfd, "/".join(parts), len(parts), found)
        found.sort(key=lambda f: f.path)
        return found

    def _walk(self, top: int, prefix: str, depth: int, found: list[FileInfo]) -> None:
        # A stack of open directories being scanned: (fd, its path, its depth, its entries).
        stack = [(top, prefix, depth, os.scandir(top))]
        try:
            while stack:
                dfd, here, level, entries = stack[-1]
                entry = next(entries, None)
                if entry is None or len(found) >= _MAX_LISTED:
                    entries.close()
                    os.close(dfd)
                    stack.pop()
                    continue
                rel = f"{here}/{entry.name}" if here else entry.name
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                found.append(
                    FileInfo(
                        path=rel,
                        size=0 if is_dir else st.st_size,
                        is_dir=is_dir,
                        modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
                    )
                )
                if not is_dir or level + 1 >= MAX_PATH_DEPTH:
                    continue
                try:
                    child = os.open(
                        entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd
                    )
                except OSError:
                    continue
                stack.append((child, rel, level + 1, os.scandir(child)))
        finally:
            for dfd, _, _, entries in stack:
                entries.close()
                os.close(dfd)
