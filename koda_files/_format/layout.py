"""Where things live under a root, what a session id may be, and how time and ids are spelled."""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InvalidSessionIdError

__all__ = [
    "ACCESS",
    "COMPACTION_LAYOUT",
    "FIRST_LAYOUT",
    "GITIGNORE_FILE",
    "GITIGNORE_TEXT",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "LOCK_NAME",
    "MESSAGES",
    "METADATA",
    "SESSIONS",
    "SESSION_ID_PATTERN",
    "TODO",
    "default_root",
    "is_store",
    "new_session_id",
    "parse_time",
    "utc_now",
    "validate_session_id",
]

SESSIONS = "sessions"
MESSAGES = "messages.jsonl"
METADATA = "metadata.json"
TODO = "todo.md"
LOCK_NAME = ".lock"
ACCESS = ".access"  # its mtime is the last `load_context` (idle time); empty
LAYOUT_FILE = "koda-files.json"
# Layout 1: archived lines carry their own `compacted_at` (a compaction rewrote them). Layout 2:
# a compaction line archives what is above it (no line is rewritten). A new root is written as
# 1 and moves to 2 with its first compaction, so a koda-files that knows only 1 refuses it then.
LAYOUT_VERSION = 2  # the newest this code reads
FIRST_LAYOUT = 1
COMPACTION_LAYOUT = 2
# What a root's `.gitignore` leaves out of git: derived and transient files only (never `.ids`).
GITIGNORE_FILE = ".gitignore"
GITIGNORE_TEXT = b"""# koda-files: derived and transient files; the history (.ids included) is tracked.
/.index
/.changes
/.summary
/.kv.lock
.lock
.access
.*.tmp
/sessions/.new-*/
/sessions/.deleted-*/
"""

SESSION_ID_PATTERN = _SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_session_id(session_id: object) -> str:
    """Return the id if it may name a directory under the root, else raise `InvalidSessionIdError`."""
    if type(session_id) is not str or _SESSION_ID.fullmatch(session_id) is None:
        raise InvalidSessionIdError(session_id)
    return session_id


def default_root() -> Path:
    """`KODA_FILES_DIR` when set and non-empty, else the platform's user data dir for koda."""
    env = os.environ.get("KODA_FILES_DIR")
    if env:
        return Path(env)
    return _user_data_dir()


def _user_data_dir() -> Path:
    import platformdirs  # imported when needed: it costs milliseconds at every start-up

    return Path(platformdirs.user_data_dir("koda"))


def is_store(root: Path) -> bool:
    """A koda-files store: a directory holding the layout marker or a `sessions/` directory."""
    return (root / LAYOUT_FILE).is_file() or (root / SESSIONS).is_dir()


def check_new_root(root: Path) -> None:
    """Refuse to make a store in a directory holding anything but dot-files, unless it is one already.

    A missing or empty directory, and the platform's data dir for koda, may always become a store.
    """
    from ..errors import NotAStoreError

    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return  # missing: makedirs creates it
    except NotADirectoryError:
        raise NotAStoreError(root, f"not a koda-files store: {root} is not a directory") from None
    if is_store(root) or all(n.startswith(".") for n in names):
        return
    if root == _user_data_dir():
        return
    raise NotAStoreError(
        root,
        f"not a koda-files store: {root} (a non-empty directory without {LAYOUT_FILE} or {SESSIONS}/; "
        "give an empty or new directory)",
    )


_stamp: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds, e.g. `2026-11-27T11:09:22.123456Z`."""
    global _stamp
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached_second, prefix = _stamp  # one tuple, so threads never mix a second with another's prefix
    if second != cached_second:  # formatting the date costs more than the rest of an insert
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def parse_time(text: str) -> datetime | None:
    """Parse a stored timestamp (ours, or SQLite's `YYYY-MM-DD HH:MM:SS`) as UTC; None if unreadable."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except (ValueError, AttributeError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


_uuid_lock = threading.Lock()
_uuid_last = (0, 0)


def new_session_id() -> str:
    """A UUIDv7: time-ordered, so `ls sessions/` sorts by age; ids made in one process never tie."""
    global _uuid_last
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_seq = _uuid_last
        if ms <= last_ms:
            # Same (or an earlier, after a clock step back) millisecond: count on from the
            # last id so ids of this process stay strictly ordered.
            ms, seq = last_ms, last_seq + 1
            if seq > 0xFFF:
                ms, seq = last_ms + 1, 0
        else:
            seq = secrets.randbits(8)
        _uuid_last = (ms, seq)
    rand_b = secrets.randbits(62)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
