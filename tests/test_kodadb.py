"""Import from and export to koda's SQLite database (`koda_files.kodadb`)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _helpers import messages_path, metadata_path, sessions_dir, snapshot, tool_calls_json

import koda_files
from koda_files import FileStore, Message, Role, TokenUsage, export_sqlite, import_sqlite

NEW_SCHEMA = {
    "sessions": ["id", "created_at", "agent_name", "project_root", "last_accessed_at", "title", "mode"],
    "messages": [
        "id", "session_id", "role", "content", "tool_calls", "tool_call_id", "prompt_tokens",
        "completion_tokens", "created_at", "cache_read_tokens", "cache_creation_tokens",
        "thinking_tokens", "agent_name", "compacted_at", "completed_at", "full_content", "thinking_content",
    ],
    "session_metadata": ["session_id", "key", "value", "updated_at"],
}

# koda's schema before `title`, `mode` (sessions) and `completed_at` (messages) were added.
OLDER_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    agent_name TEXT NOT NULL, project_root TEXT, last_accessed_at TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id), role TEXT NOT NULL, content TEXT, tool_calls TEXT,
    tool_call_id TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP, cache_read_tokens INTEGER,
    cache_creation_tokens INTEGER, thinking_tokens INTEGER, agent_name TEXT, compacted_at TEXT);
CREATE TABLE session_metadata (session_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY(session_id, key));
CREATE INDEX idx_messages_session_id ON messages(session_id);
CREATE INDEX idx_messages_role_id ON messages(role, id DESC);
"""


def test_public_names_are_exported() -> None:
    for name in ("import_sqlite", "export_sqlite", "ImportReport", "ExportReport"):
        assert name in koda_files.__all__
        assert getattr(koda_files, name) is not None


def populate(store: FileStore, project: Path) -> tuple[str, str, str]:
    """Three sessions: a compacted one with sub-agent usage, a plain one, an empty one."""
    a = store.create_session("main", project)
    store.insert_message(a, Role.SYSTEM, "You are koda.")
    first_user = store.insert_message(a, Role.USER, "line one\nline \"two\" \\ with NUL \x00 and emoji 🐍")
    store.mark_message_complete(first_user)  # archived by the compaction below, completion kept
    store.insert_message(a, Role.ASSISTANT, "Looking.", tool_calls_json("c1"), usage=TokenUsage(100, 20, 5, 3, 7))
    store.insert_message(a, Role.TOOL, "a.py\nb.py", tool_call_id="c1")
    store.insert_message_with_agent(a, Role.ASSISTANT, "sub-agent view", None, None, TokenUsage(50, 5), "reviewer")
    store.insert_message(a, Role.ASSISTANT, "Two files.", usage=TokenUsage(120, 9))
    store.insert_message(a, Role.USER, "thanks")
    assert store.compact_session(a, "The user listed files.", 2) == 5
    store.mark_message_complete(store.insert_message(a, Role.ASSISTANT, "after compaction", usage=TokenUsage(30, 4)))
    store.set_session_title(a, "List the files")
    store.set_session_mode(a, "auto-edit")
    store.set_metadata(a, "model", "claude-sonnet")
    store.set_metadata(a, "branch", "main")
    store.set_todo(a, "- [ ] one\n- [x] two\n")
    b = store.create_session("helper", project / "other")
    store.insert_message(b, Role.USER, "hello")
    store.insert_message(b, Role.ASSISTANT, "", usage=TokenUsage(1, 0))  # empty content kept as ""
    store.set_session_mode(b, "plan")
    # b was written in June 2025 (a hand edit of its times) and last used at noon that day
    log = messages_path(store.root, b)
    log.write_text(re.sub(r'"created_at":"[^"]*"', '"created_at":"2025-06-01T10:00:00.000000Z"', log.read_text()))
    store.set_session_last_accessed(b, OLD_ACCESS)
    c = store.create_session("main", project)
    store.set_session_title(c, "never used")
    store.set_session_last_accessed(c, iso_ago(3_600.5))  # empty, but loaded an hour ago
    return a, b, c


OLD_ACCESS = "2025-06-01T12:00:00.250000Z"


