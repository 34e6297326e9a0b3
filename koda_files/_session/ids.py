"""Message ids: unique across a root, increasing within a session, never handed out twice.

A counter file `<root>/.ids` holds the next free id. A store reserves a block of ids from it
under a lock and hands them out from memory, so a lock on the counter is taken once per block,
not per insert. Blocks never overlap, and the counter only moves forward, so an id is never
reused, not after a purge or a deletion either. If the file is lost or damaged it is rebuilt
from the largest id in any session.

The counter is synced to disk at every reservation, in both durability modes: ids of a block
reach other sessions' files, so a counter that an OS crash set back would hand them out again
(a check against the one session being written to cannot see that). One sync per block, and
blocks double up to 4096 ids.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from .._files.fileops import fsync_dir, sync, write_at
from .._files.locking import FileMutex
from .._format.codec import INT64_MAX
from ..errors import KodaFilesError

__all__ = ["IdAllocator"]

_FIRST_BLOCK = 16
_MAX_BLOCK = 4096
_WIDTH = 20  # fixed width, so an in-place rewrite never leaves digits of a longer number behind


class IdAllocator:
    """Hands out ids for one root; thread-safe and fork-safe."""

    def __init__(self, path: Path, largest_id: Callable[[], int]) -> None:
        self.mutex = FileMutex(path)
        self._largest_id = largest_id
        self._lock = threading.Lock()
        self._next = 0
        self._end = 0
        self._block = _FIRST_BLOCK
        self._pid = os.getpid()

    def take(self, at_least: int, count: int = 1) -> int:
        """Reserve `count` consecutive ids, all >= `at_least`; returns the first."""
        if count < 1:
            raise ValueError(f"cannot reserve {count} ids")
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not reuse the parent's block
                self._pid, self._next, self._end = os.getpid(), 0, 0
            first = max(self._next, at_least)
            if first + count > self._end:
                first = self._reserve(at_least, count)
            self._next = first + count
            return first

    def _reserve(self, at_least: int, count: int) -> int:
        with self.mutex.held() as fd:
            raw = os.pread(fd, 64, 0)
            try:
                counter = int(raw.strip())
                rebuilt = False
            except ValueError:
                counter = self._largest_id() + 1  # new root, or a damaged counter: rebuild
                rebuilt = True
            if counter < at_least:
                # The session already holds ids the counter says are free: the counter was set
                # back (restored by hand, or lost to a power cut in "flush" mode). Rebuild it.
                counter = max(counter, self._largest_id() + 1)
            first = max(counter, at_least, 1)
            end = first + max(self._block, count)
            if first + count - 1 > INT64_MAX:
                raise KodaFilesError(f"{self.mutex.path}: message ids would pass 2**63 - 1")
            end = min(end, INT64_MAX + 1)
            write_at(fd, b"%0*d\n" % (_WIDTH, end), 0)
            sync(fd)
            if rebuilt:
                # The file may have just been made: its name must be on disk before any id of
                # the block is, or a power cut could lose the counter and rebuild it lower.
                fsync_dir(self.mutex.path.parent)
        self._end = end
        self._block = min(self._block * 2, _MAX_BLOCK)
        return first
