"""Purge plans a small log from one read into memory and a large one by ranges read as needed:
both ways give the same answer and the same files, byte for byte, on every kind of log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _helpers import messages_path

from koda_files import FileStore, Role
from koda_files._store import rewrite
from koda_files._store.index import _ARCHIVE_MARKS, _ARCHIVE_MARKS_START, _holds_archive_mark

LAYOUT_1 = Path(__file__).resolve().parent / "fixtures" / "layout1"


def _store_of_every_kind(root: Path) -> None:
    """Sessions of both layouts, with annotations, hand-written lines, CRLF, a BOM and a torn end."""
    shutil.copytree(LAYOUT_1, root)
    store = FileStore(root)
    for sid in store.session_ids():
        store.insert_message(sid, Role.USER, "after the first layout")
        store.compact_session(sid, "on top of the first layout", 1)
    plain = store.create_session("main", "/p")
    ids = [store.insert_message(plain, Role.USER, f"m{i}") for i in range(6)]
    store.compact_session(plain, "first", 4)
    store.mark_message_complete(ids[0])  # an annotation of an archived message, below the cut
    store.update_message_thinking_content(ids[1], "thought about an archived one")
    store.mark_message_complete(ids[5])  # of a kept one
    store.insert_message(plain, Role.USER, "later")
    store.compact_session(plain, "second", 2)
    edited = store.create_session("main", "/p")
    for i in range(5):
        store.insert_message(edited, Role.USER, f"e{i}")
    store.compact_session(edited, "edited", 1)
    log = messages_path(root, edited)
    lines = log.read_bytes().split(b"\n")
    # By hand: a BOM, CRLF endings, a person's note above the cut, and no newline at the end.
    lines.insert(1, b"a note a person wrote")
    log.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines).rstrip(b"\r\n"))
    nothing = store.create_session("main", "/p")
    store.insert_message(nothing, Role.USER, "never compacted")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "sessions").rglob("messages.jsonl"))}


@pytest.mark.parametrize("age", [0, 10_000])
def test_purge_plans_in_memory_and_by_ranges_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age: int) -> None:
    base = tmp_path / "base"
    _store_of_every_kind(base)
    in_memory, by_ranges = tmp_path / "memory", tmp_path / "ranges"
    shutil.copytree(base, in_memory)
    shutil.copytree(base, by_ranges)
    reads: list[int] = []
    real = rewrite._Log.__init__

    def spy(self: rewrite._Log, fd: int, size: int) -> None:
        real(self, fd, size)
        reads.append(self.data is not None)

    monkeypatch.setattr(rewrite._Log, "__init__", spy)
    dropped = FileStore(in_memory).purge_compacted(age)
    assert reads and all(reads)  # every log here is small: planned in memory
    monkeypatch.setattr(rewrite, "_IN_MEMORY", 0)
    reads.clear()
    assert FileStore(by_ranges).purge_compacted(age) == dropped
    assert reads and not any(reads)
    assert _files(in_memory) == _files(by_ranges)
    if age == 0:
        assert dropped > 0 and _files(in_memory) != _files(base)
        # Nothing archived is left, and the hand-written line above the cut is kept.
        assert FileStore(in_memory).compacted_stats().message_count == 0
        assert sum(data.count(b"a note a person wrote") for data in _files(in_memory).values()) == 1


@pytest.mark.parametrize("at", [0, (1 << 20) - 5, (1 << 20) + 3, 3 << 20])
def test_purge_precheck_finds_a_mark_wherever_the_reads_cut_it(tmp_path: Path, at: int) -> None:
    log = tmp_path / "messages.jsonl"
    for mark in _ARCHIVE_MARKS:
        assert mark.startswith(_ARCHIVE_MARKS_START)
        log.write_bytes(b"x" * at + mark + b"y" * 10)
        size = log.stat().st_size
        assert _holds_archive_mark(str(log), size)
        assert _holds_archive_mark(str(log), size + 100)  # shrunk since the stat
        assert not _holds_archive_mark(str(log), at + len(mark) - 1)  # grown since the stat
        log.write_bytes(b"x" * at + mark[:-1] + b"\n" + mark[-1:])
        assert not _holds_archive_mark(str(log), log.stat().st_size)
