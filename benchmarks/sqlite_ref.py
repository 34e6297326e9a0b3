"""Reference SQLite implementation of the `Persistence` API, the baseline of the benchmark.

This is koda's own storage design (its Rust `Database`), transcribed to Python's `sqlite3`
so that both backends are measured through the same Python API, in the same process, with
the same result types:

* WAL journal, ``foreign_keys=ON``, ``auto_vacuum=INCREMENTAL``, as koda opens its database;
  ``synchronous`` is ``NORMAL`` (compare with ``durability="flush"``) or ``FULL`` (compare
  with ``durability="fsync"``).
* koda's schema: ``sessions``, ``messages`` (autoincrement id, index on ``session_id`` and on
  ``(role, id DESC)``) and ``session_metadata``.
* koda's queries, written the efficient way: one indexed statement per read, one commit per
  write call, ``load_context`` selects the active rows by id and then runs the same three
  sanitising passes in Python as the file store does.

Where the file store's contract (README) fixes koda's behaviour, this follows the contract (so
both stores give the same answers):

* ``compact_session`` puts the summary and the continuation hint *before* the preserved tail.
  Conversation order is id order here, so the tail rows are moved behind the hint (re-inserted
  with fresh ids and the old rows deleted, all in the compaction's transaction). That costs
  ``preserve_count`` row copies, a handful.
* ``list_sessions`` picks the ``limit`` newest sessions first and only then counts their
  messages (koda aggregates every session of the project before applying ``LIMIT``; that
  would handicap SQLite).
* ``compacted_stats().size_bytes`` counts UTF-8 bytes (``LENGTH`` of the text cast to a blob)
  and treats a null content as empty (koda's expression drops such rows from the sum).
* ``purge_compacted`` reclaims space with ``PRAGMA incremental_vacuum`` (koda runs a full
  ``VACUUM``, which rewrites the whole database and would handicap SQLite).
* ``last_user_message`` / ``last_assistant_message`` steer the planner to the ``session_id``
  index (koda's literal query makes SQLite scan the ``(role, id DESC)`` index across all
  sessions, milliseconds for any session but the newest).
* ``get_session_idle_secs`` (an access is an insert or a ``load_context``) takes the
  later of ``sessions.last_accessed_at``, which ``load_context`` sets (one small write), and the
  ``created_at`` of the session's newest message, so ``insert_message`` stays one ``INSERT``
  (koda runs a second ``UPDATE sessions SET last_accessed_at`` per insert).
* ``mark_message_complete`` keeps the first ``completed_at`` (as the file store does).
* ``load_context`` keeps the README's three sanitising passes; like the file store it does not hide assistant
  messages that were never marked complete (newer koda filters them in SQL).

The schema is koda's, with the columns koda's newer contract added (``sessions.title``,
``sessions.mode``, ``messages.completed_at``).

Timestamps are ISO 8601 UTC strings with microseconds and a ``Z``, as the file store writes
them, so ``created_at`` / ``compacted_at`` compare the same way in both.

This module is a benchmark baseline, not part of the library.
"""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import orjson

from koda_files._session.sanitize import CallOwners, group_start, sanitize
from koda_files.errors import InvalidSessionIdError, KodaFilesError, SessionNotFoundError
from koda_files.types import (
    CompactedStats,
    Interruption,
    Message,
    Role,
    SessionInfo,
    SessionUsage,
    TokenUsage,
)

__all__ = ["SqliteStore", "sanitize_context"]

StrPath = str | os.PathLike[str]
RoleLike = Role | str
Synchronous = Literal["NORMAL", "FULL"]

_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ROLES: dict[str, Role] = {r.value: r for r in Role}

