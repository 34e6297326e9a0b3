"""One session directory: its paths, its lock, its header, and appends to its log.

A `SessionDir` is cheap state a store keeps per session it touches: the lock descriptor, an
append descriptor and the parsed-log cache. Every method re-checks the directory on disk, so a
session deleted, replaced or edited by someone else is seen as it is now.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._files.fileops import (
    Piece,
    append_whole,
    atomic_write,
    create_empty,
    fsync_dir,
    make_dir,
    open_append,
    read_file,
    remove_tree,
    rename,
    touch,
    unlink,
)
from .._files.locking import FileMutex
from .._format.codec import with_id
from .._format.framing import iter_file_lines
from .._format.header import encode_header, read_header
from .._format.layout import ACCESS, LOCK_NAME, MESSAGES, METADATA, TODO
from ..errors import ConcurrentEditError, KodaFilesError, SessionNotFoundError
from ..types import Message
from .completion import HeaderFlag
from .journal import JOURNAL, note_change
from .messagelog import MessageLog, paused_gc, read_backwards
from .sanitize import ContextCache
from .scan import last_id_in

__all__ = ["SessionDir"]

_T = TypeVar("_T")
NOT_CURRENT = object()  # `newest_cached`: the cache is not known to be current


class SessionDir:
    """A store's handle on `<root>/sessions/<id>/`."""

    def __init__(self, session_id: str, path: Path, durable: bool) -> None:
        self.id = session_id
        self.path = path
        self.durable = durable
        self.messages_path = path / MESSAGES
        self._messages_str = str(self.messages_path)
        self.header_path = path / METADATA
        self._header_str = str(self.header_path)
        self.todo_path = path / TODO
        self.access_path = path / ACCESS
        self._access_str = str(self.access_path)
        # Every write to a session happens under its lock: releasing it records the change
        # in the root's journal, after the change and before another writer can make one.
        self._journal = str(path.parent.parent / JOURNAL)
        self._journal_line = session_id.encode() + b"\n"
        self.mutex = FileMutex(path / LOCK_NAME, self._check_dir, self._note_if_changed)
        # Under the lock: the log's and header's identity when it was taken (None: unknown,
        # () : only an append counts), and whether this holder appended or replaced the log.
        self._at_lock: tuple[tuple[int, int, int], ...] | None = None
        self._appended = False
        self.log = MessageLog(session_id, self.messages_path)
        self.context = ContextCache()
        self.header_flag = HeaderFlag(self.header_path)
        # Reads take no file lock, but threads sharing this handle must not update the parsed
        # log (or the context built on it) at the same time.
        self.cache_lock = threading.RLock()
        self.users = 0
        self._fd = -1
        self._fd_key = (-1, -1)
        # (inode, size) of the file after our last append, with the largest id then.
        self._known: tuple[int, int] = (-1, -1)
        self._last_id = 0

    # ── existence ──

    def is_dir(self) -> bool:
        """True when the session directory exists and is a real directory (not a symlink)."""
        try:
            return stat.S_ISDIR(os.stat(self.path, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def _check_dir(self) -> None:
        # Runs before the lock file is (re)opened: never create it through a planted symlink.
        if not self.is_dir():
            raise SessionNotFoundError(self.id)

    def lock(self, *, polite: bool = False, appending: bool = False, note: bool = False) -> None:
        """Take the session lock; `SessionNotFoundError` if the directory is not (or no longer) there.

        `polite` is for rewrites: see `FileMutex.acquire`. `appending`: the holder changes the files
        only by appends and `replace_log`, which record themselves (no before-and-after stat then).
        `note`: name the session in the journal on release whatever happened (the holder read it
        whole: a hand edit counts).
        """
        try:
            self.mutex.acquire(polite=polite)
        except FileNotFoundError:
            raise SessionNotFoundError(self.id) from None
        self._at_lock = None if note else () if appending else self._file_keys()

    def _file_keys(self) -> tuple[tuple[int, int, int], ...]:
        keys = []
        for path in (self._messages_str, self._header_str):
            try:
                st = os.stat(path, follow_symlinks=False)
                keys.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                keys.append((-1, -1, -1))
        return tuple(keys)

    def _note_if_changed(self) -> None:
        # Runs as the lock is released: a holder that changed the log or the header (or whose
        # start is unknown: a lock taken on the mutex itself) names the session in the journal.
        at_lock, self._at_lock = self._at_lock, None
        appended, self._appended = self._appended, False
        if appended or at_lock is None or (at_lock and self._file_keys() != at_lock):
            self.note_change()

    @property
    def lock_path(self) -> Path:
        return self.mutex.path

    def unlock(self) -> None:
        """Release the lock taken by `lock` (recording the change in the root's journal)."""
        self.mutex.release()

    @contextlib.contextmanager
    def locked(self, *, polite: bool = False, appending: bool = False) -> Iterator[None]:
        """`with session.locked():` runs the block holding the session lock (arguments: see `lock`)."""
        self.lock(polite=polite, appending=appending)
        try:
            yield
        finally:
            self.mutex.release()

    # ── the directory: create, replace, remove ──

    def create(
        self, header: dict[str, Any], *, files: Mapping[str, bytes] | None = None, replace: bool = False
    ) -> None:
        """Build the session in a dot-directory, then rename it into place: it appears whole or not at all.

        It holds `metadata.json`, `messages.jsonl` (empty unless in `files`) and `files` (name ->
        bytes). An existing session of this id raises `FileExistsError` (EEXIST) unless `replace`:
        then it is swapped out under its lock and removed.
        """
        files = dict(files or {})
        files.setdefault(MESSAGES, b"")
        staging = self.path.parent / f".new-{self.id}.{os.urandom(4).hex()}"
        make_dir(staging)
        try:
            # The lock file comes with the directory: a store holding the old session's lock
            # then sees a new lock file (not a missing one) and takes that instead.
            create_empty(staging / LOCK_NAME)
            atomic_write(staging / METADATA, [encode_header(header)])
            for name, data in files.items():
                atomic_write(staging / name, [data])
            if replace and self.is_dir():
                with self.locked():
                    graveyard = self._graveyard()
                    rename(self.path, graveyard)
                    rename(staging, self.path)
                    self.forget_cache()
                self.mutex.close()
                fsync_dir(self.path.parent)
                remove_tree(graveyard)
                return
            if self.is_dir() or self.path.is_symlink():
                raise FileExistsError(errno.EEXIST, f"session {self.id!r} exists already", str(self.path))
            rename(staging, self.path)
        except BaseException:
            if os.path.isdir(staging):
                remove_tree(staging)
            raise
        fsync_dir(self.path.parent)

    def remove(self) -> bool:
        """Remove the directory and all in it; False if there was none. Never follows links."""
        if not self.is_dir():
            return False
        with self.locked():
            # Rename first: the session vanishes in one step, and a crash during the removal
            # leaves only a dot-directory behind.
            graveyard = self._graveyard()
            rename(self.path, graveyard)
            self.forget_cache()
        self.mutex.close()
        fsync_dir(self.path.parent)
        remove_tree(graveyard)
        return True

    def replace_log(self, pieces: Iterable[Piece], before: os.stat_result, what: str, *, sync_dir: bool = True) -> None:
        """Replace `messages.jsonl` by `pieces` (call it holding the lock), atomically.

        If the file is no longer the one `before` describes once every piece is copied (a hand
        edit), nothing is written: `ConcurrentEditError` naming `what` was being done.
        """
        self._appended = True  # recorded in the journal on unlock (also if refused: a hand edit)
        atomic_write(self.messages_path, itertools.chain(pieces, self._unchanged(before, what)), sync_dir=sync_dir)
        self.forget_cache()

    def _unchanged(self, before: os.stat_result, what: str) -> Iterator[Piece]:
        now = os.stat(self.messages_path, follow_symlinks=False)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            raise ConcurrentEditError(self.messages_path, what)
        yield from ()

    def _graveyard(self) -> Path:
        return self.path.parent / f".deleted-{self.id}-{os.urandom(4).hex()}"

    def forget_cache(self) -> None:
        """The files were replaced: drop the parsed log and the append position."""
        with self.cache_lock:
            self.log.clear()
        self.forget_appends()

    # ── the log ──

    def refresh(self, *, whole: bool = False) -> MessageLog:
        """The log cache, up to date; an absent session reads as empty.

        `whole`: with the archived messages above the last compaction (see `MessageLog`).
        """
        with self.cache_lock:
            log = self.log
            if log.exists:
                # The file at the path is the one already parsed (same inode): it is this
                # session's, whatever the path resolves through, so one stat is the whole check.
                try:
                    st = os.stat(self._messages_str, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and st.st_ino == log.ino and st.st_dev == log.dev:
                    log.refresh(self._tail_is_torn, st, whole=whole)
                    return log
            if not self.is_dir():
                self.log.clear()  # keeps counting generations: the context cache must see a change
                return self.log
            self.log.refresh(self._tail_is_torn, whole=whole)
            return self.log

    def load_context(self, *, access: bool = True) -> list[Message]:
        """The sanitised active messages, re-judging only what changed since the last call.

        `access=False` reads without recording an access (the idle time stays).
        """
        with self.cache_lock, paused_gc():
            log = self.refresh()
            context = self.context.update(log.active, log.generation, log.patched, self.tracks_completion())
        if log.exists and access:
            self.note_access()
        return context

    def tracks_completion(self) -> bool:
        """True when a message of the log is marked complete or the header asks for it (`completion`)."""
        return self.log.marked > 0 or self.header_flag.get()

    def note_access(self) -> None:
        """Record a read of the session for its idle time: the mtime of `.access` becomes now.

        One `utimensat` (no data, no lock, right across processes); an error (a read-only root,
        the session deleted meanwhile) only means the access is not recorded.
        """
        try:
            touch(self._access_str)
        except OSError:
            return
        self.note_change()  # the last activity is part of the listing

    def note_change(self) -> None:
        """Name this session in the root's change journal (see `journal.py`); never raises."""
        note_change(self._journal, self._journal_line)

    def find(self, message_id: int) -> Message | None:
        """The message with this id in the log, or None (read backwards if not cached)."""
        if self.log.exists:
            with self.cache_lock:
                log = self.refresh()
                index = log.where.get(message_id)
                if index is not None:
                    return log.messages[index]
        return self.newest(lambda m: m if m.id == message_id else None)

    def newest(self, pick: Callable[[Message], _T | None]) -> _T | None:
        """`pick` applied to messages last to first; the first answer that is not None.

        From the cache when it is loaded (one stat when it is current, then a walk back from
        its end), else read backwards from the end: answers found near the end
        (`last_user_message`, pending tool calls) cost the same for ten messages or a hundred thousand.
        """
        answer = self.newest_cached(pick)
        if answer is not NOT_CURRENT:
            return answer  # type: ignore[return-value]
        if self.log.exists:
            log = self.refresh()  # appends never move what is in the list: walked without the lock
            return self._walk_back(pick, log.messages, log.first, log.first_archived_at)
        if self.is_dir():
            return self._walk_back(pick, (), -1, None)
        return None

    def newest_cached(self, pick: Callable[[Message], _T | None]) -> _T | object | None:
        """`newest` when the cache is current (one stat, no lock, no descriptor), else `NOT_CURRENT`."""
        current = self.log.current
        if current is None:
            return NOT_CURRENT
        try:
            st = os.stat(self._messages_str, follow_symlinks=False)
        except OSError:
            return NOT_CURRENT
        ino, dev, size, mtime_ns, messages, first, archived_at = current
        if st.st_ino != ino or st.st_dev != dev or st.st_size != size or st.st_mtime_ns != mtime_ns:
            return NOT_CURRENT
        return self._walk_back(pick, messages, first, archived_at)

    def _walk_back(
        self, pick: Callable[[Message], _T | None], cached: Sequence[Message], first: int, archived_at: str | None
    ) -> _T | None:
        """`pick` over `cached` from its end, then over the lines above byte `first` read backwards
        (0: there are none; -1: nothing is cached, read the whole file)."""
        for m in reversed(cached):
            answer = pick(m)
            if answer is not None:
                return answer
        if first == 0:
            return None
        older = read_backwards(self.messages_path, self.id, end=first if first > 0 else None, archived_at=archived_at)
        with contextlib.closing(older):
            for m in older:
                answer = pick(m)
                if answer is not None:
                    return answer
        return None

    def _tail_is_torn(self) -> bool:
        # With no writer holding the lock, nobody is in the middle of writing that tail.
        return self.mutex.is_free()

    def append(self, record: bytes, at_least: Callable[[int], int]) -> int:
        """Append a record from `encode_new` under the held lock; `at_least(n)` picks its id.

        A record is one `write` of a whole line; a file left without a final newline (a torn
        write) gets one first, so the new line is never glued to the damage. On error the file is
        cut back to its old size: nothing partial stays visible. Returns the id.
        """

        def build(last_id: int) -> tuple[bytes, int]:
            msg_id = at_least(last_id + 1)
            return with_id(record, msg_id), msg_id

        return self._append(build)

    def append_many(self, records: list[bytes], take: Callable[[int, int], int]) -> int:
        """Append records from `encode_new` as one write, with consecutive ids; returns the first.

        `take(at_least, count)` reserves the ids. Same rules as `append`: all lines or none.
        """

        def build(last_id: int) -> tuple[bytes, int]:
            first = take(last_id + 1, len(records))
            return b"".join(with_id(r, first + i) for i, r in enumerate(records)), first + len(records) - 1

        return self._append(build) - len(records) + 1

    def append_line(self, line: bytes) -> None:
        """Append a whole `\\n`-terminated line that is not a new message (a completion annotation).

        Same rules as `append`, under the held lock. No id is allocated.
        """
        self._append(lambda last_id: (line, 0))

    def _append(self, build: Callable[[int], tuple[bytes, int]]) -> int:
        # `build(largest id in the log)` gives the line and its id (0: none).
        fd, ino, size, mtime_ns = self._append_fd()
        if (ino, size) == self._known:
            last_id, ends_clean = self._last_id, True
        else:
            last_id, ends_clean = last_id_in(fd, size, self.id)
        line, msg_id = build(last_id)
        data = line if ends_clean else b"\n" + line
        try:
            append_whole(fd, data, size, durable=self.durable)
        except BaseException:
            self._known = (-1, -1)
            raise
        self._known = (ino, size + len(data))
        self._last_id = max(last_id, msg_id)
        self._appended = True
        if ends_clean:
            with self.cache_lock:
                self.log.note_append(line, size, ino, mtime_ns)
        return msg_id

    def _append_fd(self) -> tuple[int, int, int, int]:
        """(descriptor, inode, size, mtime) of the log as it is now, reopened if it was replaced."""
        try:
            on_disk = os.stat(self._messages_str, follow_symlinks=False)
            key = (on_disk.st_ino, on_disk.st_dev)
        except FileNotFoundError:
            key = (-1, -1)
        if key == self._fd_key and self._fd >= 0:
            return self._fd, on_disk.st_ino, on_disk.st_size, on_disk.st_mtime_ns
        self.close_append()
        try:
            # A log deleted by hand is made again; in "fsync" mode its new name is synced too.
            fd, st = open_append(self.messages_path, durable=self.durable)
        except FileNotFoundError:
            raise SessionNotFoundError(self.id) from None
        except IsADirectoryError:
            raise KodaFilesError(f"session {self.id!r}: {self.messages_path} is not a regular file") from None
        self._fd, self._fd_key = fd, (st.st_ino, st.st_dev)
        return fd, st.st_ino, st.st_size, st.st_mtime_ns

    def forget_appends(self) -> None:
        """The next append re-reads the file's end (`forget_cache` also drops the parsed log)."""
        self._known = (-1, -1)
        self.close_append()

    def close_append(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._fd_key = -1, (-1, -1)

    def close(self) -> None:
        self.close_append()
        self.mutex.close()

    def is_parsed(self) -> bool:
        """True when this handle holds a parsed log (a `load_context` then costs a stat and the news)."""
        return self.log.exists

    def holds(self, message_id: int) -> bool:
        """True when the parsed log (if any) holds this message id."""
        return self.log.exists and message_id in self.log.where

    def cached_active(self, before: os.stat_result) -> tuple[list[int], int, bool] | None:
        """From the parsed log, when it is the file `before` describes: per active message the
        index of its owning assistant message (-1: none), the largest id, and whether the session
        tracks completion. None: not parsed, or another file."""
        if not self.log.exists:
            return None
        with self.cache_lock:
            log = self.refresh()
            if not log.matches(before):
                return None
            tracks = self.tracks_completion()
            self.context.update(log.active, log.generation, log.patched, tracks)
            return self.context.owners(), log.largest_id, tracks

    # ── header, metadata and todo ──

    def header(self) -> dict[str, Any]:
        return read_header(self.path, self.id)

    def write_header(self, header: dict[str, Any]) -> None:
        atomic_write(self.header_path, [encode_header(header)])

    def read_todo(self) -> str | None:
        raw = read_file(self.todo_path)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def write_todo(self, content: str) -> None:
        atomic_write(self.todo_path, [content.encode("utf-8")])

    def remove_todo(self) -> bool:
        try:
            unlink(self.todo_path)
        except FileNotFoundError:
            return False
        if self.durable:
            fsync_dir(self.path)
        return True

    def iter_lines(self) -> Iterator[tuple[int, bytes]]:
        """Stream the log's lines as (line number, bytes); a torn last line too: rewrites keep it."""
        return iter_file_lines(self.messages_path, with_tail=True)
