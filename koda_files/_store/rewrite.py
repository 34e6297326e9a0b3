"""Compaction and purge: the only rewrites of `messages.jsonl`, and neither edits a line.

Compaction inserts two lines (the summary, which records the compaction, and the continuation
hint) before the kept tail: a plain append when nothing is kept, else one atomic rewrite that
copies the bytes before and after them unchanged. It reads the file backwards to the last
compaction line and parses only what is active. Purge cuts the file before a compaction line
(what is above was archived by it or earlier) and copies what is kept. Both run under the session
lock and leave either the old file or the new one.

Lines that carry their own `compacted_at` (the first layout) are read and purged as before.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson

from .._files.fileops import Piece, open_read, set_mtime
from .._format.classify import (
    COMPACTION,
    COMPACTION_MARK,
    MESSAGE,
    NOTE,
    OTHER,
    Compaction,
    classify,
    compaction_of,
    last_compaction,
)
from .._format.codec import ARCHIVED_MARK, Completion, with_id
from .._format.framing import (
    body,
    iter_lines_backwards,
    iter_raw_lines,
    lines_containing,
    lines_containing_in,
    raw_lines_in,
)
from .._format.layout import parse_time, utc_now
from .._session.completion import COMPACTION_HINT, counts_as_mark
from .._session.sanitize import CallOwners, group_start
from .._session.session import SessionDir
from ..errors import ConcurrentEditError, KodaFilesError
from ..types import Message

__all__ = ["COMPACTION_HINT", "compact_lines", "purge_lines"]

# A message line as the store writes it (id and role first, one object): counted as a message by
# its shape, without a parse. Any other line of the part purge drops is classified properly.
_MESSAGE_SHAPE = rb'\{"id":-?\d+,"role":"(?:system|user|assistant|tool)".*\}\r?'
_SHAPED = re.compile(rb"^" + _MESSAGE_SHAPE + rb"$", re.M)
_UNSHAPED = re.compile(rb"^(?!" + _MESSAGE_SHAPE + rb"$).*\S.*$", re.M)
_NOTE_MARKS = (b'"completed_at"', b'"thinking_content"')
_IN_MEMORY = 1 << 20  # a log up to this size is read once for the purge's plan


def _records(summary: str, now: str, tracks_completion: bool) -> list[bytes]:
    """The summary line (recording the compaction) and the hint, with id 0 for `with_id` to set."""
    line: dict[str, Any] = {"id": 0, "role": "system", "content": summary, "created_at": now, "compaction": now}
    if tracks_completion:
        line["tracks_completion"] = True
    hint = {"id": 0, "role": "assistant", "content": COMPACTION_HINT, "created_at": now, "completed_at": now}
    return [orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in (line, hint)]


def _replace(s: SessionDir, before: os.stat_result, pieces: list[Piece], what: str) -> None:
    """Replace the log by `pieces` unless someone edited it meanwhile. In "flush" mode without
    the directory sync: a power cut may undo the rename, never leave half of it."""
    s.replace_log(pieces, before, what, sync_dir=s.durable)


class _Active(NamedTuple):
    """What compaction needs of a log's active part."""

    owners: list[int]  # per active message: the index of the assistant owning it (a result), or -1
    offsets: list[int] | None  # per active message: where its line starts (None: not known)
    largest: int  # the largest id seen
    tracks: bool  # the session tracks completion


def _from_cache(s: SessionDir, before: os.stat_result) -> _Active | None:
    """From the session's parsed log, when it is the file as it is now: nothing to decode."""
    cached = s.cached_active(before)
    if cached is None:
        return None
    owners, largest, tracks = cached
    return _Active(owners, None, largest, tracks)


def _from_file(fd: int, before: os.stat_result, session_id: str, tracks_header: bool) -> _Active:
    """Read backwards to the last compaction line and parse what follows (what is active)."""
    last = last_compaction(fd, before.st_size, session_id)
    tracks = tracks_header or (last is not None and last.tracks_completion)
    offsets: list[int] = []
    owners = CallOwners()
    owner_of: list[int] = []
    messages: dict[int, Message] = {}
    for offset, raw in iter_raw_lines(fd, last.offset if last is not None else 0):
        kind, entry = classify(body(raw, offset == 0), session_id)
        if kind == NOTE:
            assert type(entry) is Completion
            target = messages.get(entry.id)
            if entry.completed_at is not None and (target is not None or last is not None):
                # A mark of an archived message (above `last`) counts as `MessageLog` counts it.
                tracks = tracks or target is None or counts_as_mark(target.role, target.content)
        elif kind in (MESSAGE, COMPACTION):
            assert type(entry) is Message
            messages[entry.id] = entry
            tracks = tracks or (entry.completed_at is not None and counts_as_mark(entry.role, entry.content))
            if entry.compacted_at is None:
                offsets.append(offset)
                owner_of.append(owners.feed(entry))
    return _Active(owner_of, offsets, max(messages, default=0), tracks)


