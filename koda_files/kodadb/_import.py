"""`import_sqlite`: copy the sessions of koda's SQLite database into a koda-files store.

The database is opened read-only, in one read transaction (one consistent snapshot, even while
koda writes), and never changed. Columns an older database lacks read as null. Each session is
written to a dot-directory and renamed into place; its last access (`sessions.last_accessed_at`)
is then recorded as the store records accesses, in file mtimes, so its idle time carries over.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._format.layout import parse_time, validate_session_id
from .._session.completion import COMPACTION_HINT
from ..errors import KodaFilesError
from ..store import FileStore
from ._common import (
    HEADER_COLUMNS,
    ROLES,
    TODO_KEY,
    TOKENS,
    ImportReport,
    Progress,
    as_int,
    as_text,
    from_koda_time,
)
from ._extra import import_kv, session_extras

if TYPE_CHECKING:
    import sqlite3

__all__ = ["run_import"]

_MAX_KEPT_ID = 2**53  # far below 2**63: the store keeps handing out ids after the largest kept one
_SESSION_COLUMNS = ("id", "created_at", "agent_name", "project_root", "last_accessed_at", *HEADER_COLUMNS)
_MESSAGE_COLUMNS = (
    "id",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    *TOKENS,
    "agent_name",
    "created_at",
    "compacted_at",
    "completed_at",
    "full_content",
    "thinking_content",
)


def run_import(db_path: Path, store: FileStore, replace: bool, progress: Progress | None) -> ImportReport:
    """`kodadb.import_sqlite`: see there."""
    import sqlite3

    conn = _open_read_only(db_path)
    try:
        conn.execute("BEGIN")  # one snapshot, even while koda writes
        try:
            return _import(conn, str(db_path), store, replace, progress)
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise KodaFilesError(f"{db_path}: cannot read koda database: {exc}") from exc
    finally:
        conn.close()


def _open_read_only(db_path: Path) -> sqlite3.Connection:
    import sqlite3
    from urllib.parse import quote

    if not db_path.is_file():
        raise FileNotFoundError(2, "no such database", str(db_path))
    uri = "file:" + quote(str(db_path.resolve())) + "?mode=ro"
    if _wal_without_log(db_path):
        # A read-only connection to a WAL database creates `-wal` and `-shm` beside it and cannot
        # remove them. With no `-wal` there, no connection has the database open, and every
        # committed row is in the main file: read it as an immutable file, creating nothing.
        # (A writer that opens it meanwhile writes to a new `-wal`, not to the main file.)
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
    # Text koda wrote is UTF-8; a damaged value must not stop the import of everything else.
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    return conn


def _wal_without_log(db_path: Path) -> bool:
    """A database in WAL mode (header bytes 18-19 are 2) with no `-wal` file beside it."""
    with open(db_path, "rb") as f:
        header = f.read(20)
    wal = len(header) == 20 and header[18] == 2 and header[19] == 2
    return wal and not os.path.exists(f"{db_path}-wal")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def _select(wanted: Iterable[str], present: set[str]) -> str:
    """A column list naming missing columns as NULL, so older databases read like new ones."""
    return ", ".join(c if c in present else f"NULL AS {c}" for c in wanted)


@dataclass
class _Plan:
    session_id: str
    row: dict[str, Any]
    replace: bool
    lo: int = 0
    hi: int = 0
    count: int = 0


def _import(
    conn: sqlite3.Connection, db_name: str, store: FileStore, replace: bool, progress: Progress | None
) -> ImportReport:
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "sessions" not in tables or "messages" not in tables:
        raise KodaFilesError(f"{db_name}: not a koda database (no sessions or messages table)")
    s_cols = _columns(conn, "sessions")
    m_cols = _columns(conn, "messages")
    has_meta = "session_metadata" in tables
    # koda orders sessions created in the same second by rowid (its ids are random UUIDv4s).
    rows = conn.execute(
        f"SELECT {_select(_SESSION_COLUMNS, s_cols)} FROM sessions ORDER BY created_at, rowid"
    ).fetchall()
    same_second: dict[object, int] = {}

    existing = set(store.session_ids())
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    plans: list[_Plan] = []
    for row in rows:
        values = dict(zip(_SESSION_COLUMNS, row, strict=True))
        rank = same_second.get(values["created_at"], 0)
        same_second[values["created_at"]] = rank + 1
        values["created_at"] = _nth_in_second(as_text(values["created_at"]), rank)
        sid = as_text(values["id"]) or ""
        try:
            validate_session_id(sid)
        except KodaFilesError as exc:
            failed.append((sid, str(exc)))
            continue
        present = sid in existing
        if present and not replace:
            skipped.append(sid)
            continue
        lo, hi, count = conn.execute(
            "SELECT MIN(id), MAX(id), COUNT(*) FROM messages WHERE session_id = ?", (sid,)
        ).fetchone()
        plans.append(_Plan(sid, values, present, lo or 0, hi or 0, count))

    # Reserve koda's id range in one step: ids in it are then never handed out by this store.
    # Ids below what the reservation returns may have been handed out already: a session using
    # any of them is renumbered.
    # Ids outside 1.._MAX_KEPT_ID (negative ones, or so large that the store's next ids would
    # leave 64 bits) are not kept: those sessions are renumbered.
    keepable = {p.session_id for p in plans if p.count and p.lo >= 1 and p.hi <= _MAX_KEPT_ID}
    reserved_from = 0
    if keepable:
        lo = min(p.lo for p in plans if p.session_id in keepable)
        hi = max(p.hi for p in plans if p.session_id in keepable)
        reserved_from = store.reserve_ids(lo, hi - lo + 1)

    imported: list[str] = []
    replaced: list[str] = []
    renumbered: list[str] = []
    n_messages = n_meta = n_todos = 0
    select_messages = f"SELECT {_select(_MESSAGE_COLUMNS, m_cols)} FROM messages WHERE session_id = ? ORDER BY id"
    for done, plan in enumerate(plans, 1):
        sid = plan.session_id
        try:
            message_rows = conn.execute(select_messages, (sid,)).fetchall()
            meta: dict[str, str] = {}
            if has_meta:
                for key, value in conn.execute(
                    "SELECT key, value FROM session_metadata WHERE session_id = ? ORDER BY key", (sid,)
                ):
                    k, v = as_text(key), as_text(value)
                    if k is not None and v is not None:
                        meta[k] = v
            records = _file_order([_record(row) for row in message_rows])
            keep_ids = sid in keepable and (
                plan.lo >= reserved_from or _reusable(store, plan, message_rows, reserved_from)
            )
            if not keep_ids and records:
                first = store.reserve_ids(1, len(records))
                for i, record in enumerate(records):
                    record["id"] = first + i
        except ValueError as exc:
            failed.append((sid, str(exc)))
            continue
        todo = meta.pop(TODO_KEY, None)
        header = _header(plan.row, sid, meta, records)
        files = session_extras(conn, sid, header)
        if todo is not None:
            files["todo.md"] = todo.encode("utf-8")
        try:
            store.restore_session(header, records, files=files, replace=plan.replace)
        except (ValueError, FileExistsError) as exc:
            failed.append((sid, str(exc)))
            continue
        last_access = _last_access(plan.row, records)
        if last_access is not None:
            store.set_session_last_accessed(sid, last_access)
        imported.append(sid)
        if plan.replace:
            replaced.append(sid)
        if not keep_ids and records:
            renumbered.append(sid)
        n_messages += len(records)
        n_meta += len(meta)
        n_todos += todo is not None
        if progress is not None:
            progress(done, len(plans))
    import_kv(conn, store, replace)
    return ImportReport(
        db_name,
        tuple(imported),
        tuple(replaced),
        tuple(skipped),
        tuple(renumbered),
        tuple(failed),
        n_messages,
        n_meta,
        n_todos,
    )


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    """One `messages.jsonl` object from a koda row; null fields left out, field order as the store's."""
    values = dict(zip(_MESSAGE_COLUMNS, row, strict=True))
    role = values["role"]
    if role not in ROLES:
        raise ValueError(f"message {values['id']}: unknown role {role!r}")
    record: dict[str, Any] = {"id": values["id"], "role": role}
    for key in ("content", "full_content", "tool_calls", "tool_call_id"):
        text = as_text(values[key])
        if text is not None:
            record[key] = text
    for key in TOKENS:
        number = as_int(values[key])
        if number is not None:
            record[key] = number
    agent = as_text(values["agent_name"])
    if agent is not None:
        record["agent_name"] = agent
    for key in ("created_at", "compacted_at", "completed_at"):
        when = from_koda_time(as_text(values[key]))
        if when is not None:
            record[key] = when
    thinking = as_text(values["thinking_content"])
    if thinking is not None:
        record["thinking_content"] = thinking
    return record


