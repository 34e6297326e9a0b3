"""Reads across many sessions (listing, recent messages, id recovery) that keep no parsed logs.

Each scan reads a session's file once, decodes it, and keeps at most a small summary keyed by the
file's identity, so scanning thousands of sessions costs neither memory nor stale answers.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
from collections.abc import Generator, Iterator
from datetime import datetime, timezone
from pathlib import Path

from .._format.classify import classify
from .._format.codec import LineError, decode_line
from .._format.framing import iter_file_lines, iter_lines_backwards
from .._format.layout import MESSAGES
from ..types import Message, Role
from .messagelog import read_backwards
from .sanitize import has_tool_calls

log = logging.getLogger("koda_files")

__all__ = [
    "backwards",
    "iter_messages",
    "largest_id",
    "last_id_in",
    "logs_by_mtime",
    "pick_assistant_content",
    "pick_pending",
    "pick_user_content",
    "user_messages",
]


def iter_messages(path: Path, session_id: str, marker: bytes = b"") -> Iterator[Message]:
    """The messages of one `messages.jsonl`, quietly skipping lines that are not messages.

    With `marker`, only lines containing those bytes are decoded (a cheap pre-filter: a query
    for archived or user messages skips the rest without parsing it).
    """
    try:
        for _, line in iter_file_lines(path, with_tail=True):
            if marker in line and line.strip():
                with contextlib.suppress(LineError):
                    yield decode_line(line, session_id)
    except OSError:
        return


def largest_id(session_dir: Path) -> int:
    """The largest message id in a session (0 if none): what a rebuilt id counter must exceed."""
    return max((m.id for m in iter_messages(session_dir / MESSAGES, session_dir.name)), default=0)


# File mtimes come from a coarse kernel clock that can lag `created_at` by a few milliseconds.
_CLOCK_SLACK_NS = 10_000_000  # a jiffy is 10 ms at HZ=100, the coarsest Linux setting
# In any line of a user message; inside a JSON string a quote is escaped, so this is rare elsewhere.
USER_MARK = b'"user"'


def logs_by_mtime(sessions_dir: Path, session_ids: list[str]) -> list[tuple[int, str]]:
    """(mtime, id) of the sessions' logs, the most recently modified first."""
    files = []
    for sid in session_ids:
        with contextlib.suppress(OSError):
            files.append((os.stat(f"{sessions_dir}/{sid}/{MESSAGES}", follow_symlinks=False).st_mtime_ns, sid))
    files.sort(reverse=True)
    return files


def backwards(path: Path, session_id: str, marker: bytes = b"") -> Generator[Message, None, None]:
    """`read_backwards` for whole-store scans: a log that cannot be read (a directory, a symlink,
    no permission) is logged and skipped, so one broken session never hides the others."""
    try:
        yield from read_backwards(path, session_id, marker)
    except OSError as exc:
        log.warning("%s: cannot be read (%s); skipped", path, exc.strerror or exc)


def _stamp(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user_messages(sessions_dir: Path, session_ids: list[str], limit: int) -> list[str]:
    """Non-empty user messages across sessions, newest (`created_at`, then id) first.

    Sessions are read most recently modified first, each backwards from its end and only until
    it has given `limit` user messages (a log is in time order); reading stops once a file's
    mtime is older than every message kept, since nothing in it can be newer.
    """
    if limit == 0:
        return []
    files = logs_by_mtime(sessions_dir, session_ids)
    best: list[tuple[str, int, str]] = []  # a min-heap of the `limit` newest
    for mtime_ns, sid in files:
        if len(best) >= limit and _stamp(mtime_ns + _CLOCK_SLACK_NS) < best[0][0]:
            break
        found = 0
        with contextlib.closing(backwards(sessions_dir / sid / MESSAGES, sid, USER_MARK)) as newest_first:
            for m in newest_first:
                if m.role is not Role.USER or not m.content:
                    continue
                item = (m.created_at or "", m.id, m.content)
                if len(best) < limit:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
                found += 1
                if found >= limit:
                    break
    return [content for _, _, content in sorted(best, reverse=True)]


_TAIL = 1 << 16


def last_id_in(fd: int, size: int, session_id: str) -> tuple[int, bool]:
    """(largest id among the last lines, whether the file ends with a newline), reading backwards.

    The id counter, not this, keeps ids unique; this only keeps a session's ids increasing when
    the counter was set back, so the last 64 KiB (or the last message, if further) are enough.
    """
    if size == 0:
        return 0, True
    ends_clean = os.pread(fd, 1, size - 1) == b"\n"
    best = 0
    for offset, line in iter_lines_backwards(fd, size):
        entry = classify(line, session_id)[1]
        if type(entry) is Message:
            best = max(best, entry.id)
        if best and size - offset >= _TAIL:
            break
    return best, ends_clean


# What the `last_*` queries pick from messages walked newest first (None: look further back).
def pick_user_content(m: Message) -> str | None:
    return m.content if m.role is Role.USER else None


def pick_assistant_content(m: Message) -> str | None:
    return m.content if m.role is Role.ASSISTANT else None


def pick_pending(m: Message) -> bool | None:
    return None if m.compacted_at is not None else (m.role is Role.ASSISTANT and has_tool_calls(m))
