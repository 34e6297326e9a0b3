"""The public methods `FileStore` has for tools (the command line, the koda.db export)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from _helpers import messages_path, metadata_path, sessions_dir

from koda_files import FileStore, InvalidSessionIdError, KodaFilesError, Role, SessionNotFoundError


def test_is_store_only_reads(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    assert not store.is_store() and not (tmp_path / "root").exists()
    (tmp_path / "plain").mkdir()
    assert not FileStore(tmp_path / "plain").is_store()
    store.create_session("main", tmp_path)
    assert store.is_store()
    (tmp_path / "just-sessions" / "sessions").mkdir(parents=True)  # made by hand or by an older version
    assert FileStore(tmp_path / "just-sessions").is_store()


def test_session_header_is_the_whole_metadata_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    sid = store.create_session("main", tmp_path)
    store.set_metadata(sid, "branch", "main")
    store.set_session_title(sid, "A title")
    header = store.session_header(sid)
    assert header == orjson.loads(metadata_path(tmp_path, sid).read_bytes())
    assert header["metadata"] == {"branch": "main"} and header["title"] == "A title"
    header["metadata"]["branch"] = "changed"  # a copy: the store is not changed through it
    assert store.get_metadata(sid, "branch") == "main"
    with pytest.raises(SessionNotFoundError):
        store.session_header("0190f0e0-0000-7000-8000-000000000000")
    with pytest.raises(InvalidSessionIdError):
        store.session_header("bad name")
    metadata_path(tmp_path, sid).unlink()
    with pytest.raises(KodaFilesError, match=r"metadata\.json is missing"):
        store.session_header(sid)


def test_raw_lines_are_the_log_as_stored(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    sid = store.create_session("main", tmp_path)
    for text in ("one", "two", "three"):
        store.insert_message(sid, Role.USER, text)
    store.compact_session(sid, "summary", 1)
    log = messages_path(tmp_path, sid).read_bytes()
    assert b"".join(store.raw_lines(sid, archived=True)) == log
    active = store.raw_lines(sid)
    assert orjson.loads(active[0])["content"] == "summary"
    assert b"".join(active) == log[log.index(active[0]) :]  # what follows the last compaction line
    assert all(b'"one"' not in line for line in active)
    with open(messages_path(tmp_path, sid), "ab") as f:
        f.write(b'{"torn": tr')  # a torn last line is shown as it is, ended
    assert store.raw_lines(sid)[-1] == b'{"torn": tr\n'
    with pytest.raises(SessionNotFoundError):
        store.raw_lines("0190f0e0-0000-7000-8000-000000000000")


def test_raw_lines_skip_lines_archived_in_the_first_layout(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    sid = store.create_session("main", tmp_path)
    old = (
        b'{"id":1,"role":"user","content":"old","created_at":"2026-01-01T00:00:00Z",'
        b'"compacted_at":"2026-01-02T00:00:00Z"}\n'
    )
    new = b'{"id":2,"role":"user","content":"new","created_at":"2026-01-03T00:00:00Z"}\n'
    messages_path(tmp_path, sid).write_bytes(old + new)
    assert store.raw_lines(sid) == [new] and store.raw_lines(sid, archived=True) == [old, new]


def test_a_stray_entry_is_warned_about_once_per_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FileStore(tmp_path)
    sid = store.create_session("main", tmp_path)
    (sessions_dir(tmp_path) / "bad name").mkdir()
    (sessions_dir(tmp_path) / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        for _ in range(3):
            assert store.session_ids() == [sid]
        store.stats()
        store.session_overviews()
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"{sessions_dir(tmp_path) / 'bad name'}: not a valid session id, ignored",
        f"{sessions_dir(tmp_path) / 'notes.txt'}: not a session directory, ignored",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        FileStore(tmp_path).session_ids()  # another store object notes them again
    assert len(caplog.records) == 2


def test_stats_counts_the_index_its_first_call_writes(tmp_path: Path) -> None:
    writer = FileStore(tmp_path)
    sid = writer.create_session("main", tmp_path)
    writer.insert_message(sid, Role.USER, "hello")
    writer.compact_session(sid, "summary", 0)
    fresh = FileStore(tmp_path)
    first = fresh.stats()
    assert fresh.stats() == first == FileStore(tmp_path).stats()
    assert first.bytes_on_disk == fresh.disk_usage()
