"""Atomic, symlink-safe file operations: every write, fsync, rename, mkdir and unlink the store makes.

All file-system mutations go through the functions here (`tests/test_lint.py` fails on any other),
so that a single module decides how a change becomes durable, and fault-injection tests can fail
any one of them. The rule for durability: a create, rename, unlink or mkdir a promise depends on
is made durable by a sync of its parent directory (`fsync_dir`), since on a weak file system the
name is not on disk until then, whatever happened to the file's data.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "append_note",
    "append_whole",
    "atomic_write",
    "create_empty",
    "fsync_dir",
    "link",
    "make_dir",
    "make_dirs",
    "open_append",
    "open_lock",
    "open_read",
    "read_file",
    "remove_entry",
    "remove_tree",
    "rename",
    "set_mtime",
    "sync",
    "sync_path",
    "temp_name",
    "touch",
    "unlink",
    "write_all",
    "write_at",
    "write_temp",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_WRITE_BATCH = 1 << 20


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte; `os.write` may write less than asked (large buffers, signals)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync(fd: int) -> None:
    """Make the file's data durable (fdatasync where it exists: the size is data too)."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS and Windows
        os.fsync(fd)


def sync_path(path: Path) -> None:
    """Make the data of a file that another writer (SQLite) wrote durable, never through a symlink."""
    fd = open_read(path)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError as exc:  # pragma: no cover - Windows
        if exc.errno in (errno.EACCES, errno.EISDIR):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename(src: Path, dst: Path) -> None:
    """Atomically replace `dst` by `src` (same directory); durable only after `fsync_dir`."""
    os.replace(src, dst)


def link(src: Path, dst: Path) -> None:
    """Give `src` a second name `dst`; FileExistsError if `dst` exists (never replaces)."""
    os.link(src, dst, follow_symlinks=False)


def unlink(path: Path) -> None:
    """Remove one name (a symlink itself, never its target); FileNotFoundError if absent."""
    os.unlink(path)


def make_dir(path: Path) -> bool:
    """Create one directory with mode 0700 whatever the umask; False if it already existed.

    The new name is durable only after `fsync_dir(path.parent)`.
    """
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)
    return True


def make_dirs(path: Path, *, durable: bool) -> None:
    """Create `path` and any missing parents (0700); `durable`: sync each parent that gained one."""
    if os.path.isdir(path):
        return
    parent = path.parent
    if parent != path:
        make_dirs(parent, durable=durable)
    if make_dir(path) and durable:
        fsync_dir(parent)


def temp_name(target: str) -> str:
    """A fresh dot-file name beside `target`, so crash leftovers are hidden and recognisable."""
    return f".{target}.{secrets.token_hex(6)}.tmp"


def _create_exclusive(path: Path) -> int:
    # O_EXCL also refuses a planted symlink, so a temp file is never written through one.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


Piece = bytes | tuple[int, int, int]  # bytes to write, or (descriptor, offset, length) to copy


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    # The kernel copies (and may share blocks) without the bytes passing through Python.
    while length > 0:
        try:
            done = os.copy_file_range(src, dst, length, offset)
        except (AttributeError, OSError):  # pragma: no cover - no copy_file_range here
            done = 0
        if done <= 0:
            chunk = os.pread(src, min(length, _WRITE_BATCH), offset)
            if not chunk:
                raise OSError(errno.EIO, "file shrank while being copied")
            write_all(dst, chunk)
            done = len(chunk)
        offset += done
        length -= done


