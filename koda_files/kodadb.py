"""Moving history between a koda-files store and koda's own SQLite database (`koda.db`).

`import_sqlite(db_path, store)` copies every session of a koda database into the store: message
ids, order (by id, as koda orders them), timestamps, compaction marks, metadata and the todo. It
opens the database read-only (it works while koda has it open) and never changes it. Each
session is built in a dot-directory and renamed into place, so it appears whole or not at all.

`export_sqlite(store, db_path)` writes a new database in koda's schema (the newest column set,
both indexes, WAL mode), built under a temporary name and moved into place at the end; it never
overwrites an existing file.

koda's timestamps are SQLite's `CURRENT_TIMESTAMP` text, `YYYY-MM-DD HH:MM:SS` UTC; this store's
are `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Import converts koda's to ours; export converts ours to koda's
(to the second, so koda's text comparisons of times keep working).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import KodaFilesError
from .fileops import atomic_write, fsync_dir, make_dir, remove_tree, rename
from .layout import LOCK_NAME, MESSAGES, METADATA, SESSIONS, TODO, parse_time, validate_session_id
from .locking import FileMutex
from .session import encode_header, read_header
from .store import FileStore
from .types import Message

if TYPE_CHECKING:  # sqlite3 is imported when used: `import koda_files` stays fast
    import sqlite3

__all__ = ["ExportReport", "ImportReport", "default_koda_db", "export_sqlite", "import_sqlite"]

Progress = Callable[[int, int], None]
"""`progress(done, total)`, called after each session."""

_TODO_KEY = "todo"
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
)
# koda columns kept in the session header (when not null) so that export can write them back.
_HEADER_EXTRAS = ("title", "mode", "last_accessed_at")

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
    "completed_at TEXT)",
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


# ── time formats ──


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


# ── import ──


def _open_read_only(db_path: Path) -> sqlite3.Connection:
    import sqlite3
    from urllib.parse import quote

    if not db_path.is_file():
        raise FileNotFoundError(2, "no such database", str(db_path))
    uri = "file:" + quote(str(db_path.resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
    # Text koda wrote is UTF-8; a damaged value must not stop the import of everything else.
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def _select(wanted: Iterable[str], present: set[str]) -> str:
    """A column list naming missing columns as NULL, so older databases read like new ones."""
    return ", ".join(c if c in present else f"NULL AS {c}" for c in wanted)


def _int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else str(value)
    # A lone surrogate cannot be written as UTF-8; replace it rather than fail the session.
    return text.encode("utf-8", "replace").decode("utf-8")


_MESSAGE_COLUMNS = (
    "id",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    *_TOKENS,
    "agent_name",
    "created_at",
    "compacted_at",
    "completed_at",
)


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    """One `messages.jsonl` object from a koda row; null fields left out, field order as the store's."""
    values = dict(zip(_MESSAGE_COLUMNS, row, strict=True))
    role = values["role"]
    if role not in _ROLES:
        raise ValueError(f"message {values['id']}: unknown role {role!r}")
    record: dict[str, Any] = {"id": values["id"], "role": role}
    for key in ("content", "tool_calls", "tool_call_id"):
        text = _text(values[key])
        if text is not None:
            record[key] = text
    for key in _TOKENS:
        number = _int(values[key])
        if number is not None:
            record[key] = number
    agent = _text(values["agent_name"])
    if agent is not None:
        record["agent_name"] = agent
    for key in ("created_at", "compacted_at", "completed_at"):
        when = from_koda_time(_text(values[key]))
        if when is not None:
            record[key] = when
    return record


