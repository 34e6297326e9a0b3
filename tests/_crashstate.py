"""Record the file-system calls of a workload on a store, as operations on a model of its tree.

`Recorder` wraps the `os` functions koda_files changes a tree with (open, write, pwrite, copy_file_range,
ftruncate, fsync, fdatasync, replace, rename, link, mkdir, rmdir, unlink, remove, close, utime,
chmod, fchmod) and turns each call on a path under one root into an operation on a model of
the tree: inodes holding data, directories holding names. The initial tree is taken as durable.
tests/_crashplan.py rebuilds from the log the trees a power loss can leave.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Kinds of operation: the first three change names, the next two data; "sync" makes durable.
LINK, UNLINK, RENAME, WRITE, TRUNCATE, SYNC, META = "link", "unlink", "rename", "write", "truncate", "sync", "meta"
NAME_OPS = (LINK, UNLINK, RENAME)
DATA_OPS = (WRITE, TRUNCATE)
ROOT_INO = 0


@dataclass
class Node:
    """One inode: a directory's names (name -> inode), or a file's bytes."""

    is_dir: bool
    data: bytes = b""
    entries: dict[str, int] = field(default_factory=dict)


Tree = dict[int, Node]


@dataclass(frozen=True)
class Op:
    """One recorded change. `ino` is the directory for name ops, the file for data ops and syncs."""

    kind: str
    ino: int
    name: str = ""  # link/unlink/rename: the name (rename: the new name)
    src: str = ""  # rename: the old name, in the same directory
    target: int = -1  # link/rename: the inode the name now points at
    offset: int = 0  # write: where; truncate: the new size
    data: bytes = b""
    call: str = ""  # the os function and the path it was given, for comparing with strace
    where: str = ""

    def keys(self) -> tuple[tuple[int, str], ...]:
        """The directory entries this op changes (its order constraints in the weak model)."""
        if self.kind == RENAME:
            return ((self.ino, self.src), (self.ino, self.name))
        return ((self.ino, self.name),)


def apply(tree: Tree, op: Op, torn: int = -1) -> None:
    """Apply `op` to `tree`; `torn` >= 0 writes only that many of a write's bytes."""
    node = tree[op.ino]
    if op.kind == LINK:
        node.entries[op.name] = op.target
    elif op.kind == UNLINK:
        node.entries.pop(op.name, None)
    elif op.kind == RENAME:
        node.entries.pop(op.src, None)
        node.entries[op.name] = op.target
    elif op.kind == WRITE:
        data = op.data if torn < 0 else op.data[:torn]
        old = node.data.ljust(op.offset, b"\0")
        node.data = old[: op.offset] + data + old[op.offset + len(data) :]
    elif op.kind == TRUNCATE:
        node.data = node.data[: op.offset].ljust(op.offset, b"\0")


def copy_tree(tree: Tree) -> Tree:
    return {ino: Node(n.is_dir, n.data, dict(n.entries)) for ino, n in tree.items()}


def files_of(tree: Tree) -> dict[str, bytes | None]:
    """The tree reachable from the root: relative path -> bytes (None for a directory)."""
    out: dict[str, bytes | None] = {}

    def walk(ino: int, prefix: str) -> None:
        for name, child in sorted(tree[ino].entries.items()):
            node = tree[child]
            path = prefix + name
            out[path] = None if node.is_dir else node.data
            if node.is_dir:
                walk(child, path + "/")

    walk(ROOT_INO, "")
    return out


