"""koda.db of koda's newest schema: built with koda's own CREATE TABLE statements, filled as koda
fills it, imported, exported, and read back with koda's own queries (tests/fixtures, as data)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from koda_files import FileStore, Role, TokenUsage, export_sqlite, import_sqlite

FIXTURES = Path(__file__).parent / "fixtures"
QUERIES: dict[str, dict[str, Any]] = {
    k: v for k, v in json.loads((FIXTURES / "koda_newest_queries.json").read_text()).items() if k != "_note"
}


def koda_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript((FIXTURES / "koda_newest_schema.sql").read_text())
    return conn


def fill_as_koda(conn: sqlite3.Connection) -> None:
    """What koda writes over two sessions: every table, every new column."""
    s1, s2 = "0190a1b2-0000-7000-8000-000000000001", "0190a1b2-0000-7000-8000-000000000002"
    conn.execute(
        "INSERT INTO sessions (id, created_at, agent_name, project_root, last_accessed_at, title, mode)"
        " VALUES (?, '2026-03-01 10:00:00', 'main', '/src/app', '2026-03-01 10:05:00', 'Fix login', 'auto')",
        (s1,),
    )
    conn.execute(
        "INSERT INTO sessions (id, created_at, agent_name, project_root)"
        " VALUES (?, '2026-03-02 09:00:00', 'main', NULL)",
        (s2,),
    )
    rows = [
        (s1, "user", "read the config", None, None, None, None, None, None, None, "2026-03-01 10:00:01"),
        (s1, "assistant", None, None, '[{"id":"tc1","function":{"name":"Read"}}]', None, "I need the file",
         "2026-03-01 10:00:02", 120, 30, "2026-03-01 10:00:02"),
        (s1, "tool", "KEY=… (cut)", "KEY=abc\nHOME=/x", None, "tc1", None, None, None, None, "2026-03-01 10:00:03"),
        (s1, "assistant", "It sets KEY.", None, None, None, "easy", "2026-03-01 10:00:04", 200, 12,
         "2026-03-01 10:00:04"),
        (s1, "user", "and then?", None, None, None, None, None, None, None, "2026-03-01 10:00:05"),
        (s1, "assistant", "partial answ", None, None, None, None, None, 90, 3, "2026-03-01 10:00:06"),
        (s2, "user", "hello", None, None, None, None, None, None, None, "2026-03-02 09:00:01"),
    ]
    conn.executemany(
        "INSERT INTO messages (session_id, role, content, full_content, tool_calls, tool_call_id, thinking_content,"
        " completed_at, prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)",
        [(s1, "todo", "- [ ] ship"), (s1, "model", "sonnet")],
    )
    conn.executemany(
        "INSERT INTO owned_files (session_id, path) VALUES (?, ?)", [(s1, "/src/app/new.py"), (s1, "/src/app/a.py")]
    )
    conn.executemany(
        "INSERT INTO kv_store (key, value) VALUES (?, ?)",
        [("setting:last_provider", "anthropic"), ("apikey:GEMINI_API_KEY", "g-123"), ("setting:model", "x")],
    )
    conn.executemany(
        "INSERT INTO session_events (session_id, kind, payload, parent_tool_call_id, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (s1, "info", "compaction completed", None, "2026-03-01 10:00:07"),
            (s2, "info", "hi", None, "2026-03-02 09:00:02"),
            (s1, "sub_agent_event", "  🔧 Glob", "invoke-1", "2026-03-01 10:00:08"),
            (s1, "bg_task_update", '{"task_id":42}', None, "2026-03-01 10:00:09"),
        ],
    )
    conn.commit()


def run_queries(path: Path) -> dict[str, Any]:
    """Every query of the fixture, for every session / key / prefix: name -> rows."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sids = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id")]
        keys = [r[0] for r in conn.execute("SELECT key FROM kv_store ORDER BY key")]
        out: dict[str, Any] = {}
        for name, q in QUERIES.items():
            params: dict[str, Any] = {"before": 2**62, "limit": 1000, "prefix": "setting:"}
            if q.get("per_session"):
                out[name] = {sid: conn.execute(q["sql"], {**params, "sid": sid}).fetchall() for sid in sids}
            elif q.get("per_key"):
                out[name] = {k: conn.execute(q["sql"], {**params, "key": k}).fetchall() for k in keys}
            else:
                out[name] = conn.execute(q["sql"], params).fetchall()
        return out
    finally:
        conn.close()


