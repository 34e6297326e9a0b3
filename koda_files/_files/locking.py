"""Exclusive locks over lock files, shared correctly by threads, processes and forks.

Each `FileMutex` holds one open descriptor of its lock file and locks it with
`filelock.lock_descriptor` (flock on Unix): a few microseconds per acquire instead of building a
`FileLock` each time. A thread lock serialises the threads of one process, since flock does not.
A process killed while holding the lock loses it with its descriptors, so a crash never wedges.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from .fileops import open_lock

__all__ = ["FileMutex"]

# A waiter polls; sleeping at most this long keeps a handover within a few milliseconds.
_MAX_POLL = 0.002
_FIRST_POLL = 0.00005
# How long a polite acquire leaves a just-released lock to waiters: two of their longest sleeps.
_HANDOFF = 2 * _MAX_POLL

_live: weakref.WeakSet[FileMutex] = weakref.WeakSet()


class FileMutex:
    """An exclusive lock named by a path; the file is created (0600) on first use."""

    def __init__(
        self,
        path: Path,
        before_open: Callable[[], None] | None = None,
        before_release: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._path_str = str(path)
        self._before_open = before_open
        self._before_release = before_release
        self._fd = -1
        self._key = (-1, -1)
        self._released_at = 0.0
        self._thread_lock = threading.Lock()
        _live.add(self)

    @property
    def fd(self) -> int:
        """The locked descriptor (read/write), valid only while the lock is held."""
        return self._fd

    def _open(self) -> int:
        if self._before_open is not None:
            self._before_open()
        fd = open_lock(self.path)
        held = os.fstat(fd)
        self._key = (held.st_ino, held.st_dev)
        return fd

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def acquire(self, *, polite: bool = False) -> None:
        """Block until this thread holds the lock; raises OSError if the lock file cannot exist.

        `polite`: for long holders (rewrites) that may come back for the lock at once. Waiters
        poll, so a process that releases and re-acquires within microseconds could starve them:
        a polite acquire first leaves the lock free for longer than a waiter's poll interval.
        """
        if polite:
            wait = self._released_at + _HANDOFF - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._thread_lock.acquire()
        try:
            while True:
                if self._fd < 0:
                    self._fd = self._open()
                _lock(self._fd)
                # The file may have been deleted or replaced (its directory removed and made
                # again) while we waited: then we hold a lock nobody else can see. Start over.
                try:
                    on_disk = os.stat(self._path_str, follow_symlinks=False)
                except FileNotFoundError:
                    # Gone: reopening creates it again if its directory is there (a directory
                    # replaced by a copy without one), and raises FileNotFoundError if not.
                    _unlock(self._fd)
                    self._close()
                    continue
                if (on_disk.st_ino, on_disk.st_dev) == self._key:
                    return
                _unlock(self._fd)
                self._close()
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        """Release the lock; the descriptor stays open for the next acquire.

        `before_release` (which must not raise) runs first, still under the lock.
        """
        try:
            if self._before_release is not None:
                self._before_release()
            if self._fd >= 0:
                _unlock(self._fd)
        finally:
            self._released_at = time.monotonic()
            self._thread_lock.release()

    def is_free(self) -> bool:
        """True if nobody held the lock at this instant (a hint: it may be taken right after)."""
        if not self._thread_lock.acquire(blocking=False):
            return False
        try:
            if self._fd < 0:
                self._fd = self._open()
            if not _try_lock(self._fd):
                return False
            _unlock(self._fd)
            return True
        except OSError:
            return False
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def held(self) -> Iterator[int]:
        """`with mutex.held() as fd:` runs the block holding the lock."""
        self.acquire()
        try:
            yield self._fd
        finally:
            self.release()

    def close(self) -> None:
        with self._thread_lock:
            self._close()

    def _after_fork(self) -> None:
        # The child shares the parent's open file description, and so its flock: a fresh
        # descriptor makes the child a separate lock owner. Other threads do not exist here.
        self._thread_lock = threading.Lock()
        self._close()


def _lock(fd: int) -> None:
    delay = _FIRST_POLL
    while not _try_lock(fd):
        time.sleep(delay)
        delay = min(delay * 2, _MAX_POLL)


def _try_lock(fd: int) -> bool:
    # Imported at first use: importing filelock takes longer than a read-only command that
    # never locks (a search) takes to start.
    import filelock

    return filelock.lock_descriptor(fd, blocking=False)


def _unlock(fd: int) -> None:
    import filelock

    filelock.unlock_descriptor(fd)


def _reset_after_fork() -> None:
    for mutex in list(_live):
        mutex._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