def _tail_start(fd: int, size: int, s: SessionDir, count: int) -> int:
    """Where the line of the `count`-th active message from the end starts (reading only those)."""
    for offset, line in iter_lines_backwards(fd, size):
        kind, entry = classify(line, s.id)
        if kind in (MESSAGE, COMPACTION) and type(entry) is Message and entry.compacted_at is None:
            count -= 1
            if count == 0:
                return offset
    raise ConcurrentEditError(s.messages_path, "the compaction")


def compact_lines(
    s: SessionDir,
    summary: str,
    preserve: int,
    take_ids: Callable[[int, int], int],
    tracks_header: bool,
    before_write: Callable[[], None],
) -> int:
    """Archive all active messages but the last `preserve`; summary and hint go before the kept tail.

    A kept tail that would start inside a call group (an assistant turn and its results) keeps
    the whole group, so fewer are archived. Returns how many were archived (0: nothing written).
    `tracks_header`: the session's header says it tracks completion (recorded on the summary).
    `before_write` runs once it is sure to write (it raises the root's layout marker). A session
    in use costs no parse: its log is cached; a cold one is parsed from its last compaction on.
    """
    try:
        fd = open_read(s.messages_path)
    except FileNotFoundError:
        return 0  # a missing log reads as no messages: nothing to archive
    try:
        before = os.fstat(fd)
        active = _from_cache(s, before) or _from_file(fd, before, s.id, tracks_header)
        count = len(active.owners)
        archived = group_start(active.owners, max(0, count - preserve))
        if archived <= 0:
            return 0
        before_write()
        records = _records(summary, utc_now(), active.tracks or tracks_header)
        if archived == count:
            s.append_many(records, take_ids)  # nothing kept: the two lines go at the end
            return archived
        first = take_ids(active.largest + 1, 2)
        inserted = with_id(records[0], first) + with_id(records[1], first + 1)
        if active.offsets is not None:
            cut = active.offsets[archived]
        else:
            cut = _tail_start(fd, before.st_size, s, count - archived)
        _replace(s, before, [(fd, 0, cut), inserted, (fd, cut, before.st_size - cut)], "the compaction")
        return archived
    finally:
        os.close(fd)


def _cutoff(min_age_days: int) -> datetime | None:
    """The newest archive time old enough to purge; None (`min_age_days` 0): any, dated or not."""
    if not min_age_days:
        return None
    now = parse_time(utc_now())
    assert now is not None
    return now - timedelta(days=min_age_days)


def _old(when: str | None, cutoff: datetime | None) -> bool:
    if cutoff is None:
        return True
    # An archive time nobody can read is kept: never delete what cannot be dated.
    moment = parse_time(when or "")
    return moment is not None and moment <= cutoff


def _messages_in(data: bytes, session_id: str) -> tuple[int, list[bytes]]:
    """How many lines of `data` (whole lines) are messages (by shape, else by decoding), and the
    lines that are not messages nor annotations: a person's words purge must not drop unseen."""
    count = len(_SHAPED.findall(data))
    others: list[bytes] = []
    if count == data.count(b"\n") and data.endswith(b"\n"):
        return count, others  # every line has the shape: no other line to look for
    for match in _UNSHAPED.finditer(data):
        line = match.group()
        kind = classify(body(line, match.start() == 0), session_id)[0]  # a BOM may start the file
        if kind in (MESSAGE, COMPACTION):
            count += 1
        elif kind == OTHER:
            others.append(line + b"\n")
    return count, others


def purge_lines(s: SessionDir, min_age_days: int, *, dry_run: bool = False) -> tuple[int, int]:
    """Drop archived messages compacted more than `min_age_days` ago (0: all), with their annotations;
    returns (messages dropped, bytes the log shrank by). `dry_run`: plan only, write nothing.

    The file is cut before the newest compaction line such that it and every one above it are
    old enough; lines that carry their own `compacted_at` are judged one by one.
    """
    try:
        fd = open_read(s.messages_path)
    except FileNotFoundError:
        raise KodaFilesError(f"session {s.id!r}: {s.messages_path} is missing") from None
    try:
        before = os.fstat(fd)
        dropped, pieces = _purge_plan(_Log(fd, before.st_size), s.id, min_age_days)
        if not dropped:
            return 0, 0
        shrunk = before.st_size - sum(len(p) if isinstance(p, bytes) else p[2] for p in pieces)
        if dry_run:
            return dropped, shrunk
        _replace(s, before, pieces, "the purge")
    finally:
        os.close(fd)
    # Purging is housekeeping, not a use of the session: keep the log's mtime (its idle time).
    with contextlib.suppress(OSError):
        set_mtime(s.messages_path, before.st_mtime_ns, atime_ns=before.st_atime_ns)
    return dropped, shrunk