def _summary_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put the active compaction summary and its hint before the tail that compaction preserved.

    koda's SQL appends the summary (a system message) and the continuation hint (an assistant
    message saying the context was compacted) after the preserved messages, so by id they come
    last; this store keeps them before the preserved tail, as koda's docstring says. Every active
    message with a smaller id than the summary was kept by that compaction, so the pair moves to
    just before the first of them. A session that was never compacted is left in id order.
    """
    if not any("compacted_at" in r for r in records):
        return records
    pair = -1
    for i in range(len(records) - 1):
        s, h = records[i], records[i + 1]
        if (
            s["role"] == "system"
            and h["role"] == "assistant"
            and "compacted_at" not in s
            and "compacted_at" not in h
            and "tool_calls" not in h
            and "compacted" in (h.get("content") or "").lower()
        ):
            pair = i
    if pair < 0:
        return records
    first_active = next(i for i, r in enumerate(records) if "compacted_at" not in r)
    if first_active >= pair:
        return records
    head, tail, summary = records[:first_active], records[first_active:pair], records[pair : pair + 2]
    return head + summary + tail + records[pair + 2 :]


@dataclass
class _Plan:
    session_id: str
    row: dict[str, Any]
    replace: bool
    lo: int = 0
    hi: int = 0
    count: int = 0


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
    import sqlite3

    path = Path(os.fspath(db_path))
    conn = _open_read_only(path)
    try:
        conn.execute("BEGIN")  # one snapshot, even while koda writes
        try:
            return _import(conn, str(path), store, replace, progress)
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise KodaFilesError(f"{path}: cannot read koda database: {exc}") from exc
    finally:
        conn.close()


def _import(
    conn: sqlite3.Connection, db_name: str, store: FileStore, replace: bool, progress: Progress | None
) -> ImportReport:
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "sessions" not in tables or "messages" not in tables:
        raise KodaFilesError(f"{db_name}: not a koda database (no sessions or messages table)")
    s_cols = _columns(conn, "sessions")
    m_cols = _columns(conn, "messages")
    has_meta = "session_metadata" in tables
    wanted = ("id", "created_at", "agent_name", "project_root", *_HEADER_EXTRAS)
    rows = conn.execute(
        f"SELECT {_select(wanted, s_cols)} FROM sessions ORDER BY created_at, id"
    ).fetchall()

    sessions_dir = store.root / SESSIONS
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    plans: list[_Plan] = []
    for row in rows:
        values = dict(zip(wanted, row, strict=True))
        sid = _text(values["id"]) or ""
        try:
            validate_session_id(sid)
        except KodaFilesError as exc:
            failed.append((sid, str(exc)))
            continue
        present = _is_dir(sessions_dir / sid)
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
    with_messages = [p for p in plans if p.count]
    reserved_from = 0
    if with_messages:
        store._ensure_root()
        lo = min(p.lo for p in with_messages)
        hi = max(p.hi for p in with_messages)
        reserved_from = store._ids.take(max(lo, 1), hi - max(lo, 1) + 1)

    imported: list[str] = []
    replaced: list[str] = []
    renumbered: list[str] = []
    n_messages = n_meta = n_todos = 0
    select_messages = (
        f"SELECT {_select(_MESSAGE_COLUMNS, m_cols)} FROM messages WHERE session_id = ? ORDER BY id"
    )
    for done, plan in enumerate(plans, 1):
        sid = plan.session_id
        try:
            message_rows = conn.execute(select_messages, (sid,)).fetchall()
            meta: dict[str, str] = {}
            if has_meta:
                for key, value in conn.execute(
                    "SELECT key, value FROM session_metadata WHERE session_id = ? ORDER BY key", (sid,)
                ):
                    k, v = _text(key), _text(value)
                    if k is not None and v is not None:
                        meta[k] = v
            records = _summary_first([_record(row) for row in message_rows])
            keep_ids = plan.lo >= reserved_from or _reusable(store, plan, message_rows, reserved_from)
            if not keep_ids and records:
                first = store._ids.take(1, len(records))
                for i, record in enumerate(records):
                    record["id"] = first + i
        except ValueError as exc:
            failed.append((sid, str(exc)))
            continue
        todo = meta.pop(_TODO_KEY, None)
        header = _header(plan.row, sid, meta, records)
        store._ensure_root()
        _write_session(store, sid, header, records, todo, plan.replace)
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


def _reusable(store: FileStore, plan: _Plan, rows: list[tuple[Any, ...]], reserved_from: int) -> bool:
    """When replacing a session, its own ids (already in it) may be kept for the same messages."""
    if not plan.replace:
        return False
    own = {m.id for m in store.load_all_messages(plan.session_id)}
    return all(row[0] >= reserved_from or row[0] in own for row in rows)


def _header(
    row: dict[str, Any], sid: str, meta: dict[str, str], records: list[dict[str, Any]]
) -> dict[str, Any]:
    created = from_koda_time(_text(row["created_at"]))
    if created is None:
        created = next((r["created_at"] for r in records if "created_at" in r), None)
    header: dict[str, Any] = {
        "agent_name": _text(row["agent_name"]) or "",
        "created_at": created,
        "id": sid,
        "metadata": meta,
        "project_root": _text(row["project_root"]),
    }
    for key in _HEADER_EXTRAS:
        value = _text(row[key])
        if value is not None:
            header[key] = from_koda_time(value) if key == "last_accessed_at" else value
    return header


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _write_session(
    store: FileStore,
    sid: str,
    header: dict[str, Any],
    records: list[dict[str, Any]],
    todo: str | None,
    replace: bool,
) -> None:
    """Build the session in a dot-directory, then rename it into place (replacing under its lock)."""
    sessions_dir = store.root / SESSIONS
    final = sessions_dir / sid
    staging = sessions_dir / f".new-{sid}.{secrets.token_hex(4)}"
    make_dir(staging)
    try:
        # The lock file comes with the directory: a store holding the old session's lock then
        # sees a new lock file (not a missing one) and takes that instead.
        os.close(os.open(staging / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        atomic_write(staging / METADATA, [encode_header(header)])
        atomic_write(staging / MESSAGES, _lines(records))
        if todo is not None:
            atomic_write(staging / TODO, [todo.encode("utf-8")])
        if replace and _is_dir(final):
            mutex = FileMutex(final / LOCK_NAME)
            graveyard = sessions_dir / f".deleted-{sid}-{secrets.token_hex(4)}"
            with mutex.held():
                rename(final, graveyard)
                rename(staging, final)
            mutex.close()
            fsync_dir(sessions_dir)
            remove_tree(graveyard)
        else:
            if _is_dir(final) or final.is_symlink():
                raise FileExistsError(17, "session appeared during the import", str(final))
            rename(staging, final)
            fsync_dir(sessions_dir)
    except BaseException:
        if _is_dir(staging):
            remove_tree(staging)
        raise


def _lines(records: list[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


# ── export ──


def _store_session_ids(store: FileStore) -> list[str]:
    try:
        entries = list(os.scandir(store.root / SESSIONS))
    except FileNotFoundError:
        return []
    return sorted(
        e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    )


def export_sqlite(
    store: FileStore, db_path: str | os.PathLike[str], *, progress: Progress | None = None
) -> ExportReport:
    """Write every session of `store` into a new koda database at `db_path` (never overwritten)."""
    target = Path(os.path.abspath(os.fspath(db_path)))
    if os.path.lexists(target):
        raise FileExistsError(17, "refusing to overwrite an existing file", str(target))
    if not target.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(target.parent))
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        report = _export(store, tmp, str(target), progress)
        # link() refuses to replace a file that appeared meanwhile: never overwrite.
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(17, "refusing to overwrite an existing file", str(target)) from None
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                raise FileExistsError(17, "refusing to overwrite an existing file", str(target)) from None
            os.rename(tmp, target)
        fsync_dir(target.parent)
        return report
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _export(store: FileStore, tmp: Path, name: str, progress: Progress | None) -> ExportReport:
    import sqlite3

    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private, like the store
    os.close(fd)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        for statement in SCHEMA:
            conn.execute(statement)
        ids = _store_session_ids(store)
        n_sessions = n_messages = n_meta = n_todos = 0
        failed: list[tuple[str, str]] = []
        for done, sid in enumerate(ids, 1):
            try:
                header = read_header(store.root / SESSIONS / sid, sid)
            except KodaFilesError as exc:
                failed.append((sid, str(exc)))
                continue
            messages = store.load_all_messages(sid)
            meta = header.get("metadata") or {}
            todo = store.get_todo(sid)
            conn.execute(
                "INSERT INTO sessions (id, created_at, agent_name, project_root, last_accessed_at,"
                " title, mode) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    to_koda_time(_text(header.get("created_at"))),
                    _text(header.get("agent_name")) or "",
                    _text(header.get("project_root")),
                    to_koda_time(_text(header.get("last_accessed_at"))),
                    _text(header.get("title")),
                    _text(header.get("mode")),
                ),
            )
            try:
                conn.executemany(
                    "INSERT INTO messages (id, session_id, role, content, tool_calls, tool_call_id,"
                    " prompt_tokens, completion_tokens, created_at, cache_read_tokens,"
                    " cache_creation_tokens, thinking_tokens, agent_name, compacted_at, completed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (_message_row(m) for m in messages),
                )
            except sqlite3.IntegrityError as exc:
                raise KodaFilesError(
                    f"session {sid!r}: {exc}: a message id is used twice in the store (hand edit?)"
                ) from None
            rows = [(k, v) for k, v in sorted(meta.items()) if isinstance(v, str) and k != _TODO_KEY]
            if todo is not None:
                rows.append((_TODO_KEY, todo))
            conn.executemany(
                "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)",
                ((sid, k, v) for k, v in rows),
            )
            n_sessions += 1
            n_messages += len(messages)
            n_meta += len(rows)
            n_todos += todo is not None
            if progress is not None:
                progress(done, len(ids))
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints and removes the -wal file
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
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
        to_koda_time(getattr(m, "completed_at", None)),  # Message.completed_at, where it exists
    )
