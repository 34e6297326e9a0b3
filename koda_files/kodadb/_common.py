"""What koda.db import and export share: koda's schema, the reports, and value conversion.

koda's timestamps are SQLite's `CURRENT_TIMESTAMP` text, `YYYY-MM-DD HH:MM:SS` UTC; this store's
are `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Import converts koda's to ours; export converts ours to koda's
(to the second, so koda's text comparisons of times keep working).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timezone
from pathlib import Path

from .._format.layout import parse_time
from ..types import TokenUsage

__all__ = ["ExportReport", "ImportReport", "Progress", "default_koda_db"]

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called after each session."""

TODO_KEY = "todo"
ROLES = frozenset({"system", "user", "assistant", "tool"})
# koda's token columns: named as the token counts of `TokenUsage` (and of `Message`).
TOKENS = tuple(f.name for f in fields(TokenUsage) if f.name != "stop_reason")
# koda's session columns kept as top-level keys of `metadata.json` (absent when null).
HEADER_COLUMNS = ("title", "mode")

# koda's schema, newest column set, in the column order koda's migrations produce.
SCHEMA = (
    "CREATE TABLE sessions ("
    "id TEXT PRIMARY KEY, "
    "created_at DATETIME DEFAULT CURRENT_TIMESTAMP, "
    "agent_name TEXT NOT NULL, "
    "project_root TEXT, "
    "last_accessed_at TEXT, "
    "title TEXT, "
    "mode TEXT)",
    "CREATE TABLE messages ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "session_id TEXT NOT NULL REFERENCES sessions(id), "
    "role TEXT NOT NULL, "
    "content TEXT, "
    "tool_calls TEXT, "
    "tool_call_id TEXT, "
    "prompt_tokens INTEGER, "
    "completion_tokens INTEGER, "
    "created_at DATETIME DEFAULT CURRENT_TIMESTAMP, "
    "cache_read_tokens INTEGER, "
    "cache_creation_tokens INTEGER, "
    "thinking_tokens INTEGER, "
    "agent_name TEXT, "
    "compacted_at TEXT, "
    "completed_at TEXT, "
    "full_content TEXT, "
    "thinking_content TEXT)",
    "CREATE TABLE session_metadata ("
    "session_id TEXT NOT NULL, "
    "key TEXT NOT NULL, "
    "value TEXT NOT NULL, "
    "updated_at DATETIME DEFAULT CURRENT_TIMESTAMP, "
    "PRIMARY KEY(session_id, key))",
    "CREATE INDEX idx_messages_session_id ON messages(session_id)",
    "CREATE INDEX idx_messages_role_id ON messages(role, id DESC)",
)


@dataclass(frozen=True)
class ImportReport:
    """What `import_sqlite` did, session by session."""

    db_path: str
    imported: tuple[str, ...] = ()  # sessions written (new or replaced)
    replaced: tuple[str, ...] = ()  # of those, the ones that overwrote a session already present
    skipped: tuple[str, ...] = ()  # already present, left as they are (no `replace`)
    renumbered: tuple[str, ...] = ()  # imported with fresh ids: their koda ids were taken here
    failed: tuple[tuple[str, str], ...] = ()  # (session id, reason): not imported
    messages: int = 0
    metadata: int = 0  # metadata keys written, the todo not counted
    todos: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ExportReport:
    """What `export_sqlite` wrote."""

    db_path: str
    sessions: int = 0
    messages: int = 0
    metadata: int = 0  # session_metadata rows, todos included
    todos: int = 0
    failed: tuple[tuple[str, str], ...] = ()  # (session id, reason): sessions left out


def default_koda_db() -> Path:
    """koda's database: `$XDG_CONFIG_HOME/koda/db/koda.db`, else `~/.config/koda/db/koda.db`."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "koda" / "db" / "koda.db"


# ── values ──


def from_koda_time(value: object) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` (or any ISO form) to `YYYY-MM-DDTHH:MM:SS.ffffffZ`; unreadable kept as is."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    parsed = parse_time(text)
    if parsed is None:
        return text
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_koda_time(value: str | None) -> str | None:
    """This store's timestamps to koda's `YYYY-MM-DD HH:MM:SS` UTC; unreadable kept as is."""
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None:
        return value
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def as_int(value: object) -> int | None:
    """An integer column's value; None for null or anything that is not a whole number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def as_text(value: object) -> str | None:
    """A text column's value as text that can be written as UTF-8; None for null."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else str(value)
    # A lone surrogate cannot be written as UTF-8; replace it rather than fail the session.
    return text.encode("utf-8", "replace").decode("utf-8")