def _nth_in_second(created: str | None, rank: int) -> str | None:
    """koda's creation time in this store's form; the `rank`-th session of its second gets `rank` µs.

    Sessions list by creation time: ties within koda's whole second keep koda's (rowid) order.
    """
    when = from_koda_time(created)
    if when is None or rank == 0 or not when.endswith(".000000Z"):
        return when
    return f"{when[:-8]}.{rank:06d}Z"


def _compaction_span(records: list[dict[str, Any]], i: int, archived: bool) -> int:
    """2 if records `i`, `i + 1` are a compaction's summary and hint (consecutive ids), 1 if record
    `i` is a hint whose summary is gone (archived by a later compaction, then purged), else 0.

    The hint is this store's or koda's current one, or (in a session that still has archived
    messages) any assistant text saying "compacted", as older koda versions wrote it.
    """

    def is_hint(h: dict[str, Any]) -> bool:
        content = h.get("content") or ""
        known = content == COMPACTION_HINT or content.startswith(_KODA_HINT)
        return (
            h["role"] == "assistant"
            and "tool_calls" not in h
            and (known or (archived and "compacted" in content.lower()))
        )

    s = records[i]
    if (
        i + 1 < len(records)
        and s["role"] == "system"
        and records[i + 1]["id"] == s["id"] + 1
        and is_hint(records[i + 1])
    ):
        return 2
    content = s.get("content") or ""
    return 1 if is_hint(s) and (content == COMPACTION_HINT or content.startswith(_KODA_HINT)) else 0


