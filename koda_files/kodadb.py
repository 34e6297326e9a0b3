"""Moving history between a koda-files store and koda's own SQLite database (`koda.db`).

`import_sqlite(db_path, store)` copies every session of a koda database into the store: message
ids, order (by id, as koda orders them), timestamps, compaction and completion marks, titles,
approval modes, idle times, metadata and the todo. It opens the database read-only (it works
while koda has it open) and never changes it. Each session is built in a dot-directory and
renamed into place, so it appears whole or not at all (`kodadb_import`).

`export_sqlite(store, db_path)` writes a new database in koda's schema (the newest column set,
both indexes, WAL mode), built under a temporary name and moved into place at the end; it never
overwrites an existing file (`kodadb_export`).

This module holds what both directions share: koda's schema, the reports, and the conversion of
values. koda's timestamps are SQLite's `CURRENT_TIMESTAMP` text, `YYYY-MM-DD HH:MM:SS` UTC; this
store's are `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Import converts koda's to ours; export converts ours
to koda's (to the second, so koda's text comparisons of times keep working).

How each koda column is kept here:

- `sessions.title`, `sessions.mode`: the top-level `"title"` and `"mode"` of `metadata.json`;
- `sessions.last_accessed_at`: the session's last access, which this store keeps as file mtimes
  (`FileStore.session_last_accessed` / `set_session_last_accessed`), so the idle time carries over;
- `messages.completed_at`: the `"completed_at"` field of the message line;
- `session_metadata`: the header's `"metadata"`, except the key `todo`, which is `todo.md`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .codec import TOKEN_FIELDS
from .layout import parse_time

if TYPE_CHECKING:
    from .store import FileStore

__all__ = ["ExportReport", "ImportReport", "default_koda_db", "export_sqlite", "import_sqlite"]

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called after each session."""

TODO_KEY = "todo"
ROLES = frozenset({"system", "user", "assistant", "tool"})
TOKENS = TOKEN_FIELDS
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


def import_sqlite(
    db_path: str | os.PathLike[str],
    store: FileStore,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Copy every session of koda's database at `db_path` into `store`; the database is not changed.

    A session already in the store is skipped (and reported) unless `replace` is true. Message ids
    are kept unless they could already have been handed out by this store; then that session is
    renumbered in order with fresh ids (and reported). Afterwards the store's id counter is past
    every imported id.
    """
    from .kodadb_import import run_import

    return run_import(Path(os.fspath(db_path)), store, replace, progress)


def export_sqlite(
    store: FileStore, db_path: str | os.PathLike[str], *, progress: Progress | None = None
) -> ExportReport:
    """Write every session of `store` into a new koda database at `db_path` (never overwritten)."""
    from .kodadb_export import run_export

    return run_export(store, Path(os.path.abspath(os.fspath(db_path))), progress)


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