def iso_ago(seconds: float) -> str:
    """The store's ISO 8601 form of the time `seconds` ago."""
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(m: Message) -> Message:
    """koda keeps times to the second: compare timestamps at that precision."""
    return dataclasses.replace(
        m,
        created_at=m.created_at[:19] if m.created_at else None,
        compacted_at=m.compacted_at[:19] if m.compacted_at else None,
        completed_at=m.completed_at[:19] if m.completed_at else None,
    )


def header(store: FileStore, sid: str) -> dict[str, Any]:
    data = json.loads(metadata_path(store.root, sid).read_text())
    assert isinstance(data, dict)
    return data


def test_round_trip_files_to_koda_db_to_files(tmp_path: Path) -> None:
    src = FileStore(tmp_path / "src")
    sids = populate(src, tmp_path / "proj")
    db = tmp_path / "koda.db"
    exported = export_sqlite(src, db)
    assert (exported.sessions, exported.messages, exported.todos) == (3, 12, 1)
    assert exported.metadata == 2 and exported.todos == 1  # model and branch; the todo counts as a todo

    dst = FileStore(tmp_path / "dst")
    report = import_sqlite(db, dst)
    assert sorted(report.imported) == sorted(sids)
    assert report.renumbered == () and report.skipped == () and report.failed == ()
    assert (report.messages, report.todos, report.metadata) == (12, 1, 2)
    a, b, c = sids
    assert (dst.get_session_idle_secs(a) or 0) <= 5  # just written
    assert dst.session_last_accessed(b) == "2025-06-01T12:00:00.000000Z"  # koda's time, to the second
    assert 3_599 <= (dst.get_session_idle_secs(c) or 0) <= 3_602  # not the time of the import

    for sid in sids:
        before, after = src.load_all_messages(sid), dst.load_all_messages(sid)
        assert [seconds(m) for m in after] == [seconds(m) for m in before]  # ids, order, archived state
        # koda's newer columns: title and approval mode, completion marks, and the idle time to the second
        # (checked before the load_context below, which is an access)
        assert (dst.get_session_title(sid), dst.get_session_mode(sid)) == (
            src.get_session_title(sid), src.get_session_mode(sid)
        )
        assert [m.completed_at is None for m in after] == [m.completed_at is None for m in before]
        last_src, last_dst = src.session_last_accessed(sid), dst.session_last_accessed(sid)
        assert (last_dst or "")[:19] == (last_src or "")[:19]
        idle_src, idle_dst = src.get_session_idle_secs(sid), dst.get_session_idle_secs(sid)
        if idle_src is None:
            assert idle_dst is None
        else:
            assert idle_dst is not None and 0 <= idle_dst - idle_src <= 1  # koda keeps whole seconds
        assert [m.id for m in dst.load_context(sid)] == [m.id for m in src.load_context(sid)]
        assert dst.session_token_usage(sid) == src.session_token_usage(sid)
        assert dst.session_usage_by_agent(sid) == src.session_usage_by_agent(sid)
        assert dst.get_todo(sid) == src.get_todo(sid)
        h_src, h_dst = header(src, sid), header(dst, sid)
        assert h_dst["metadata"] == h_src["metadata"]
        assert (h_dst["agent_name"], h_dst["project_root"]) == (h_src["agent_name"], h_src["project_root"])
        assert h_dst["created_at"][:19] == h_src["created_at"][:19]
        assert "last_accessed_at" not in h_dst  # kept where the idle time is read, not in the header
    assert (dst.get_session_title(a), dst.get_session_mode(a)) == ("List the files", "auto-edit")
    assert (dst.get_session_title(b), dst.get_session_mode(b)) == (None, "plan")
    assert (dst.get_session_title(c), dst.get_session_mode(c)) == ("never used", None)
    assert sum(m.completed_at is not None for m in dst.load_all_messages(a)) == 3  # two marks and the hint
    assert dst.get_metadata(a, "model") == "claude-sonnet"
    assert dst.compacted_stats() == dataclasses.replace(
        src.compacted_stats(), oldest=(src.compacted_stats().oldest or "")[:19] + ".000000Z"
    )
    listed = dst.list_sessions(10, tmp_path / "proj")
    assert {(i.id, i.title, i.mode) for i in listed} == {(a, "List the files", "auto-edit"), (c, "never used", None)}
    # The store's id rule holds after the import: a new message gets an id never used before.
    largest = max(m.id for sid in sids for m in dst.load_all_messages(sid))
    assert dst.insert_message(sids[1], Role.USER, "new") > largest