def read_tree(root: Path) -> dict[str, bytes | None]:
    """The real tree under `root`, in the form of `files_of` (symlinks are not expected)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for d in dirs:
            out[prefix + d] = None
        for f in files:
            out[prefix + f] = Path(dirpath, f).read_bytes()
    return dict(sorted(out.items()))


def materialise(files: dict[str, bytes | None], root: Path, mtime: float) -> None:
    """Write `files` under `root` (which must not exist); every mtime set to `mtime`."""
    root.mkdir(parents=True)
    for rel, data in files.items():
        path = root / rel
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
    for rel in reversed(list(files)):  # children first: setting them moves no directory mtime
        os.utime(root / rel, (mtime, mtime))


@dataclass
class Call:
    """One API call of the workload: ops[start:end] are its; it returned after ops[:end]."""

    label: str
    start: int
    end: int


@dataclass
class Recording:
    initial: Tree
    ops: list[Op] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


_PATCHED = ("open", "write", "pwrite", "ftruncate", "fsync", "fdatasync", "replace", "rename", "link",
            "mkdir", "rmdir", "unlink", "remove", "close", "utime", "chmod", "fchmod",
            "copy_file_range")


class Recorder:
    """Records the changes koda_files makes under `root` while `active()`; keeps `live` in step.

    Calls on paths outside the root and on descriptors it did not see opened pass through
    untouched; one lock orders the calls of all threads as they reach the kernel.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        initial = _snapshot(Path(self.root))
        self.rec = Recording(copy_tree(initial))
        self.live = initial
        self._fds: dict[int, tuple[int, bool, str]] = {}  # descriptor -> (inode, O_APPEND, path)
        self._lock = threading.RLock()
        self._real: dict[str, Any] = {}

    # ── paths and the model ──

    def _parts(self, path: Any) -> list[str] | None:
        p = os.path.normpath(os.path.abspath(os.fsdecode(os.fspath(path))))
        if p == self.root:
            return []
        if not p.startswith(self.root + os.sep):
            return None
        return p[len(self.root) + 1 :].split(os.sep)

    def _lookup(self, parts: list[str]) -> int | None:
        ino = ROOT_INO
        for name in parts:
            node = self.live[ino]
            if not node.is_dir or name not in node.entries:
                return None
            ino = node.entries[name]
        return ino

    def _parent(self, parts: list[str]) -> int:
        parent = self._lookup(parts[:-1])
        assert parent is not None, f"recorder lost track of {'/'.join(parts[:-1])}"
        return parent

    def _new_inode(self, is_dir: bool) -> int:
        ino = max(max(self.live), max(self.rec.initial)) + 1
        self.live[ino] = Node(is_dir)
        self.rec.initial[ino] = Node(is_dir)  # unnamed in the initial tree: unreachable there
        return ino

    def _log(self, op: Op) -> None:
        self.rec.ops.append(op)
        apply(self.live, op)

    # ── the wrappers ──

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        parts = None if dir_fd is not None else self._parts(path)
        if parts is None:
            return int(self._real["open"](path, flags, mode, dir_fd=dir_fd))
        with self._lock:
            existed = self._lookup(parts)
            fd = int(self._real["open"](path, flags, mode))
            ino = existed
            if ino is None:
                assert flags & os.O_CREAT, f"opened {path} that the recorder never saw created"
                ino = self._new_inode(False)
                self._log(Op(LINK, self._parent(parts), parts[-1], target=ino, call="open", where=str(path)))
            if flags & os.O_TRUNC and self.live[ino].data:
                self._log(Op(TRUNCATE, ino, offset=0, call="open", where=str(path)))
            self._fds[fd] = (ino, bool(flags & os.O_APPEND), str(path))
            return fd

    def _write(self, fd: int, data: Any) -> int:
        if fd not in self._fds:
            return int(self._real["write"](fd, data))
        with self._lock:
            ino, append, where = self._fds[fd]
            offset = os.fstat(fd).st_size if append else os.lseek(fd, 0, os.SEEK_CUR)
            n = int(self._real["write"](fd, data))
            self._log(Op(WRITE, ino, offset=offset, data=bytes(data[:n]), call="write", where=where))
            return n

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        if fd not in self._fds:
            return int(self._real["pwrite"](fd, data, offset))
        with self._lock:
            n = int(self._real["pwrite"](fd, data, offset))
            ino, _, where = self._fds[fd]
            self._log(Op(WRITE, ino, offset=offset, data=bytes(data[:n]), call="pwrite", where=where))
            return n

    def _copy_file_range(self, src: int, dst: int, count: int, offset_src: int | None = None, *rest: Any) -> int:
        # A copy into a recorded file is a write of the bytes copied (read back from the source).
        if dst not in self._fds:
            return int(self._real["copy_file_range"](src, dst, count, offset_src, *rest))
        with self._lock:
            ino, append, where = self._fds[dst]
            offset = os.fstat(dst).st_size if append else os.lseek(dst, 0, os.SEEK_CUR)
            n = int(self._real["copy_file_range"](src, dst, count, offset_src, *rest))
            data = os.pread(src, n, offset_src) if offset_src is not None else b""
            assert len(data) == n, "copy_file_range from the source's own position is not modelled"
            self._log(Op(WRITE, ino, offset=offset, data=data, call="copy_file_range", where=where))
            return n

    def _ftruncate(self, fd: int, size: int) -> None:
        with self._lock:
            self._real["ftruncate"](fd, size)
            if fd in self._fds:
                ino, _, where = self._fds[fd]
                self._log(Op(TRUNCATE, ino, offset=size, call="ftruncate", where=where))

    def _syncer(self, name: str) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            with self._lock:
                self._real[name](fd)
                if fd in self._fds:
                    ino, _, where = self._fds[fd]
                    self._log(Op(SYNC, ino, call=name, where=where))

        return sync

    def _renamer(self, name: str) -> Callable[..., None]:
        def rename(src: Any, dst: Any, **kw: Any) -> None:
            a, b = self._parts(src), self._parts(dst)
            if a is None or b is None or kw:
                self._real[name](src, dst, **kw)
                return
            with self._lock:
                assert a[:-1] == b[:-1], f"rename across directories: {src} -> {dst}"
                ino = self._lookup(a)
                self._real[name](src, dst)
                assert ino is not None, f"renamed {src} that the recorder never saw created"
                self._log(Op(RENAME, self._parent(a), b[-1], src=a[-1], target=ino, call=name, where=f"{src} {dst}"))

        return rename

    def _link(self, src: Any, dst: Any, **kw: Any) -> None:
        a, b = self._parts(src), self._parts(dst)
        if a is None or b is None:
            self._real["link"](src, dst, **kw)
            return
        with self._lock:
            ino = self._lookup(a)
            self._real["link"](src, dst, **kw)
            assert ino is not None, f"linked {src} that the recorder never saw created"
            self._log(Op(LINK, self._parent(b), b[-1], target=ino, call="link", where=f"{src} {dst}"))

    def _mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        parts = None if dir_fd is not None else self._parts(path)
        if parts is None:
            self._real["mkdir"](path, mode, dir_fd=dir_fd)
            return
        with self._lock:
            self._real["mkdir"](path, mode)
            ino = self._new_inode(True)
            self._log(Op(LINK, self._parent(parts), parts[-1], target=ino, call="mkdir", where=str(path)))

    def _remover(self, name: str) -> Callable[..., None]:
        def remove(path: Any, *, dir_fd: int | None = None) -> None:
            parts = None if dir_fd is not None else self._parts(path)
            if parts is None:
                self._real[name](path, dir_fd=dir_fd)
                return
            with self._lock:
                self._real[name](path)
                self._log(Op(UNLINK, self._parent(parts), parts[-1], call=name, where=str(path)))

        return remove

    def _close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
            self._real["close"](fd)

    def _meta(self, name: str) -> Callable[..., None]:
        # Times and modes: recorded (to compare with strace) but no part of any crash state.
        def meta(target: Any, *args: Any, **kw: Any) -> None:
            self._real[name](target, *args, **kw)
            parts = None if isinstance(target, int) else self._parts(target)
            if (isinstance(target, int) and target in self._fds) or parts is not None:
                with self._lock:
                    ino = self._fds[target][0] if isinstance(target, int) else self._lookup(parts or [])
                    where = self._fds[target][2] if isinstance(target, int) else str(target)
                    self.rec.ops.append(Op(META, ROOT_INO if ino is None else ino, call=name, where=where))

        return meta

    @contextmanager
    def active(self) -> Iterator[None]:
        """Wrap the `os` functions for the duration of the block."""
        wrappers: dict[str, Callable[..., Any]] = {
            "open": self._open, "write": self._write, "pwrite": self._pwrite, "ftruncate": self._ftruncate,
            "fsync": self._syncer("fsync"), "fdatasync": self._syncer("fdatasync"),
            "replace": self._renamer("replace"), "rename": self._renamer("rename"), "link": self._link,
            "mkdir": self._mkdir,
            "rmdir": self._remover("rmdir"), "unlink": self._remover("unlink"), "remove": self._remover("remove"),
            "close": self._close, "utime": self._meta("utime"), "chmod": self._meta("chmod"),
            "fchmod": self._meta("fchmod"), "copy_file_range": self._copy_file_range,
        }
        assert set(wrappers) == set(_PATCHED)
        self._real = {name: getattr(os, name) for name in _PATCHED}
        for name, wrapper in wrappers.items():
            setattr(os, name, wrapper)
        try:
            yield
        finally:
            for name, real in self._real.items():
                setattr(os, name, real)

    def call(self, label: str, fn: Callable[[], object]) -> object:
        """Run one API call recorded; afterwards the model must equal the real tree."""
        start = len(self.rec.ops)
        with self.active():
            result = fn()
        self.rec.calls.append(Call(label, start, len(self.rec.ops)))
        real, model = read_tree(Path(self.root)), files_of(self.live)
        assert real == model, f"after {label}: recorded model differs from the disk: {_diff(real, model)}"
        return result


def _diff(a: dict[str, bytes | None], b: dict[str, bytes | None]) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r:.60} vs {b.get(k)!r:.60}" for k in keys if a.get(k) != b.get(k))


def _snapshot(root: Path) -> Tree:
    """The tree under `root` as inodes; it is taken as durable (a crash state never goes before it)."""
    tree: Tree = {ROOT_INO: Node(True)}
    for rel, data in read_tree(root).items():
        *dirs, name = rel.split("/")
        parent = ROOT_INO
        for d in dirs:
            parent = tree[parent].entries[d]
        ino = len(tree)
        tree[ino] = Node(data is None, data or b"")
        tree[parent].entries[name] = ino
    return tree