def test_koda_newest_db_round_trip_gives_kodas_queries_the_same_rows(tmp_path: Path) -> None:
    original = tmp_path / "koda.db"
    conn = koda_db(original)
    fill_as_koda(conn)
    conn.close()
    store = FileStore(tmp_path / "store")
    report = import_sqlite(original, store)
    assert report.ok and report.messages == 7 and not report.renumbered
    exported = tmp_path / "again.db"
    export_sqlite(store, exported)
    want, got = run_queries(original), run_queries(exported)
    for name in QUERIES:
        assert got[name] == want[name], name
    # Every query found rows (the comparison is not of empty answers), the newest columns included.
    assert all(want[name] for name in QUERIES if name != "history_load")
    assert want["load_all_messages"]["0190a1b2-0000-7000-8000-000000000001"][2][4] == "KEY=abc\nHOME=/x"
    check = sqlite3.connect(exported)
    assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL, as koda opens it
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def test_export_of_a_store_using_every_feature_reads_back_with_kodas_queries(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    sid = store.create_session("main", "/src/app")
    store.insert_message(sid, Role.USER, "go")
    mid = store.insert_message(sid, Role.ASSISTANT, None, '[{"id":"t1"}]', None, TokenUsage(10, 2))
    store.mark_message_complete(mid)
    store.update_message_thinking_content(mid, "plan: read")
    tid = store.insert_tool_message_with_full(sid, "short", "t1", "the whole output")
    fork = store.create_session("main", "/src/app")
    store.copy_messages_into_session(fork, store.load_context(sid))
    store.insert_session_event(sid, "info", "done")
    store.insert_session_event(fork, "sub_agent_event", "  🔧 Read", "t1")
    store.kv_set("setting:last_provider", "anthropic")
    store.clear_message_content([tid], "[cleared]")
    db = tmp_path / "out.db"
    export_sqlite(store, db)
    rows = run_queries(db)
    assert [r[12] for r in rows["load_context"][sid]] == [None, "plan: read", None]  # thinking_content
    assert [r[3] for r in rows["load_all_messages"][sid]] == ["go", None, "[cleared]"]
    assert [r[12] for r in rows["load_context"][fork]] == [None, "plan: read", None]
    assert rows["kv_list_prefix"] == [("setting:last_provider", "anthropic")]
    assert [(r[2], r[4]) for r in rows["load_session_events"][fork]] == [("sub_agent_event", "t1")]
    # And back: the files again hold the same.
    again = FileStore(tmp_path / "again")
    assert import_sqlite(db, again).ok
    assert again.load_all_messages(sid)[1].thinking_content == "plan: read"
    assert again.kv_get("setting:last_provider") == "anthropic"
    assert [e.payload for e in again.load_session_events(fork)] == ["  🔧 Read"]


def test_owned_files_round_trip_through_metadata_json(tmp_path: Path) -> None:
    original = tmp_path / "koda.db"
    conn = koda_db(original)
    fill_as_koda(conn)
    conn.close()
    store = FileStore(tmp_path / "store")
    import_sqlite(original, store)
    header = json.loads((tmp_path / "store/sessions/0190a1b2-0000-7000-8000-000000000001/metadata.json").read_text())
    assert header["owned_files"] == ["/src/app/a.py", "/src/app/new.py"]


@pytest.mark.parametrize("table", ["session_events", "kv_store", "owned_files"])
def test_older_db_without_the_newest_tables_still_imports(tmp_path: Path, table: str) -> None:
    original = tmp_path / "koda.db"
    conn = koda_db(original)
    fill_as_koda(conn)
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    store = FileStore(tmp_path / "store")
    assert import_sqlite(original, store).messages == 7
