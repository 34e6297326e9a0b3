"""Edge cases of the caches, of store-wide operations and of the koda.db import.

A warm store sees hand edits and replaced sessions, its caches stay consistent under threads
and asyncio, one unreadable log never breaks store-wide operations, odd koda databases (negative
or 64-bit-limit ids, trailing slashes in project roots) import cleanly, and idle time is never
read through a planted symlink.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from _helpers import messages_path, session_dir, sessions_dir

from koda_files import FileStore, KodaFilesError, Role, export_sqlite, import_sqlite

INT64_MAX = 2**63 - 1


# ── caches ──


def test_same_size_hand_edit_stays_visible_after_the_store_appends(tmp_path: Path) -> None:
    """A person edits a line in place (same size, a later clock tick), then the warm store
    appends: both the warm store and a fresh one read the edit. The store's own append must not
    make it take the edited file as the one it cached."""
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    store.insert_message(sid, Role.USER, "hello world")
    store.insert_message(sid, Role.ASSISTANT, "answer")
    assert [m.content for m in store.load_all_messages(sid)] == ["hello world", "answer"]
    time.sleep(0.05)  # a person's edit: well after the store's last write
    path = messages_path(store.root, sid)
    data = path.read_bytes()
    with open(path, "r+b") as f:  # in place, same size
        f.write(data.replace(b"hello world", b"HELLO WORLD"))
    time.sleep(0.05)
    store.insert_message(sid, Role.USER, "next")
    fresh = FileStore(store.root)
    assert [m.content for m in fresh.load_all_messages(sid)] == ["HELLO WORLD", "answer", "next"]
    assert [m.content for m in store.load_all_messages(sid)] == ["HELLO WORLD", "answer", "next"]


def test_load_context_reads_a_session_replaced_under_the_same_id(tmp_path: Path) -> None:
    """rm -rf of a session, then a different session copied in under the same id: a warm store's
    `load_context` returns the new session's messages, as a fresh store does, even though the
    new log's cache generation numbers start again where the old one's did."""
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    store.insert_message(sid, Role.USER, "old question")
    store.insert_message(sid, Role.ASSISTANT, "old answer")
    assert [m.content for m in store.load_context(sid)] == ["old question", "old answer"]

    other = FileStore(tmp_path / "other")
    src = other.create_session("main", "/p")
    other.insert_message(src, Role.USER, "new question")
    other.insert_message(src, Role.ASSISTANT, "new answer")
    other.insert_message(src, Role.USER, "new follow-up")

    shutil.rmtree(session_dir(store.root, sid))
    assert store.last_user_message(sid) == ""  # the warm store sees the removal
    shutil.copytree(session_dir(other.root, src), session_dir(store.root, sid))

    fresh = FileStore(store.root)
    expected = [m.content for m in fresh.load_context(sid)]
    assert expected == ["new question", "new answer", "new follow-up"]
    assert [m.content for m in store.load_context(sid)] == expected


def test_concurrent_readers_of_one_store_see_no_duplicates(tmp_path: Path) -> None:
    """Four threads read while one writes through the same store: every read sees distinct
    ids in order. Reads take no lock and share one parsed-log cache, so two refreshing it at
    once must not both add the same new bytes."""
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(400):
            store.insert_message(sid, Role.USER, f"m{i} " + "x" * 200)
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            ids = [m.id for m in store.load_all_messages(sid)]
            if ids != sorted(set(ids)):
                errors.append(f"{len(ids)} ids, {len(set(ids))} distinct")
                return

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.load_all_messages(sid)) == 400


def test_async_gather_of_writes_and_reads_leaves_the_cache_as_a_fresh_store_reads(tmp_path: Path) -> None:
    """Gathered `AsyncFileStore` inserts and `load_context` calls on one session (each in a
    worker thread) leave the warm store reading the same ids as a fresh one: the unlocked cache
    refresh racing the writers' appends must not double or drop messages."""
    import asyncio

    from koda_files import AsyncFileStore

    async def main() -> tuple[list[int], list[int]]:
        a = AsyncFileStore(tmp_path / "root")
        sid = await a.create_session("main", "/p")
        for _ in range(300):
            ops = [a.insert_message(sid, Role.USER, "q " + "x" * 300) for _ in range(20)]
            ops += [a.load_context(sid) for _ in range(20)]  # type: ignore[misc]
            await asyncio.gather(*ops)
        # A corrupted cache stays corrupted: comparing once at the end is enough.
        warm = [m.id for m in await a.load_all_messages(sid)]
        cold = [m.id for m in FileStore(tmp_path / "root").load_all_messages(sid)]
        return warm, cold

    warm, cold = asyncio.run(main())
    assert warm == cold


# ── one broken session hides the others ──


def _two_sessions_one_broken(tmp_path: Path) -> tuple[FileStore, str, int]:
    store = FileStore(tmp_path / "root")
    good = store.create_session("main", "/p")
    msg_id = store.insert_message(good, Role.USER, "good question")
    store.insert_message(good, Role.ASSISTANT, "good answer")
    store.compact_session(good, "summary", 0)
    bad = store.create_session("main", "/p")
    store.insert_message(bad, Role.USER, "x")
    log = messages_path(store.root, bad)
    log.unlink()
    log.mkdir()  # damage: a directory where the log should be (a symlink does the same)
    return FileStore(store.root), good, msg_id


