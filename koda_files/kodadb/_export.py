"""`export_sqlite`: write a koda-files store as a new koda SQLite database.

The database is built under a temporary dot-name next to the target (the newest column set, both
indexes, WAL mode, private like the store) and linked into place at the end; an existing file is
never overwritten. Times are written in koda's format, to the second.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Any

from .._files.fileops import create_empty, fsync_dir, link, rename, sync_path, unlink
from ..errors import KodaFilesError
from ..store import FileStore
from ..types import Message, SessionEvent, SessionOverview
from ._common import SCHEMA, TODO_KEY, ExportReport, Progress, as_text, to_koda_time
from ._extra import EXTRA_SCHEMA, export_events, export_extras, export_kv

__all__ = ["run_export"]


def run_export(store: FileStore, target: Path, progress: Progress | None) -> ExportReport:
    """`kodadb.export_sqlite`: see there. `target` is absolute."""
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing file", str(target))
    if not target.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(target.parent))
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        report = _export(store, tmp, str(target), progress)
        # link() refuses to replace a file that appeared meanwhile: never overwrite.
        try:
            link(tmp, target)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing file", str(target)) from None
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "refusing to overwrite an existing file", str(target)) from None
            rename(tmp, target)
        fsync_dir(target.parent)
        return report
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                unlink(leftover)


def _export(store: FileStore, tmp: Path, name: str, progress: Progress | None) -> ExportReport:
    import sqlite3

    create_empty(tmp)  # private (0600), like the store
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # as koda opens it; only before any table
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        for statement in (*SCHEMA, *EXTRA_SCHEMA):
            conn.execute(statement)
        events: list[SessionEvent] = []
        n_sessions = n_messages = n_meta = n_todos = 0
        failed: list[tuple[str, str]] = []
        sessions: dict[str, tuple[SessionOverview, dict[str, Any]]] = {}
        for sid in store.session_ids():  # what the store lists: stray entries are not sessions
            try:
                header = store.session_header(sid)  # every field, for the metadata and owned files
            except KodaFilesError as exc:
                failed.append((sid, str(exc)))
                continue
            overview = store.session_overview(sid)
            if overview is not None:  # None: deleted meanwhile
                sessions[sid] = (overview, header)
        # koda orders sessions created in the same second by rowid: insert them in creation order.
        ids = sorted(sessions, key=lambda sid: (sessions[sid][0].created_at, sid))
        for done, sid in enumerate(ids, 1):
            overview, header = sessions[sid]
            messages = store.load_all_messages(sid)
            meta = header.get("metadata") or {}
            todo = store.get_todo(sid)
            conn.execute(
                "INSERT INTO sessions (id, created_at, agent_name, project_root, last_accessed_at,"
                " title, mode) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    to_koda_time(as_text(overview.created_at or None)),
                    as_text(overview.agent_name),
                    as_text(overview.project_root),
                    to_koda_time(store.session_last_accessed(sid)),
                    as_text(overview.title),
                    as_text(overview.mode),
                ),
            )
            try:
                conn.executemany(
                    "INSERT INTO messages (id, session_id, role, content, tool_calls, tool_call_id,"
                    " prompt_tokens, completion_tokens, created_at, cache_read_tokens,"
                    " cache_creation_tokens, thinking_tokens, agent_name, compacted_at, completed_at,"
                    " full_content, thinking_content)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (_message_row(m) for m in messages),
                )
            except sqlite3.IntegrityError as exc:
                raise KodaFilesError(
                    f"session {sid!r}: {exc}: a message id is used twice in the store (hand edit?)"
                ) from None
            rows = [(k, v) for k, v in sorted(meta.items()) if isinstance(v, str) and k != TODO_KEY]
            if todo is not None:
                rows.append((TODO_KEY, todo))
            conn.executemany(
                "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)",
                ((sid, k, v) for k, v in rows),
            )
            events += export_extras(conn, store, sid, header)
            n_sessions += 1
            n_messages += len(messages)
            n_meta += len(rows) - (todo is not None)  # the todo is counted as a todo, as import does
            n_todos += todo is not None
            if progress is not None:
                progress(done, len(ids))
        export_events(conn, events)
        export_kv(conn, store)
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints and removes the -wal file
    sync_path(tmp)
    return ExportReport(name, n_sessions, n_messages, n_meta, n_todos, tuple(failed))


def _message_row(m: Message) -> tuple[Any, ...]:
    return (
        m.id,
        m.session_id,
        m.role.value,
        m.content,
        m.tool_calls,
        m.tool_call_id,
        m.prompt_tokens,
        m.completion_tokens,
        to_koda_time(m.created_at),
        m.cache_read_tokens,
        m.cache_creation_tokens,
        m.thinking_tokens,
        m.agent_name,
        to_koda_time(m.compacted_at),
        to_koda_time(m.completed_at),
        m.full_content,
        m.thinking_content,
    )