class _Log:
    """The log a purge plans on: read once when small (every scan then searches memory), else by
    ranges as each scan needs them. Offsets are the file's; `size` is its size when opened."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        # Shorter than `size` if cut meanwhile: the plan is then void, and the rewrite's own
        # check that the file is unchanged refuses it.
        self.data = os.pread(fd, size, 0) if size <= _IN_MEMORY else None

    def read(self, start: int, length: int) -> bytes:
        if self.data is None:
            return os.pread(self.fd, length, start)
        return self.data[start : start + length]

    def containing(self, marker: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, body) of the lines from `start` (a line start) holding `marker`, as `lines_containing`."""
        if self.data is None:
            return lines_containing(self.fd, marker, start, self.size)
        return lines_containing_in(self.data, marker, start, len(self.data))

    def line_length(self, offset: int) -> int:
        """The length of the line starting at `offset`, its newline included (if it has one)."""
        if self.data is not None:
            newline = self.data.find(b"\n", offset)
            return (len(self.data) if newline < 0 else newline + 1) - offset
        at = offset
        while at < self.size:
            chunk = os.pread(self.fd, min(1 << 16, self.size - at), at)
            newline = chunk.find(b"\n")
            if newline >= 0:
                return at + newline + 1 - offset
            at += len(chunk)
        return self.size - offset

    def raw_lines(self, start: int) -> Iterator[tuple[int, bytes]]:
        """(offset, exact bytes) of each line from `start` up to `size`, as `iter_raw_lines`."""
        if self.data is not None:
            yield from raw_lines_in(self.data, start, len(self.data))
            return
        for offset, raw in iter_raw_lines(self.fd, start):
            if offset >= self.size:
                return
            yield offset, raw


def _purge_plan(log: _Log, session_id: str, min_age_days: int) -> tuple[int, list[Piece]]:
    """How many messages purge drops from `log`, and the pieces of what it keeps."""
    fd, size = log.fd, log.size
    cutoff = _cutoff(min_age_days)
    cut: Compaction | None = None
    for offset, line in log.containing(COMPACTION_MARK):
        if classify(line, session_id)[0] != COMPACTION:
            continue
        found = compaction_of(line, offset)
        assert found is not None
        if not _old(found.at, cutoff):
            break  # compactions are in time order: those below are newer still
        cut = found
    start = cut.offset if cut is not None else 0
    dropped, keep_above = _messages_in(log.read(0, start), session_id) if start else (0, [])
    # Lines of the first layout: judged by their own time, wherever they are.
    drop_lines: dict[int, int] = {}  # offset -> length of a line below the cut to drop
    dropped_ids: set[int] = set()
    for offset, line in log.containing(ARCHIVED_MARK):
        entry = classify(line, session_id)[1]
        if type(entry) is not Message or entry.compacted_at is None:
            continue
        old = _old(entry.compacted_at, cutoff)
        if offset < start and not old:
            keep_above.append(line + b"\n")
            dropped -= 1
        elif offset >= start and old:
            drop_lines[offset] = log.line_length(offset)
            dropped_ids.add(entry.id)
            dropped += 1
    if not dropped:
        return 0, []
    _drop_orphan_notes(log, session_id, start, dropped_ids, drop_lines)
    pieces: list[Piece] = list(keep_above)
    at = start
    for offset in sorted(drop_lines):
        pieces.append((fd, at, offset - at))
        at = min(size, offset + drop_lines[offset])
    pieces.append((fd, at, size - at))
    return dropped, pieces


def _drop_orphan_notes(
    log: _Log, session_id: str, start: int, dropped_ids: set[int], drop_lines: dict[int, int]
) -> None:
    """Add to `drop_lines` the annotations kept below the cut whose message is dropped."""
    notes: list[tuple[int, int, int]] = []  # (offset, length, id)
    for mark in _NOTE_MARKS:
        for offset, line in log.containing(mark, start):
            if _SHAPED.fullmatch(line):
                continue  # a message (an annotation has no role), such as the compaction's hint
            kind, entry = classify(line, session_id)
            if kind == NOTE and entry is not None and offset not in drop_lines:
                notes.append((offset, log.line_length(offset), entry.id))
    if not notes:
        return
    kept_ids = set(_ids_from(log, session_id, start)) - dropped_ids
    for offset, length, msg_id in notes:
        if msg_id not in kept_ids:
            drop_lines[offset] = length


def _ids_from(log: _Log, session_id: str, start: int) -> Iterator[int]:
    for offset, raw in log.raw_lines(start):
        kind, entry = classify(body(raw, offset == 0), session_id)
        if kind in (MESSAGE, COMPACTION) and entry is not None:
            yield entry.id