def test_recent_user_messages_survives_one_unreadable_log(tmp_path: Path) -> None:
    store, _, _ = _two_sessions_one_broken(tmp_path)
    assert store.recent_user_messages(10) == ["good question"]


def test_purge_survives_one_unreadable_log(tmp_path: Path) -> None:
    store, _, _ = _two_sessions_one_broken(tmp_path)
    assert store.purge_compacted(0) == 2


def test_mark_message_complete_survives_one_unreadable_log(tmp_path: Path) -> None:
    store, good, msg_id = _two_sessions_one_broken(tmp_path)
    # The broken session is the most recently modified: the cold search visits it first.
    os.utime(sessions_dir(store.root), None)
    for entry in sessions_dir(store.root).iterdir():
        if entry.name != good:
            os.utime(messages_path(store.root, entry.name), (time.time() + 100, time.time() + 100))
    store.mark_message_complete(msg_id)
    assert store.load_all_messages(good)[0].completed_at is not None


# ── import of odd koda databases ──

_OLD_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    agent_name TEXT NOT NULL, project_root TEXT, last_accessed_at TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,
    role TEXT NOT NULL, content TEXT, tool_calls TEXT, tool_call_id TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    cache_read_tokens INTEGER, cache_creation_tokens INTEGER, thinking_tokens INTEGER,
    agent_name TEXT, compacted_at TEXT);
CREATE TABLE session_metadata (session_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY(session_id, key));
"""


def _koda_db(path: Path, sessions: list[tuple[str, str | None]], messages: list[tuple[int, str, str, str]]) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SCHEMA)
    conn.executemany(
        "INSERT INTO sessions (id, created_at, agent_name, project_root) VALUES (?, '2025-01-02 03:04:05', 'main', ?)",
        sessions,
    )
    conn.executemany(
        "INSERT INTO messages (id, session_id, role, content, created_at) VALUES (?, ?, ?, ?, '2025-01-02 03:04:06')",
        messages,
    )
    conn.commit()
    conn.close()
    return path


def test_import_of_largest_sqlite_id_keeps_new_ids_in_64_bits(tmp_path: Path) -> None:
    """koda ids are SQLite INTEGERs (64-bit). After importing a row with id 2**63-1, the next
    insert is refused or gets an id that still fits in 64 bits, and the store still exports to
    a koda database (the README promises 64-bit integers)."""
    db = _koda_db(
        tmp_path / "koda.db",
        [("s1", "/p")],
        [(1, "s1", "user", "first"), (INT64_MAX, "s1", "assistant", "last")],
    )
    store = FileStore(tmp_path / "root")
    import_sqlite(db, store)
    sid = store.create_session("main", "/p")
    try:
        new_id = store.insert_message(sid, Role.USER, "after the import")
    except (ValueError, OverflowError, KodaFilesError):
        return  # refusing is acceptable; handing out an id koda cannot store is not
    assert new_id <= INT64_MAX
    export_sqlite(store, tmp_path / "back.db")


def test_import_normalises_a_trailing_slash_in_project_root(tmp_path: Path) -> None:
    """An imported project root written `/work/app/` by koda is found by
    `list_sessions(limit, "/work/app")`, which compares `os.path.abspath` forms."""
    project = tmp_path / "app"
    project.mkdir()
    db = _koda_db(tmp_path / "koda.db", [("s1", str(project) + "/")], [(1, "s1", "user", "hi")])
    store = FileStore(tmp_path / "root")
    import_sqlite(db, store)
    assert [i.id for i in store.list_sessions(10, project)] == ["s1"]


# ── planted symlinks ──


def test_idle_time_is_not_read_through_a_session_symlink(tmp_path: Path) -> None:
    """A symlink planted as a session reads as absent: `load_context` is [] and
    `get_session_idle_secs` / `session_last_accessed` are None, with no stat outside the root."""
    store = FileStore(tmp_path / "root")
    store.create_session("main", "/p")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "messages.jsonl").write_bytes(b'{"id":1,"role":"user","content":"LEAKED"}\n')
    session_dir(store.root, "victim").symlink_to(outside)
    assert store.load_context("victim") == []
    assert store.get_session_idle_secs("victim") is None
    assert store.session_last_accessed("victim") is None


def test_import_of_negative_ids_does_not_reissue_ids(tmp_path: Path) -> None:
    """Importing a database whose message ids are all negative (SQLite accepts any explicit
    INTEGER id) gives the session ids this store never handed out, and later inserts get ids
    above all of them: the id allocator never moves backwards."""
    store = FileStore(tmp_path / "root")
    a = store.create_session("main", "/p")
    before = [store.insert_message(a, Role.USER, f"m{i}") for i in range(3)]
    db = _koda_db(
        tmp_path / "koda.db",
        [("s1", "/p")],
        [(-3, "s1", "user", "x"), (-2, "s1", "assistant", "y"), (-1, "s1", "user", "z")],
    )
    import_sqlite(db, store)
    imported = [m.id for m in store.load_all_messages("s1")]
    assert len(imported) == 3
    assert not set(imported) & set(before), (before, imported)
    later = store.insert_message(a, Role.USER, "later")
    assert later > max(before + imported)
