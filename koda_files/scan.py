"""Reads across many sessions (listing, recent messages, id recovery) that keep no parsed logs.

Each scan reads a session's file once, decodes it, and keeps at most a small summary keyed by the
file's identity, so scanning thousands of sessions costs neither memory nor stale answers.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from .codec import LineError, decode_line
from .fileops import read_file
from .layout import MESSAGES
from .messagelog import split_lines
from .types import Message, Role

__all__ = ["ScanCache", "iter_messages", "largest_id", "session_summary", "user_messages"]


def iter_messages(path: Path, session_id: str) -> Iterator[Message]:
    """The messages of one `messages.jsonl`, quietly skipping lines that are not messages."""
    try:
        data = read_file(path)
    except OSError:
        return
    if not data:
        return
    end = data.rfind(b"\n") + 1
    for _, line in split_lines(data[:end], 1, True):
        if line.strip():
            with contextlib.suppress(LineError):
                yield decode_line(line, session_id)


def largest_id(session_dir: Path) -> int:
    """The largest message id in a session (0 if none): what a rebuilt id counter must exceed."""
    return max((m.id for m in iter_messages(session_dir / MESSAGES, session_dir.name)), default=0)


class ScanCache:
    """(count, tokens) per session file, valid while its inode, size and mtime are unchanged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int, int], tuple[int, int]]] = {}

    def get(self, path: Path, key: tuple[int, int, int]) -> tuple[int, int] | None:
        with self._lock:
            entry = self._entries.get(path)
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, path: Path, key: tuple[int, int, int], value: tuple[int, int]) -> None:
        with self._lock:
            self._entries[path] = (key, value)


def session_summary(cache: ScanCache, session_dir: Path, session_id: str) -> tuple[int, int]:
    """(message count incl. archived, sum of prompt + completion tokens) of one session."""
    path = session_dir / MESSAGES
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return 0, 0
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = cache.get(path, key)
    if cached is not None:
        return cached
    count = tokens = 0
    for m in iter_messages(path, session_id):
        count += 1
        tokens += (m.prompt_tokens or 0) + (m.completion_tokens or 0)
    cache.put(path, key, (count, tokens))
    return count, tokens


# File mtimes come from a coarse kernel clock that can lag `created_at` by a few milliseconds.
_CLOCK_SLACK_NS = 2_000_000_000


def _stamp(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def user_messages(sessions_dir: Path, session_ids: list[str], limit: int) -> list[str]:
    """Non-empty user messages across sessions, newest (`created_at`, then id) first.

    Sessions are read most recently modified first, and reading stops once a file's mtime is
    older than every message kept: nothing in it can be newer than its last modification.
    """
    if limit == 0:
        return []
    files = []
    for sid in session_ids:
        with contextlib.suppress(OSError):
            files.append((os.stat(sessions_dir / sid / MESSAGES, follow_symlinks=False).st_mtime_ns, sid))
    files.sort(reverse=True)
    best: list[tuple[str, int, str]] = []  # a min-heap of the `limit` newest
    for mtime_ns, sid in files:
        if len(best) >= limit and _stamp(mtime_ns + _CLOCK_SLACK_NS) < best[0][0]:
            break
        for m in iter_messages(sessions_dir / sid / MESSAGES, sid):
            if m.role is Role.USER and m.content:
                item = (m.created_at or "", m.id, m.content)
                if len(best) < limit:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
    return [content for _, _, content in sorted(best, reverse=True)]
