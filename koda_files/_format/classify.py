"""What a line of a log is: the one classifier every reader and rewriter uses.

A line is a message, an annotation of an earlier message (`Completion`), a compaction (a
message: the summary `system` line a compaction writes, with a `"compaction"` time), or not a
message (blank, or anything that does not decode: kept on disk, skipped by readers).

Archived messages: a message is archived when a compaction line comes after it; its
`compacted_at` is the time of the first compaction line after it. A message line carrying its
own `compacted_at` (the first layout, where compaction rewrote every archived line) keeps that.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from ..types import Message
from .codec import Completion, LineError, decode_entry, replace_fields
from .framing import lines_containing_backwards

__all__ = [
    "COMPACTION",
    "COMPACTION_MARK",
    "MESSAGE",
    "NOTE",
    "OTHER",
    "Compaction",
    "archived_as",
    "classify",
    "compaction_of",
    "last_compaction",
]

OTHER = 0
MESSAGE = 1
NOTE = 3
COMPACTION = 5
# In every compaction line, as a key; a line without these bytes is no compaction (a JSON string
# value quotes its quotes), so backward searches skip it undecoded.
COMPACTION_MARK = b'"compaction"'


class Compaction(NamedTuple):
    """What a compaction line records: when, and whether the session tracked completion then."""

    at: str
    tracks_completion: bool
    offset: int = 0  # where its line starts in the file


def classify(line: bytes, session_id: str) -> tuple[int, Message | Completion | None]:
    """(kind, decoded entry) of one line body; (OTHER, None) for a blank line or one that does not decode."""
    if not line.strip():
        return OTHER, None
    try:
        entry = decode_entry(line, session_id)
    except LineError:
        return OTHER, None
    if type(entry) is Completion:
        return NOTE, entry
    return (COMPACTION if COMPACTION_MARK in line and compaction_of(line) else MESSAGE), entry


def compaction_of(line: bytes, offset: int = 0) -> Compaction | None:
    """The compaction a line records, or None; for a line that decodes as a message."""
    if COMPACTION_MARK not in line:
        return None
    record = orjson.loads(line)
    when = record.get("compaction") if type(record) is dict else None
    return Compaction(when, record.get("tracks_completion") is True, offset) if type(when) is str else None


def archived_as(message: Message, when: str) -> Message:
    """`message` archived by a compaction at `when` (a message with its own `compacted_at` keeps it)."""
    if message.compacted_at is not None:
        return message
    return replace_fields(message, {"compacted_at": when})


def last_compaction(fd: int, end: int, session_id: str) -> Compaction | None:
    """The last compaction line before `end`, found reading backwards and decoding only candidates.

    Everything before its line is archived; a log without one is read as a whole (searched at
    the speed of a byte search: only lines holding the mark cost a Python step).
    """
    for offset, line in lines_containing_backwards(fd, COMPACTION_MARK, end):
        if classify(line, session_id)[0] == COMPACTION:
            return compaction_of(line, offset)
    return None


