"""Compaction and purge: rewrites of `messages.jsonl` that copy untouched lines byte for byte.

Both stream the file twice under the session lock (classify, then write a temp file that is
renamed over the original), so memory stays flat whatever the file size, and a crash leaves
either the old file or the new one. Lines that are not messages are copied as they are.

Annotations (`{"id": 7, "completed_at": ...}`, `{"id": 7, "thinking_content": ...}`): compaction
folds each into its message's line (the line gains the field, the annotation line goes); purge
drops the annotations of the messages it drops and keeps the others as they are.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta

from .codec import (
    ARCHIVED_MARK,
    Completion,
    LineError,
    add_field,
    apply_note,
    decode_entry,
    decode_line,
    encode_record,
    field_suffix,
    fold_fields,
    note_fields,
)
from .completion import COMPACTION_HINT
from .errors import KodaFilesError
from .fileops import atomic_write, set_mtime
from .layout import parse_time, utc_now
from .messagelog import ACTIVE, ARCHIVED, NOTE, OTHER
from .sanitize import CallOwners, group_start
from .session import SessionDir
from .types import Message, Role

__all__ = ["COMPACTION_HINT", "compact_lines", "purge_lines"]


_DROP = 4  # a fifth kind, for purge

_DONE_MARK = b'"completed_at"'  # every annotation has it ...
_THINK_MARK = b'"thinking_content"'  # ... or this ...
_ROLE_MARK = b'"role"'  # ... and no message line lacks this


def _stat(s: SessionDir) -> os.stat_result:
    try:
        return os.stat(s.messages_path, follow_symlinks=False)
    except FileNotFoundError:
        raise KodaFilesError(f"session {s.id!r}: {s.messages_path} is missing") from None


class _Scan:
    """What compaction needs of a log: line kinds, largest id, completions to fold, call owners."""

    def __init__(self) -> None:
        self.kinds = bytearray()
        self.largest = 0
        self.folds: dict[int, dict[str, str]] = {}
        self.owners: list[int] = []  # per active message: the index of its owner (see sanitize), or -1


def _classify(s: SessionDir) -> _Scan:
    """Scan the log streaming: one byte per line saying what it is, and the rest of `_Scan`.

    Folds are by line index of the message: annotations that complete a message not yet
    complete (the first wins), as `MessageLog` applies them.
    """
    scan = _Scan()
    kinds = scan.kinds
    owners = CallOwners()
    largest = 0
    where: dict[int, tuple[int, Message]] = {}  # id -> (line index, message as annotated so far)
    folds: dict[int, dict[str, str]] = {}
    for _, line in s.iter_lines():
        try:
            m = decode_entry(line, s.id) if line.strip() else None
        except LineError:
            m = None
        if m is None:
            kinds.append(OTHER)
            continue
        if type(m) is Completion:
            target = where.get(m.id)
            if target is None:
                kinds.append(OTHER)
                continue
            kinds.append(NOTE)
            fields = note_fields(m, target[1])
            if fields:
                folds.setdefault(target[0], {}).update(fields)
                where[m.id] = (target[0], apply_note(target[1], m) or target[1])
            continue
        assert type(m) is Message
        where[m.id] = (len(kinds), m)
        largest = max(largest, m.id)
        if m.compacted_at is None:
            scan.owners.append(owners.feed(m.role, m.tool_calls, m.tool_call_id))
            kinds.append(ACTIVE)
        else:
            kinds.append(ARCHIVED)
    scan.largest, scan.folds = largest, folds
    return scan


def _classify_for_compaction(s: SessionDir) -> tuple[_Scan, os.stat_result]:
    # A session in use has its log parsed already: its line kinds are free. A cold one is
    # streamed instead of parsed into memory, so a huge session compacts in flat memory.
    before = _stat(s)
    if s.log.exists:
        with s.cache_lock:
            log = s.refresh()
            if log.matches(before):
                scan = _Scan()
                scan.kinds, scan.largest, scan.folds = bytearray(log.kinds), log.largest_id, dict(log.noted)
                # the context cache has the owners already (it is current after a load_context)
                s.context.update(log.active, log.generation, log.patched, s.tracks_completion())
                scan.owners = s.context.owners()
                return scan, before
    return _classify(s), before


def _replace(s: SessionDir, before: os.stat_result, lines: Iterator[bytes]) -> None:
    def checked() -> Iterator[bytes]:
        yield from lines
        now = os.stat(s.messages_path, follow_symlinks=False)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            # Someone edited the file by hand between our two passes: write nothing.
            raise KodaFilesError(f"session {s.id!r}: {s.messages_path} changed during the rewrite; retry")

    atomic_write(s.messages_path, checked())


def compact_lines(s: SessionDir, summary: str, preserve: int, take_ids: Callable[[int, int], int]) -> int:
    """Archive all active lines but the last `preserve`; summary and hint go before the kept tail.

    A kept tail that would start inside a call group (an assistant turn and its results) keeps
    the whole group, so fewer are archived. The hint is
    written complete, as koda writes it (and not counted as a mark: it turns no tracking on).
    """
    if not os.path.lexists(s.messages_path):
        return 0  # a missing log reads as no messages: nothing to archive
    scan, before = _classify_for_compaction(s)
    kinds, largest, folds = scan.kinds, scan.largest, scan.folds
    to_archive = group_start(scan.owners, max(0, len(scan.owners) - preserve))
    if to_archive <= 0:
        return 0
    first_id = take_ids(largest + 1, 2)
    now = utc_now()
    hint = encode_record(first_id + 1, Role.ASSISTANT, COMPACTION_HINT, None, None, None, None, now)
    hint = fold_fields(hint[:-1], {"completed_at": now}) + b"\n"
    inserted = encode_record(first_id, Role.SYSTEM, summary, None, None, None, None, now) + hint

    archived = field_suffix("compacted_at", now)  # encoded once, spliced into every archived line

    def lines() -> Iterator[bytes]:
        seen = 0
        pending = True
        for index, (_, line) in enumerate(s.iter_lines()):
            kind = kinds[index] if index < len(kinds) else OTHER
            if kind == NOTE:
                continue  # folded into its message's line
            if folds and index in folds:
                line = fold_fields(line, folds[index])
            if kind == ACTIVE:
                seen += 1
                if seen <= to_archive:
                    yield add_field(line, archived) + b"\n"
                    continue
                if pending:
                    yield inserted
                    pending = False
            yield line + b"\n"
        if pending:
            yield inserted

    _replace(s, before, lines())
    return to_archive


def purge_lines(s: SessionDir, min_age_days: int) -> int:
    """Drop archived lines compacted more than `min_age_days` ago (0: all); copy the rest as is."""
    cutoff = parse_time(utc_now())
    assert cutoff is not None
    cutoff -= timedelta(days=min_age_days)

    def kind(m: Message) -> int:
        if min_age_days == 0:
            return _DROP
        when = parse_time(m.compacted_at or "")
        # An archive time nobody can read is kept: never delete what cannot be dated.
        return _DROP if when is not None and when <= cutoff else ARCHIVED

    before = _stat(s)
    kinds = bytearray()
    notes: list[tuple[int, int]] = []  # (line index, message id) of completion annotations
    dropped_ids: set[int] = set()
    for _, line in s.iter_lines():
        if ARCHIVED_MARK not in line:
            if (_DONE_MARK in line or _THINK_MARK in line) and _ROLE_MARK not in line:
                with contextlib.suppress(LineError):
                    note = decode_entry(line, s.id)
                    if type(note) is Completion:
                        notes.append((len(kinds), note.id))
            kinds.append(OTHER)
            continue
        try:
            m = decode_line(line, s.id)
        except LineError:
            kinds.append(OTHER)
            continue
        what = ACTIVE if m.compacted_at is None else kind(m)
        if what == _DROP:
            dropped_ids.add(m.id)
        kinds.append(what)
    dropped = kinds.count(_DROP)
    if not dropped:
        return 0
    for index, msg_id in notes:
        if msg_id in dropped_ids:
            kinds[index] = _DROP  # the annotation of a message purged goes with it

    def lines() -> Iterator[bytes]:
        for index, (_, line) in enumerate(s.iter_lines()):
            if index >= len(kinds) or kinds[index] != _DROP:
                yield line + b"\n"

    _replace(s, before, lines())
    # Purging is housekeeping, not a use of the session: keep the log's mtime (its idle time).
    with contextlib.suppress(OSError):
        set_mtime(s.messages_path, before.st_mtime_ns, atime_ns=before.st_atime_ns)
    return dropped