def _file_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records in id order (koda's) to this store's order: each compaction's pair before its tail.

    A compaction's summary and hint take the next ids, so by id they follow the messages it
    preserved; this store keeps them before those. Preserved are the earlier messages that were
    not archived by then: no `compacted_at`, or one later than the summary's `created_at`
    (whole seconds: two compactions within one second may be told apart wrongly). This holds
    with or without archived messages left (after a purge), and for every compaction in turn.
    """
    out: list[dict[str, Any]] = []
    archived = any("compacted_at" in r for r in records)
    i = 0
    while i < len(records):
        span = _compaction_span(records, i, archived)
        if span:
            at = str(records[i].get("created_at") or "")
            first = next(
                (k for k, r in enumerate(out) if "compacted_at" not in r or str(r["compacted_at"]) > at), len(out)
            )
            out[first:first] = records[i : i + span]
            i += span
        else:
            out.append(records[i])
            i += 1
    return out


_KODA_HINT = "Your context was compacted."  # how koda's continuation hint begins


def _reusable(store: FileStore, plan: _Plan, rows: list[tuple[Any, ...]], reserved_from: int) -> bool:
    """When replacing a session, its own ids (already in it) may be kept for the same messages."""
    if not plan.replace:
        return False
    own = {m.id for m in store.load_all_messages(plan.session_id)}
    return all(row[0] >= reserved_from or row[0] in own for row in rows)


def _header(row: dict[str, Any], sid: str, meta: dict[str, str], records: list[dict[str, Any]]) -> dict[str, Any]:
    created = from_koda_time(as_text(row["created_at"]))
    if created is None:
        created = next((r["created_at"] for r in records if "created_at" in r), None)
    header: dict[str, Any] = {
        "agent_name": as_text(row["agent_name"]) or "",
        "created_at": created,
        "id": sid,
        "metadata": meta,
        "project_root": _normal_root(as_text(row["project_root"])),
    }
    for key in HEADER_COLUMNS:
        value = as_text(row[key])
        if value is not None:
            header[key] = value
    return header


def _last_access(row: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    """The session's last access: koda's `last_accessed_at`, else (an older database, which never
    recorded one) its newest message's time, so that an import is not taken for an access."""
    when = parse_time(as_text(row["last_accessed_at"]) or "")
    if when is None:
        times = [t for t in (parse_time(r.get("created_at") or "") for r in records) if t is not None]
        when = max(times, default=None)
    if when is None:
        return None  # an empty session never accessed: it stays so
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normal_root(root: str | None) -> str | None:
    """An absolute project root as `list_sessions` compares it (`/x/app/` -> `/x/app`)."""
    return os.path.normpath(root) if root is not None and os.path.isabs(root) else root
