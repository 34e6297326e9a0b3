"""Compaction and purge: rewrites of `messages.jsonl` that copy untouched lines byte for byte.

Both stream the file twice under the session lock (classify, then write a temp file that is
renamed over the original), so memory stays flat whatever the file size, and a crash leaves
either the old file or the new one. Lines that are not messages are copied as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta

from .codec import LineError, decode_line, encode_record, mark_archived
from .errors import KodaFilesError
from .fileops import atomic_write
from .layout import parse_time, utc_now
from .session import SessionDir
from .types import Message, Role

__all__ = ["COMPACTION_HINT", "compact_lines", "purge_lines"]

COMPACTION_HINT = (
    "[Context compacted] The earlier part of this conversation was compacted into the summary "
    "above, which replaces it. Continue from there."
)

# What pass 1 learns of each line, by line index.
_OTHER = 0  # not a message, or blank: copied verbatim
_ACTIVE = 1
_ARCHIVED = 2
_DROP = 3


def _classify(
    s: SessionDir, archived_kind: Callable[[Message], int]
) -> tuple[bytearray, int, os.stat_result]:
    """One byte per line saying what it is, the largest id seen, and the file's stat before."""
    try:
        before = os.stat(s.messages_path, follow_symlinks=False)
    except FileNotFoundError:
        raise KodaFilesError(f"session {s.id!r}: {s.messages_path} is missing") from None
    kinds = bytearray()
    largest = 0
    for _, line in s.iter_lines():
        try:
            m = decode_line(line, s.id) if line.strip() else None
        except LineError:
            m = None
        if m is None:
            kinds.append(_OTHER)
            continue
        largest = max(largest, m.id)
        kinds.append(_ACTIVE if m.compacted_at is None else archived_kind(m))
    return kinds, largest, before


def _replace(s: SessionDir, before: os.stat_result, lines: Iterator[bytes]) -> None:
    def checked() -> Iterator[bytes]:
        yield from lines
        now = os.stat(s.messages_path, follow_symlinks=False)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            # Someone edited the file by hand between our two passes: write nothing.
            raise KodaFilesError(f"session {s.id!r}: {s.messages_path} changed during the rewrite; retry")

    atomic_write(s.messages_path, checked())


def compact_lines(s: SessionDir, summary: str, preserve: int, take_ids: Callable[[int, int], int]) -> int:
    """Archive all active lines but the last `preserve`; summary and hint go before the kept tail."""
    kinds, largest, before = _classify(s, lambda m: _ARCHIVED)
    to_archive = kinds.count(_ACTIVE) - preserve
    if to_archive <= 0:
        return 0
    first_id = take_ids(largest + 1, 2)
    now = utc_now()
    inserted = encode_record(first_id, Role.SYSTEM, summary, None, None, None, None, now) + encode_record(
        first_id + 1, Role.ASSISTANT, COMPACTION_HINT, None, None, None, None, now
    )

    def lines() -> Iterator[bytes]:
        seen = 0
        pending = True
        for index, (_, line) in enumerate(s.iter_lines()):
            kind = kinds[index]
            if kind == _ACTIVE:
                seen += 1
                if seen <= to_archive:
                    yield mark_archived(line, now) + b"\n"
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
        return _DROP if when is not None and when <= cutoff else _ARCHIVED

    kinds, _, before = _classify(s, kind)
    dropped = kinds.count(_DROP)
    if not dropped:
        return 0

    def lines() -> Iterator[bytes]:
        for index, (_, line) in enumerate(s.iter_lines()):
            if kinds[index] != _DROP:
                yield line + b"\n"

    _replace(s, before, lines())
    return dropped