CONTINUATION_HINT = (
    "Your context was compacted. The previous message contains a summary of our earlier "
    "conversation, and that summary replaces it. Do not mention the summary or that the "
    "context was compacted; continue the conversation naturally from the summarized context."
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    agent_name TEXT NOT NULL,
    project_root TEXT,
    last_accessed_at TEXT,
    title TEXT,
    mode TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT,
    tool_calls TEXT,
    tool_call_id TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    cache_read_tokens INTEGER,
    cache_creation_tokens INTEGER,
    thinking_tokens INTEGER,
    agent_name TEXT,
    compacted_at TEXT,
    completed_at TEXT,
    FOREIGN KEY(session_id) REFERENCES sessions(id)
);
CREATE INDEX IF NOT EXISTS idx_messages_session_id ON messages(session_id);
CREATE INDEX IF NOT EXISTS idx_messages_role_id ON messages(role, id DESC);
CREATE TABLE IF NOT EXISTS session_metadata (
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY(session_id, key),
    FOREIGN KEY(session_id) REFERENCES sessions(id)
);
"""

_MESSAGE_COLUMNS = (
    "id, role, content, tool_calls, tool_call_id, prompt_tokens, completion_tokens, "
    "cache_read_tokens, cache_creation_tokens, thinking_tokens, agent_name, created_at, compacted_at, "
    "completed_at"
)
_COPY_COLUMNS = (
    "session_id, role, content, tool_calls, tool_call_id, prompt_tokens, completion_tokens, "
    "created_at, cache_read_tokens, cache_creation_tokens, thinking_tokens, agent_name, completed_at"
)
_INSERT = (
    "INSERT INTO messages (session_id, role, content, tool_calls, tool_call_id, prompt_tokens, "
    "completion_tokens, cache_read_tokens, cache_creation_tokens, thinking_tokens, agent_name, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_USAGE_SUMS = (
    "COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_creation_tokens), 0), "
    "COALESCE(SUM(thinking_tokens), 0), COUNT(*)"
)

_Row = tuple[
    int, str, str | None, str | None, str | None, int | None, int | None, int | None, int | None,
    int | None, str | None, str | None, str | None, str | None,
]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(stamp: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC stamp (also SQLite's "YYYY-MM-DD HH:MM:SS")."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _check_id(session_id: str) -> None:
    if not isinstance(session_id, str) or _SESSION_ID.fullmatch(session_id) is None:
        raise InvalidSessionIdError(session_id)


def _check_text(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


def _call_ids(tool_calls: str) -> list[str]:
    """The ``id`` of every call in a ``tool_calls`` JSON array (none if it is not one)."""
    try:
        calls = orjson.loads(tool_calls)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(calls, list):
        return []
    ids: list[str] = []
    for call in calls:
        if isinstance(call, dict):
            cid = call.get("id")
            if isinstance(cid, str):
                ids.append(cid)
    return ids


def sanitize_context(messages: list[Message]) -> list[Message]:
    """The context rule both stores answer by (README, "The context the model gets"): call
    groups pruned to a fixpoint, the newest result per call. koda's older SQL passes (one pass
    over the symmetric difference of call and result ids) keep a result of a partly answered
    turn, which the rule drops; the cross-check compares one contract, so both use this one."""
    return sanitize(messages)


class SqliteStore:
    """koda's SQLite backend, in Python: the same API and answers as `koda_files.FileStore`."""

    def __init__(
        self,
        path: StrPath,
        *,
        synchronous: Synchronous = "NORMAL",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous: Synchronous = synchronous
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self._conn = conn
        # auto_vacuum only takes effect before the first table is created (as in koda).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'session_metadata'").fetchone() is None:
            conn.executescript(_SCHEMA)

    # ── housekeeping ────────────────────────────────────────────────────────

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── sessions ────────────────────────────────────────────────────────────

    def create_session(self, agent_name: str, project_root: StrPath) -> str:
        _check_text("agent_name", agent_name)
        sid = str(uuid.uuid4())
        root = os.path.abspath(os.fspath(project_root))
        self._conn.execute(
            "INSERT INTO sessions (id, created_at, agent_name, project_root) VALUES (?, ?, ?, ?)",
            (sid, _now(), agent_name, root),
        )
        return sid

    def list_sessions(self, limit: int, project_root: StrPath) -> list[SessionInfo]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        if limit == 0:
            return []
        root = os.path.abspath(os.fspath(project_root))
        rows = self._conn.execute(
            """
            WITH top AS (
                SELECT rowid AS r, id, agent_name, created_at, project_root, title, mode FROM sessions
                WHERE project_root = ? OR project_root IS NULL
                ORDER BY created_at DESC, rowid DESC LIMIT ?
            )
            SELECT t.id, t.agent_name, t.created_at, COUNT(m.id),
                   COALESCE(SUM(m.prompt_tokens), 0) + COALESCE(SUM(m.completion_tokens), 0),
                   t.project_root, t.title, t.mode
            FROM top t LEFT JOIN messages m ON m.session_id = t.id
            GROUP BY t.r
            ORDER BY t.created_at DESC, t.r DESC
            """,
            (root, limit),
        ).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        _check_id(session_id)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM session_metadata WHERE session_id = ?", (session_id,))
            existed = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        conn.execute("PRAGMA incremental_vacuum")
        return existed

    # ── messages ────────────────────────────────────────────────────────────

    def insert_message(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None = None,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        usage: TokenUsage | None = None,
    ) -> int:
        return self.insert_message_with_agent(
            session_id, role, content, tool_calls, tool_call_id, usage, None
        )

    def insert_message_with_agent(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None,
        tool_calls: str | None,
        tool_call_id: str | None,
        usage: TokenUsage | None,
        agent_name: str | None,
    ) -> int:
        _check_id(session_id)
        r = Role.parse(role)
        _check_text("content", content)
        _check_text("tool_calls", tool_calls)
        _check_text("tool_call_id", tool_call_id)
        _check_text("agent_name", agent_name)
        if usage is None:
            params: tuple[object, ...] = (
                session_id, r.value, content, tool_calls, tool_call_id,
                None, None, None, None, None, agent_name, _now(),
            )
        elif isinstance(usage, TokenUsage):
            params = (
                session_id, r.value, content, tool_calls, tool_call_id,
                usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens,
                usage.cache_creation_tokens, usage.thinking_tokens, agent_name, _now(),
            )
        else:
            raise TypeError(f"usage must be a TokenUsage or None, not {type(usage).__name__}")
        try:
            # One statement in autocommit mode: one transaction, one commit.
            cur = self._conn.execute(_INSERT, params)
        except sqlite3.IntegrityError as e:
            raise SessionNotFoundError(session_id, str(e)) from None
        rowid = cur.lastrowid
        assert rowid is not None
        return rowid

    def _messages(self, session_id: str, rows: list[_Row]) -> list[Message]:
        roles = _ROLES
        return [
            Message(r[0], session_id, roles[r[1]], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                    r[11], r[12], r[13])
            for r in rows
        ]

    def load_context(self, session_id: str) -> list[Message]:
        _check_id(session_id)
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages "
            "WHERE session_id = ? AND compacted_at IS NULL ORDER BY id",
            (session_id,),
        ).fetchall()
        # An access, for get_session_idle_secs (one UPDATE of the session row, one commit).
        self._conn.execute("UPDATE sessions SET last_accessed_at = ? WHERE id = ?", (_now(), session_id))
        return sanitize_context(self._messages(session_id, rows))

    def load_all_messages(self, session_id: str) -> list[Message]:
        _check_id(session_id)
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        ).fetchall()
        return self._messages(session_id, rows)

    def recent_user_messages(self, limit: int) -> list[str]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        rows = self._conn.execute(
            "SELECT content FROM messages WHERE role = 'user' AND content IS NOT NULL "
            "AND content != '' ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [r[0] for r in rows]

    def _last_content(self, session_id: str, role: str) -> str:
        _check_id(session_id)
        # koda's query reads "role = ?"; without statistics SQLite then walks the (role, id DESC)
        # index from the newest row of *any* session, milliseconds for a session that is not the
        # newest. "+role" keeps the planner on the session_id index: a few µs whatever the session.
        row = self._conn.execute(
            "SELECT content FROM messages WHERE session_id = ? AND +role = ? AND content IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (session_id, role),
        ).fetchone()
        return "" if row is None else str(row[0])

    def last_assistant_message(self, session_id: str) -> str:
        return self._last_content(session_id, "assistant")

    def last_user_message(self, session_id: str) -> str:
        return self._last_content(session_id, "user")

    def has_pending_tool_calls(self, session_id: str) -> bool:
        _check_id(session_id)
        row = self._conn.execute(
            "SELECT role, tool_calls FROM messages WHERE session_id = ? AND compacted_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        return row is not None and row[0] == "assistant" and row[1] is not None

    # ── token usage ─────────────────────────────────────────────────────────

    def session_token_usage(self, session_id: str) -> SessionUsage:
        _check_id(session_id)
        r = self._conn.execute(
            f"SELECT {_USAGE_SUMS} FROM messages WHERE session_id = ? "
            "AND (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL)",
            (session_id,),
        ).fetchone()
        return SessionUsage(r[0], r[1], r[2], r[3], r[4], r[5])

    def session_usage_by_agent(self, session_id: str) -> list[tuple[str, SessionUsage]]:
        _check_id(session_id)
        rows = self._conn.execute(
            f"SELECT COALESCE(agent_name, 'main') AS a, {_USAGE_SUMS} FROM messages "
            "WHERE session_id = ? AND (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL) "
            "GROUP BY a "
            "ORDER BY COALESCE(SUM(prompt_tokens), 0) + COALESCE(SUM(completion_tokens), 0) DESC, a",
            (session_id,),
        ).fetchall()
        return [(r[0], SessionUsage(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]

    # ── compaction and purge ────────────────────────────────────────────────

    def compact_session(self, session_id: str, summary: str, preserve_count: int) -> int:
        _check_id(session_id)
        if preserve_count < 0:
            raise ValueError(f"preserve_count must be >= 0, not {preserve_count}")
        _check_text("summary", summary)
        conn = self._conn
        now = _now()
        conn.execute("BEGIN IMMEDIATE")
        try:
            tail: list[tuple[int]] = []
            if preserve_count > 0:
                # The contract's compaction keeps a call group whole: walk back from the newest
                # message until `preserve_count` are taken and every result taken has its owner
                # (the latest earlier assistant message calling its id) taken too.
                pending: set[str] = set()
                # Mostly the group is within a few rows of the tail: read those first.
                for limit in (preserve_count + 64, -1):
                    tail, pending = [], set()
                    rows = conn.execute(
                        "SELECT id, role, tool_calls, tool_call_id FROM messages "
                        "WHERE session_id = ? AND compacted_at IS NULL ORDER BY id DESC LIMIT ?",
                        (session_id, limit),
                    ).fetchall()
                    for row in rows:
                        if len(tail) >= preserve_count and not pending:
                            break
                        tail.append((row[0],))
                        if row[1] == "tool" and row[3] is not None:
                            pending.add(row[3])
                        elif row[1] == "assistant" and row[2] is not None:
                            pending.difference_update(_call_ids(row[2]))
                    if not pending or len(rows) < limit:
                        break
                if pending:  # a result nobody called: judge ownership from the start instead
                    rows = conn.execute(
                        "SELECT id, role, tool_calls, tool_call_id FROM messages "
                        "WHERE session_id = ? AND compacted_at IS NULL ORDER BY id",
                        (session_id,),
                    ).fetchall()
                    owners = CallOwners()
                    cut = group_start(
                        [owners.feed(_call_shape(session_id, r)) for r in rows], max(0, len(rows) - preserve_count)
                    )
                    tail = [(r[0],) for r in reversed(rows[cut:])]
            if tail:
                archived = conn.execute(
                    "UPDATE messages SET compacted_at = ? "
                    "WHERE session_id = ? AND compacted_at IS NULL AND id < ?",
                    (now, session_id, tail[-1][0]),
                ).rowcount
            else:
                archived = conn.execute(
                    "UPDATE messages SET compacted_at = ? WHERE session_id = ? AND compacted_at IS NULL",
                    (now, session_id),
                ).rowcount
            if archived <= 0:
                conn.execute("ROLLBACK")
                return 0
            conn.executemany(
                "INSERT INTO messages (session_id, role, content, created_at) VALUES (?, ?, ?, ?)",
                [(session_id, "system", summary, now), (session_id, "assistant", CONTINUATION_HINT, now)],
            )
            if tail:
                lo, hi = tail[-1][0], tail[0][0]
                # Move the preserved tail behind the summary and the hint (fresh ids, same rows).
                conn.execute(
                    f"INSERT INTO messages ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} FROM messages "
                    "WHERE session_id = ? AND compacted_at IS NULL AND id BETWEEN ? AND ? ORDER BY id",
                    (session_id, lo, hi),
                )
                conn.execute(
                    "DELETE FROM messages WHERE session_id = ? AND compacted_at IS NULL "
                    "AND id BETWEEN ? AND ?",
                    (session_id, lo, hi),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return archived

    def compacted_stats(self) -> CompactedStats:
        r = self._conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT session_id), "
            "COALESCE(SUM(LENGTH(CAST(COALESCE(content, '') AS BLOB)) "
            "+ LENGTH(CAST(COALESCE(tool_calls, '') AS BLOB))), 0), MIN(compacted_at) "
            "FROM messages WHERE compacted_at IS NOT NULL"
        ).fetchone()
        return CompactedStats(r[0], r[1], r[2], r[3])

    def purge_compacted(self, min_age_days: int) -> int:
        if min_age_days < 0:
            raise ValueError(f"min_age_days must be >= 0, not {min_age_days}")
        conn = self._conn
        if min_age_days == 0:
            cur = conn.execute("DELETE FROM messages WHERE compacted_at IS NOT NULL")
        else:
            cutoff = (datetime.now(timezone.utc) - timedelta(days=min_age_days)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            cur = conn.execute(
                "DELETE FROM messages WHERE compacted_at IS NOT NULL AND compacted_at < ?", (cutoff,)
            )
        deleted = cur.rowcount
        conn.execute("PRAGMA incremental_vacuum")
        return deleted

    # ── metadata and todo ───────────────────────────────────────────────────

    def get_metadata(self, session_id: str, key: str) -> str | None:
        _check_id(session_id)
        row = self._conn.execute(
            "SELECT value FROM session_metadata WHERE session_id = ? AND key = ?", (session_id, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_metadata(self, session_id: str, key: str, value: str) -> None:
        _check_id(session_id)
        _check_text("key", key)
        _check_text("value", value)
        try:
            self._conn.execute(
                "INSERT INTO session_metadata (session_id, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(session_id, key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (session_id, key, value, _now()),
            )
        except sqlite3.IntegrityError as e:
            raise SessionNotFoundError(session_id, str(e)) from None

    def get_todo(self, session_id: str) -> str | None:
        return self.get_metadata(session_id, "todo")

    def set_todo(self, session_id: str, content: str) -> None:
        self.set_metadata(session_id, "todo", content)

    # ── resume state (koda's newer contract) ───────────────────────

    def _set_session_column(self, session_id: str, column: str, value: str) -> None:
        _check_id(session_id)
        _check_text(column, value)
        cur = self._conn.execute(f"UPDATE sessions SET {column} = ? WHERE id = ?", (value, session_id))
        if cur.rowcount == 0:
            raise SessionNotFoundError(session_id)

    def set_session_title(self, session_id: str, title: str) -> None:
        self._set_session_column(session_id, "title", title)

    def set_session_mode(self, session_id: str, mode: str) -> None:
        self._set_session_column(session_id, "mode", mode)

    def get_session_mode(self, session_id: str) -> str | None:
        _check_id(session_id)
        row = self._conn.execute("SELECT mode FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def get_session_idle_secs(self, session_id: str) -> int | None:
        _check_id(session_id)
        row = self._conn.execute(
            "SELECT s.last_accessed_at, (SELECT created_at FROM messages WHERE session_id = s.id "
            "ORDER BY id DESC LIMIT 1) FROM sessions s WHERE s.id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        times = [t for t in (_parse_time(v) for v in row if isinstance(v, str)) if t is not None]
        if not times:
            return None
        return max(0, int(datetime.now(timezone.utc).timestamp() - max(times)))

    def mark_message_complete(self, message_id: int) -> None:
        if type(message_id) is not int:
            raise TypeError(f"message_id must be an int, not {type(message_id).__name__}")
        conn = self._conn
        cur = conn.execute(
            "UPDATE messages SET completed_at = ? WHERE id = ? AND completed_at IS NULL", (_now(), message_id)
        )
        if cur.rowcount == 0 and conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is None:
            raise KodaFilesError(f"message {message_id}: no such message in {self.path}")

    def detect_interruption(self, session_id: str) -> Interruption | None:
        _check_id(session_id)
        row = self._conn.execute(
            "SELECT role, content FROM messages WHERE session_id = ? AND compacted_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        if row[0] == "user":
            return Interruption("prompt", (row[1] or "")[:80])
        if row[0] == "tool":
            return Interruption("tool")
        return None


def _call_shape(session_id: str, row: tuple[Any, ...]) -> Message:
    """A message with only what call ownership reads, from (id, role, tool_calls, tool_call_id)."""
    return Message(row[0], session_id, Role(row[1]), None, row[2], row[3], None, None, None, None, None)