def test_export_writes_kodas_schema_exactly(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    a, b_sid, _ = populate(store, tmp_path)
    d = store.create_session("main", tmp_path)
    db = tmp_path / "out.db"
    export_sqlite(store, db)
    dst = FileStore(tmp_path / "dst")
    import_sqlite(db, dst)
    assert dst.get_session_idle_secs(d) is None and dst.session_last_accessed(d) is None  # still never
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    conn = sqlite3.connect(db)
    try:
        for table, columns in NEW_SCHEMA.items():
            assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == columns
        indexes = {r[0]: r[1] for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index'")}
        assert "ON messages(session_id)" in indexes["idx_messages_session_id"]
        assert "ON messages(role, id DESC)" in indexes["idx_messages_role_id"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute(
            "SELECT id, role, created_at, compacted_at FROM messages WHERE session_id = ? ORDER BY id", (a,)
        ).fetchall()
        assert [r[0] for r in rows] == sorted(m.id for m in store.load_all_messages(a))
        for _, _, created, compacted in rows:
            assert len(created) == 19 and created[10] == " "  # koda's CURRENT_TIMESTAMP format
            assert compacted is None or (len(compacted) == 19 and compacted[10] == " ")
        # koda's own compaction query finds the archived rows with a text comparison of times.
        old = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE compacted_at IS NOT NULL AND compacted_at < datetime('now', '+1 day')"
        ).fetchone()[0]
        assert old == 5
        todo = conn.execute("SELECT value FROM session_metadata WHERE session_id = ? AND key = 'todo'", (a,))
        assert todo.fetchone()[0] == "- [ ] one\n- [x] two\n"
        # the newer contract's columns (title, mode, last access), in koda's format
        title, mode, accessed = conn.execute(
            "SELECT title, mode, last_accessed_at FROM sessions WHERE id = ?", (a,)
        ).fetchone()
        assert (title, mode) == ("List the files", "auto-edit")
        assert accessed == (store.session_last_accessed(a) or "")[:19].replace("T", " ")
        old = conn.execute("SELECT last_accessed_at FROM sessions WHERE id = ?", (b_sid,)).fetchone()[0]
        assert old == "2025-06-01 12:00:00"
        completed = [r[0] for r in conn.execute("SELECT completed_at FROM messages WHERE session_id = ?", (a,))]
        assert sum(c is not None for c in completed) == 3  # two marks and the compaction hint
        assert all(len(c) == 19 and c[10] == " " for c in completed if c is not None)
        never = conn.execute("SELECT title, mode, last_accessed_at FROM sessions WHERE id = ?", (d,)).fetchone()
        assert never == (None, None, None)  # an empty session never accessed
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()[0]
        assert seq == max(r[0] for r in conn.execute("SELECT id FROM messages"))
    finally:
        conn.close()


def test_export_refuses_to_overwrite(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    populate(store, tmp_path)
    db = tmp_path / "koda.db"
    db.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        export_sqlite(store, db)
    assert db.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["koda.db", "s"]


def build_older_db(path: Path) -> None:
    """A koda database with the older column set, written the way koda writes it."""
    conn = sqlite3.connect(path)
    conn.executescript(OLDER_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executemany(
        "INSERT INTO sessions (id, created_at, agent_name, project_root, last_accessed_at) VALUES (?, ?, ?, ?, ?)",
        [
            ("s-one", "2025-01-02 03:04:05", "main", "/home/me/app", "2025-01-03 00:00:00"),
            ("s-two", "2025-01-02 03:05:00", "main", None, None),
        ],
    )
    rows = [
        # ids interleave between the sessions, as koda's one AUTOINCREMENT hands them out
        (1, "s-one", "system", "You are koda.", None, None, None, None, "2025-01-02 03:04:05", None, None, None,
         None, "2025-01-05 10:00:00"),
        (2, "s-one", "user", "fix it", None, None, None, None, "2025-01-02 03:04:06", None, None, None, None,
         "2025-01-05 10:00:00"),
        (3, "s-two", "user", "hi", None, None, None, None, "2025-01-02 03:05:01", None, None, None, None, None),
        (4, "s-one", "assistant", "ok", '[{"id":"c9","type":"function","function":{"name":"x","arguments":"{}"}}]',
         None, 10, 2, "2025-01-02 03:04:07", 1, 0, 0, "reviewer", None),
        (6, "s-one", "tool", "done", None, "c9", None, None, "2025-01-02 03:04:08", None, None, None, None, None),
        # koda's SQL appends the summary and the hint after the preserved tail (ids 4 and 6)
        (7, "s-one", "system", "Summary: fixing.", None, None, None, None, "2025-01-05 10:00:00", None, None,
         None, None, None),
        (8, "s-one", "assistant", "Context was compacted; continue.", None, None, None, None,
         "2025-01-05 10:00:00", None, None, None, None, None),
        (5, "s-two", "assistant", "hello", None, None, 3, 1, "2025-01-02 03:05:02", None, None, None, None, None),
    ]
    conn.executemany(
        "INSERT INTO messages (id, session_id, role, content, tool_calls, tool_call_id, prompt_tokens,"
        " completion_tokens, created_at, cache_read_tokens, cache_creation_tokens, thinking_tokens,"
        " agent_name, compacted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)",
        [("s-one", "todo", "- [ ] ship\n"), ("s-one", "model", "m1")],
    )
    conn.commit()
    conn.close()


def test_import_older_database(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    build_older_db(db)
    store = FileStore(tmp_path / "store")
    report = import_sqlite(db, store)
    assert sorted(report.imported) == ["s-one", "s-two"]
    assert report.renumbered == () and report.failed == ()
    # koda's last_accessed_at, or where an older koda recorded none, the newest message's time:
    # the import itself is not an access
    assert store.session_last_accessed("s-one") == "2025-01-03T00:00:00.000000Z"
    assert store.session_last_accessed("s-two") == "2025-01-02T03:05:02.000000Z"
    assert (store.get_session_idle_secs("s-two") or 0) > 365 * 86_400
    one = store.load_all_messages("s-one")
    # by id, except that the summary and hint go before the tail compaction kept (this store's rule)
    assert [m.id for m in one] == [1, 2, 7, 8, 4, 6]
    assert [m.id for m in store.load_context("s-one")] == [7, 8, 4, 6]
    assert one[0].created_at == "2025-01-02T03:04:05.000000Z"
    assert one[0].compacted_at == "2025-01-05T10:00:00.000000Z" and one[1].compacted_at is not None
    assert all(m.compacted_at is None for m in one[2:])
    assert one[4].tool_calls == '[{"id":"c9","type":"function","function":{"name":"x","arguments":"{}"}}]'
    assert (one[4].prompt_tokens, one[4].completion_tokens, one[4].agent_name) == (10, 2, "reviewer")
    assert one[5].tool_call_id == "c9" and one[5].prompt_tokens is None
    assert [m.id for m in store.load_all_messages("s-two")] == [3, 5]
    assert store.get_todo("s-one") == "- [ ] ship\n"
    assert store.get_metadata("s-one", "model") == "m1"
    assert store.get_todo("s-two") is None
    h = header(store, "s-one")
    assert h["created_at"] == "2025-01-02T03:04:05.000000Z"
    assert (h["project_root"], h["agent_name"]) == ("/home/me/app", "main")
    assert header(store, "s-two")["project_root"] is None  # listed with every project
    assert {i.id for i in store.list_sessions(10, "/elsewhere")} == {"s-two"}
    usage = store.session_token_usage("s-one")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.api_calls) == (10, 2, 1)
    # the newer columns are absent: no title, mode or completion marks
    assert [(i.id, i.title, i.mode) for i in store.list_sessions(10, "/home/me/app")] == [
        ("s-two", None, None), ("s-one", None, None)
    ]
    assert all(m.completed_at is None for m in one)
    assert "last_accessed_at" not in h
    assert store.purge_compacted(1) == 2  # the archive times were read as the times they are
    assert store.insert_message("s-two", Role.USER, "next") > 8


def test_import_database_without_later_columns_or_metadata(tmp_path: Path) -> None:
    db = tmp_path / "ancient.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at DATETIME DEFAULT CURRENT_TIMESTAMP,"
        " agent_name TEXT NOT NULL, project_root TEXT);"
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, role TEXT NOT NULL,"
        " content TEXT, tool_calls TEXT, tool_call_id TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,"
        " created_at DATETIME DEFAULT CURRENT_TIMESTAMP);"
        "INSERT INTO sessions (id, agent_name, project_root) VALUES ('old', 'main', '/p');"
        "INSERT INTO messages (session_id, role, content, prompt_tokens, completion_tokens)"
        " VALUES ('old', 'user', 'hi', NULL, NULL), ('old', 'assistant', 'yo', 4, 2);"
    )
    conn.commit()
    conn.close()
    store = FileStore(tmp_path / "store")
    report = import_sqlite(db, store)
    assert report.imported == ("old",)
    msgs = store.load_all_messages("old")
    assert [(m.id, m.role, m.content) for m in msgs] == [(1, Role.USER, "hi"), (2, Role.ASSISTANT, "yo")]
    assert msgs[1].cache_read_tokens is None and msgs[1].compacted_at is None
    assert msgs[0].created_at is not None and msgs[0].created_at.endswith(".000000Z")


def test_import_opens_read_only_and_works_while_koda_writes(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    build_older_db(db)
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    os.chmod(db, 0o400)  # a write attempt would fail loudly
    writer = sqlite3.connect(db, isolation_level=None)
    os.chmod(db, 0o600)
    try:
        # koda is in the middle of a write: the import reads the last committed state.
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO sessions (id, agent_name) VALUES ('uncommitted', 'main')")
        report = import_sqlite(db, FileStore(tmp_path / "store"))
        assert sorted(report.imported) == ["s-one", "s-two"]
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before


def test_import_is_idempotent_and_replace_overwrites(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    build_older_db(db)
    store = FileStore(tmp_path / "store")
    import_sqlite(db, store)
    first = snapshot(store.root, include_dot_files=False)
    again = import_sqlite(db, store)
    assert again.imported == () and sorted(again.skipped) == ["s-one", "s-two"] and again.messages == 0
    assert snapshot(store.root, include_dot_files=False) == first

    store.insert_message("s-one", Role.USER, "added later")
    store.set_todo("s-one", "changed")
    replaced = import_sqlite(db, store, replace=True)
    assert sorted(replaced.replaced) == ["s-one", "s-two"] and replaced.renumbered == ()
    assert [m.id for m in store.load_all_messages("s-one")] == [1, 2, 7, 8, 4, 6]  # own ids kept
    assert store.get_todo("s-one") == "- [ ] ship\n"
    assert snapshot(store.root, include_dot_files=False) == first
    assert store.insert_message("s-one", Role.USER, "more") > 9  # id 9 was handed out above


def test_import_renumbers_ids_already_used_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    build_older_db(db)
    store = FileStore(tmp_path / "store")
    mine = store.create_session("main", tmp_path)
    used = [store.insert_message(mine, Role.USER, f"m{i}") for i in range(4)]
    report = import_sqlite(db, store)
    assert sorted(report.renumbered) == ["s-one", "s-two"]
    one = store.load_all_messages("s-one")
    assert [m.content for m in one] == [
        "You are koda.", "fix it", "Summary: fixing.", "Context was compacted; continue.", "ok", "done"
    ]
    ids = [m.id for sid in (mine, "s-one", "s-two") for m in store.load_all_messages(sid)]
    assert len(ids) == len(set(ids))  # unique across the store
    assert min(m.id for m in one) > max(used)
    assert [m.id for m in one] == sorted(m.id for m in one)  # increasing in conversation order
    assert store.insert_message(mine, Role.USER, "next") > max(ids)


def test_import_reports_bad_sessions_and_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    build_older_db(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO sessions (id, agent_name) VALUES ('../escape', 'main')")
    conn.execute("INSERT INTO sessions (id, agent_name) VALUES ('bad-role', 'main')")
    conn.execute("INSERT INTO messages (session_id, role, content) VALUES ('bad-role', 'wizard', 'x')")
    conn.commit()
    conn.close()
    store = FileStore(tmp_path / "store")
    report = import_sqlite(db, store)
    assert sorted(report.imported) == ["s-one", "s-two"]
    assert sorted(sid for sid, _ in report.failed) == ["../escape", "bad-role"]
    assert not report.ok
    assert sorted(os.listdir(sessions_dir(store.root))) == ["s-one", "s-two"]
    assert not (tmp_path / "escape").exists()


def test_import_of_a_file_that_is_not_a_koda_database(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError):
        import_sqlite(missing, FileStore(tmp_path / "store"))
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(koda_files.KodaFilesError, match="not a koda database"):
        import_sqlite(other, FileStore(tmp_path / "store"))
