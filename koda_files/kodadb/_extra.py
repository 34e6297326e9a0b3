"""The tables of koda's newest schema beyond sessions, messages and metadata, both ways.

`session_events` ↔ each session's `events.jsonl`; `kv_store` ↔ `kv.json`; `owned_files` (the
files koda created in a session) ↔ the `owned_files` list of `metadata.json`; `input_history` is
koda's REPL history, not conversation data: exported empty, not imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._store.events import EVENTS, encode_event
from ..types import SessionEvent
from ._common import as_int, as_text, from_koda_time, to_koda_time

if TYPE_CHECKING:
    import sqlite3

    from ..store import FileStore

__all__ = ["EXTRA_SCHEMA", "export_events", "export_extras", "export_kv", "import_kv", "session_extras"]

# koda's own statements (db/mod.rs), in its order.
EXTRA_SCHEMA = (
    "CREATE TABLE owned_files (session_id TEXT NOT NULL, path TEXT NOT NULL, "
    "created_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY(session_id, path))",
    "CREATE TABLE kv_store (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE input_history (id INTEGER PRIMARY KEY AUTOINCREMENT, input TEXT NOT NULL, "
    "created_at DATETIME DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE session_events (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, "
    "kind TEXT NOT NULL, payload TEXT NOT NULL, parent_tool_call_id TEXT, "
    "created_at DATETIME DEFAULT CURRENT_TIMESTAMP, FOREIGN KEY(session_id) REFERENCES sessions(id))",
    "CREATE INDEX idx_session_events_session_id ON session_events(session_id, id)",
)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def session_extras(conn: sqlite3.Connection, sid: str, header: dict[str, Any]) -> dict[str, bytes]:
    """Files of one imported session beyond log and header (its `events.jsonl`); owned files go into `header`."""
    tables = _tables(conn)
    files: dict[str, bytes] = {}
    if "session_events" in tables:
        lines = []
        for row in conn.execute(
            "SELECT id, kind, payload, parent_tool_call_id, created_at FROM session_events"
            " WHERE session_id = ? ORDER BY id",
            (sid,),
        ):
            event_id, kind, payload = as_int(row[0]), as_text(row[1]), as_text(row[2])
            if event_id is None or kind is None or payload is None:
                continue
            event = SessionEvent(event_id, sid, kind, payload, as_text(row[3]), from_koda_time(as_text(row[4])))
            lines.append(encode_event(event))
        if lines:
            files[EVENTS] = b"".join(lines)
    if "owned_files" in tables:
        paths = [
            as_text(r[0])
            for r in conn.execute("SELECT path FROM owned_files WHERE session_id = ? ORDER BY path", (sid,))
        ]
        if paths:
            header["owned_files"] = [p for p in paths if p is not None]
    return files


def import_kv(conn: sqlite3.Connection, store: FileStore, replace: bool) -> int:
    """Copy koda's `kv_store` into `kv.json`: keys not there yet, or all with `replace`; returns how many."""
    if "kv_store" not in _tables(conn):
        return 0
    have = dict(store.kv_list_prefix(""))
    n = 0
    for key, value in conn.execute("SELECT key, value FROM kv_store ORDER BY key"):
        k, v = as_text(key), as_text(value)
        if k is not None and v is not None and (replace or k not in have) and have.get(k) != v:
            store.kv_set(k, v)
            n += 1
    return n


def export_extras(conn: sqlite3.Connection, store: FileStore, sid: str, header: dict[str, Any]) -> list[SessionEvent]:
    """Write one session's owned files; return its events (written by `export_events` once all are known)."""
    owned = header.get("owned_files")
    if isinstance(owned, list):
        conn.executemany(
            "INSERT OR IGNORE INTO owned_files (session_id, path) VALUES (?, ?)",
            ((sid, p) for p in owned if isinstance(p, str)),
        )
    return store.load_session_events(sid)


def export_events(conn: sqlite3.Connection, events: list[SessionEvent]) -> None:
    """Insert every event keeping its id when ids are unique store-wide; else koda numbers them in order."""
    keep = len({e.id for e in events}) == len(events)
    if not keep:
        events = sorted(events, key=lambda e: (e.created_at or "", e.session_id, e.id))
    conn.executemany(
        "INSERT INTO session_events (id, session_id, kind, payload, parent_tool_call_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            (e.id if keep else None, e.session_id, e.kind, e.payload, e.parent_tool_call_id, to_koda_time(e.created_at))
            for e in events
        ),
    )


def export_kv(conn: sqlite3.Connection, store: FileStore) -> None:
    conn.executemany("INSERT INTO kv_store (key, value) VALUES (?, ?)", store.kv_list_prefix(""))
