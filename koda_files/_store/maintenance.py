"""Whole-log and whole-store upkeep: compaction, purge and its preview, statistics, check, reindex.

`FileStore` hands these to its `Maintenance` collaborator. Compaction and purge rewrite a log
under its session lock (see `rewrite`); purge runs sessions side by side.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from .._format.codec import check_text
from .._format.layout import COMPACTION_LAYOUT, validate_session_id
from ..errors import KodaFilesError
from ..types import CheckReport, CompactedStats, PurgePreview, StoreStats
from .browse import Browse
from .check import check_store
from .rewrite import compact_lines, purge_lines
from .root import StoreRoot

__all__ = ["Maintenance"]

log = logging.getLogger("koda_files")

# Enough to overlap the rewrites' syncs; more only contend for the interpreter lock (measured
# on 2 cores: 4 threads ahead of 8 in both durability modes, of 2 in "fsync" mode, and of 16).
_PURGE_THREADS = 4


class Maintenance:
    """Compaction, purge, statistics and integrity over a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot, browse: Browse) -> None:
        self._root = root
        self._browse = browse

    def compact(self, session_id: str, summary: str, preserve_count: int) -> int:
        """See `FileStore.compact_session`."""
        check_text("summary", summary, optional=False)
        if type(preserve_count) is not int:
            raise TypeError(f"preserve_count must be an int, not {type(preserve_count).__name__}")
        if preserve_count < 0:
            raise ValueError(f"preserve_count must be >= 0, got {preserve_count}")
        validate_session_id(session_id)
        root = self._root
        with root.session(session_id) as s, s.locked(polite=True):
            # An older koda-files would read what a compaction line archives as active: refuse it.
            raise_layout = lambda: root.ensure_layout(COMPACTION_LAYOUT)  # noqa: E731
            return compact_lines(s, summary, preserve_count, root.ids.take, s.header_flag.get(), raise_layout)

    def compacted_stats(self) -> CompactedStats:
        return self._root.summary.compacted_stats()

    def purge(self, min_age_days: int) -> int:
        """See `FileStore.purge_compacted`."""
        _check_age(min_age_days)
        ids = iter(self._root.session_ids())
        may_have_archived = self._root.index.may_have_archived
        taking = threading.Lock()

        def worker() -> int:
            # Workers take sessions one at a time: nothing is queued per session, so memory does
            # not grow with the store, and the check of one session overlaps another's rewrite.
            total = 0
            while True:
                with taking:
                    sid = next(ids, None)
                if sid is None:
                    return total
                if may_have_archived(sid):
                    total += self._purge_one(sid, min_age_days, False)[0]

        # Each session is rewritten on its own (temp file, fsync, rename); run them side by
        # side so the file system can commit their fsyncs together instead of one by one.
        with ThreadPoolExecutor(max_workers=_PURGE_THREADS) as pool:
            runs = [pool.submit(worker) for _ in range(_PURGE_THREADS)]
            return sum(run.result() for run in runs)

    def purge_preview(self, min_age_days: int) -> PurgePreview:
        """See `FileStore.purge_preview`: the purge's own plan, nothing written."""
        count = size = 0
        sessions = []
        for sid in sorted(self._candidates(min_age_days)):
            n, shrunk = self._purge_one(sid, min_age_days, True)
            if n:
                count, size = count + n, size + shrunk
                sessions.append(sid)
        return PurgePreview(count, size, tuple(sessions))

    def _candidates(self, min_age_days: int) -> list[str]:
        _check_age(min_age_days)
        index = self._root.index
        return [sid for sid in self._root.session_ids() if index.may_have_archived(sid)]

    def _purge_one(self, session_id: str, min_age_days: int, dry_run: bool) -> tuple[int, int]:
        with self._root.visit(session_id) as s:
            try:
                # Purge changes the log only by `replace_log`, which records itself in the journal.
                with s.locked(polite=True, appending=True):
                    return purge_lines(s, min_age_days, dry_run=dry_run)
            except KodaFilesError as exc:
                log.warning("%s; session skipped by purge", exc)
                return 0, 0

    def stats(self) -> StoreStats:
        """See `FileStore.stats`."""
        root = self._root
        ids = root.session_ids()
        messages = archived = 0
        for sid in ids:
            n = root.index.summary(sid)
            messages, archived = messages + n.count, archived + n.archived
        root.index.save(ids)
        compacted = self.compacted_stats()  # before disk usage: it may rewrite `.index`, counted there
        return StoreStats(len(ids), messages, archived, self._browse.disk_usage(), compacted)

    def check(self, repair: bool) -> CheckReport:
        return check_store(self._root, repair)

    def reindex(self) -> None:
        self._root.summary.rebuild()


def _check_age(min_age_days: int) -> None:
    if type(min_age_days) is not int:
        raise TypeError(f"min_age_days must be an int, not {type(min_age_days).__name__}")
    if min_age_days < 0:
        raise ValueError(f"min_age_days must be >= 0, got {min_age_days}")