def write_temp(target: Path, pieces: Iterable[Piece], *, durable: bool = True) -> Path:
    """Write `pieces` (bytes, or ranges copied from open files) to a new dot-file beside `target`
    (synced if `durable`) and return its path. Nothing is renamed; on any error it is removed."""
    tmp = target.parent / temp_name(target.name)
    fd = _create_exclusive(tmp)
    try:
        try:
            # Rewrites yield a line at a time: gather them, one write per megabyte, not per line.
            pending: list[bytes] = []
            size = 0
            for piece in pieces:
                if not isinstance(piece, bytes):
                    write_all(fd, b"".join(pending))
                    pending, size = [], 0
                    _copy_range(piece[0], fd, piece[1], piece[2])
                    continue
                pending.append(piece)
                size += len(piece)
                if size >= _WRITE_BATCH:
                    write_all(fd, b"".join(pending))
                    pending, size = [], 0
            if pending:
                write_all(fd, b"".join(pending))
            if durable:
                sync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: Path, pieces: Iterable[Piece], *, durable: bool = True, sync_dir: bool | None = None) -> None:
    """Replace `path` by `pieces`: temp file in the same directory, fsync, rename, fsync the dir.

    A reader sees the old file or the new one, never a mix; on any error the temp file is removed
    and `path` is unchanged. A piece copied from an open file never passes through Python.
    `sync_dir=False` (default: `durable`) skips the directory sync: after a power cut the rename
    may then be undone, but it stays all-or-nothing, since the file was synced before it.
    """
    tmp = write_temp(path, pieces, durable=durable)
    try:
        rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable if sync_dir is None else sync_dir:
        fsync_dir(path.parent)


def append_whole(fd: int, data: bytes, size: int, *, durable: bool) -> None:
    """Append `data` to a file of `size` bytes opened for appending, synced if `durable`; on any
    error the file is cut back to `size`, so nothing partial stays visible."""
    try:
        write_all(fd, data)
        if durable:
            sync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def open_read(path: str | os.PathLike[str]) -> int:
    """Open a regular file for reading without following a symlink; raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    return fd


def open_append(path: Path, *, create: bool = True, durable: bool = False) -> tuple[int, os.stat_result]:
    """Open a regular file for appending (and `pread`), never through a symlink; also its stat.

    `create`: make it (0600) if absent, else FileNotFoundError; `durable`: a file just made has its
    name synced to disk (`fsync_dir`) before this returns, so what is appended and synced survives.
    """
    flags = os.O_RDWR | os.O_APPEND | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
        fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
        if durable:
            try:
                fsync_dir(path.parent)
            except BaseException:
                os.close(fd)
                raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    return fd, st


def append_note(path: str, data: bytes) -> None:
    """Append a small record (well under a page) with one `O_APPEND` write, never through a symlink.

    One write of a few bytes is atomic against other appenders on a local file system, so
    records of concurrent processes never interleave. FileNotFoundError if the file is absent.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def open_lock(path: Path) -> int:
    """Open (creating 0600 if needed) a lock file read-write, never through a symlink.

    A lock file's name needs no sync: losing it loses no data, the next open makes it again.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, FILE_MODE)
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    return fd


def create_empty(path: Path) -> None:
    """Create an empty 0600 file; FileExistsError if the name exists (a symlink included)."""
    os.close(_create_exclusive(path))


def read_file(path: Path) -> bytes | None:
    """The whole file, or None when it does not exist; never follows a symlink."""
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a directory tree without following any symlink in it (links are unlinked, not entered)."""
    for entry in os.scandir(path):
        full = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            remove_tree(full)
        else:
            os.unlink(full)
    os.rmdir(path)


def remove_entry(path: Path) -> bool:
    """Remove a file, a symlink (the link itself) or a tree without following links; True if gone."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            remove_tree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return not os.path.lexists(path)


_UTIME_NOFOLLOW = os.utime in os.supports_follow_symlinks


def touch(path: str | Path) -> None:
    """Set the mtime of `path` to now, creating it empty (0600) if absent; never through a symlink.

    A marker whose only content is its mtime: one `utimensat`, no data written, no lock.
    """
    try:
        if _UTIME_NOFOLLOW:
            os.utime(path, follow_symlinks=False)
        else:  # pragma: no cover - platforms without utimensat
            os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # created meanwhile: its mtime is now anyway
            os.close(_create_exclusive(Path(path)))


def set_mtime(path: Path, ns: int, *, atime_ns: int | None = None) -> None:
    """Set the mtime (and the atime: `atime_ns`, else the same) of `path` itself, never a link's target."""
    times = (ns if atime_ns is None else atime_ns, ns)
    if _UTIME_NOFOLLOW:
        os.utime(path, ns=times, follow_symlinks=False)
    else:  # pragma: no cover - platforms without utimensat
        os.utime(path, ns=times)


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write `data` at `offset` in place (for small fixed-width records)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
