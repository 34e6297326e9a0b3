"""Whole-store answers come from the root summary, without a stat per session, and stay true.

`compacted_stats`, `recent_user_messages` and `list_sessions` read `<root>/.summary`, checked
against the boot, `sessions/`'s mtime, the change journal `.changes` and `.index`. Store writes
(from any process) are seen at once; sessions copied in or removed by hand are seen at once;
a hand edit to an existing session's files is seen once the store next writes to that session,
or after `koda-files check --reindex`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli import Cli
from _helpers import messages_path, session_dir

from koda_files import FileStore, Role
from koda_files._store import summary as summary_module

DERIVED = (".index", ".summary", ".changes")


@pytest.fixture(autouse=True)
def trusted_at_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A summary is trusted right after it is built (no settling time), so each test sees the fast path."""
    monkeypatch.setattr(summary_module, "DIR_SLACK_NS", 0)
    monkeypatch.setattr(summary_module, "SETTLE_NS", 0)
    yield


def answers(store: FileStore) -> dict[str, Any]:
    return {
        "stats": store.compacted_stats(),
        "recent": store.recent_user_messages(10),
        "listed": [(i.id, i.message_count, i.total_tokens, i.title) for i in store.list_sessions(20, "/p")],
    }


def truth(root: Path, tmp_path: Path) -> dict[str, Any]:
    """What the files say: a copy of the root without any derived file, read by a new store."""
    copy = tmp_path / f"truth-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(root, copy)
    for name in DERIVED:
        (copy / name).unlink(missing_ok=True)
    return answers(FileStore(copy))


def build(root: Path, n: int = 6) -> tuple[FileStore, list[str]]:
    store = FileStore(root)
    ids = []
    for i in range(n):
        sid = store.create_session("main", "/p")
        for j in range(4):
            store.insert_message(sid, Role.USER, f"question {i}.{j}")
            store.insert_message(sid, Role.ASSISTANT, f"answer {i}.{j}")
        if i % 2 == 0:
            store.compact_session(sid, f"summary {i}", 2)
        ids.append(sid)
    return store, ids


def drop_archived_by_hand(root: Path, sid: str) -> None:
    """Cut what is above the last compaction line (the archived messages), in place."""
    path = messages_path(root, sid)
    lines = path.read_bytes().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if b'"compaction"' in line)
    kept = lines[last:]
    with open(path, "r+b") as f:  # in place, as an editor that keeps the inode would
        f.write(b"".join(kept))
        f.truncate()


def test_answers_from_the_summary_stat_no_session_but_those_returned(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build(root, 40)
    answers(FileStore(root))  # builds the summary
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        stats.append(os.fspath(path))
        return real_stat(path, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", counting_stat)
        store = FileStore(root)
        assert store.compacted_stats().session_count == 20
        in_sessions = [p for p in stats if "/sessions/" in p]
        assert in_sessions == [], "compacted_stats must not stat any session"
        stats.clear()
        assert len(store.list_sessions(3, "/p")) == 3
        touched = {p.split("/sessions/")[1].split("/")[0] for p in stats if "/sessions/" in p}
        assert len(touched) == 3, "only the sessions returned are re-checked"
        stats.clear()
        assert store.recent_user_messages(2) == ["question 39.3", "question 39.2"]
        assert all("/sessions/" not in p for p in stats)


def test_store_writes_are_seen_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    writer = FileStore(root)
    writer.insert_message(ids[1], Role.USER, "newest question")
    writer.compact_session(ids[1], "later summary", 1)
    writer.set_session_title(ids[3], "titled")
    writer.delete_session(ids[5])
    assert answers(FileStore(root)) == answers(store) == truth(root, tmp_path)
    assert store.recent_user_messages(1) == ["newest question"]


def test_a_purge_is_seen_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, _ = build(root)
    assert answers(store)["stats"].session_count == 3
    assert FileStore(root).purge_compacted(0) == 3 * 6
    assert answers(FileStore(root)) == answers(store) == truth(root, tmp_path)
    assert store.compacted_stats().message_count == 0


def _write_from_another_process(root: str, sid: str, n: int) -> None:
    store = FileStore(root)
    for i in range(n):
        store.insert_message(sid, Role.USER, f"from the child {i}")
        if i % 7 == 0:
            store.compact_session(sid, "child summary", 2)


def test_a_writer_in_another_process_never_leaves_the_summary_stale(tmp_path: Path) -> None:
    """Readers rebuild the summary while another process writes; once it stops, every answer is true."""
    root = tmp_path / "root"
    store, ids = build(root)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_write_from_another_process, args=(str(root), ids[2], 60))
    child.start()
    while child.is_alive():
        answers(FileStore(root))
    child.join()
    assert child.exitcode == 0
    assert answers(FileStore(root)) == answers(store) == truth(root, tmp_path)


def test_sessions_copied_in_or_removed_by_hand_are_seen_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    shutil.copytree(session_dir(root, ids[0]), session_dir(root, "copied-in-by-hand"))
    assert answers(store) == truth(root, tmp_path)
    shutil.rmtree(session_dir(root, ids[2]))
    assert answers(store) == truth(root, tmp_path)
    assert "copied-in-by-hand" in [i.id for i in store.list_sessions(20, "/p")]


def test_a_hand_edit_reaches_aggregates_with_the_next_store_write_to_that_session(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    before = answers(store)
    drop_archived_by_hand(root, ids[0])
    # The promise (README, Guarantees): not yet. The summary is trusted until the store writes.
    assert FileStore(root).compacted_stats() == before["stats"]
    assert truth(root, tmp_path)["stats"] != before["stats"]
    FileStore(root).set_session_title(ids[0], "any store write to that session")
    assert answers(FileStore(root)) == answers(store) == truth(root, tmp_path)


def test_check_reindex_rebuilds_the_aggregates_from_the_files(tmp_path: Path, cli: Cli) -> None:
    root = cli.root
    store, ids = build(root)
    before = answers(store)
    drop_archived_by_hand(root, ids[2])
    assert FileStore(root).compacted_stats() == before["stats"]
    FileStore(root).reindex()
    assert answers(FileStore(root)) == truth(root, tmp_path)
    assert answers(FileStore(root))["stats"] != before["stats"]
    # The command line: `check --reindex` (a check alone also names every session it locked).
    drop_archived_by_hand(root, ids[4])
    assert "ok" in cli.ok("check", "--reindex")
    assert answers(FileStore(root)) == truth(root, tmp_path)


def test_a_plain_check_makes_hand_edits_count_in_the_aggregates(tmp_path: Path) -> None:
    """`check` reads every session it locks whole, so it names each in the journal: a hand edit
    it has read counts in the whole-store answers from then on, without `--reindex`."""
    root = tmp_path / "root"
    store, ids = build(root)
    before = answers(store)
    drop_archived_by_hand(root, ids[2])
    assert FileStore(root).compacted_stats() == before["stats"]  # not seen yet: no store write
    assert FileStore(root).check().ok
    assert answers(FileStore(root)) == truth(root, tmp_path)
    assert answers(FileStore(root))["stats"] != before["stats"]


def test_a_lost_or_damaged_journal_or_summary_costs_a_full_check_not_a_wrong_answer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    drop_archived_by_hand(root, ids[0])
    (root / ".changes").unlink()  # every summary is void without its journal
    assert answers(FileStore(root)) == truth(root, tmp_path)
    drop_archived_by_hand(root, ids[2])
    (root / ".summary").write_bytes(b"{not json")
    assert answers(FileStore(root)) == truth(root, tmp_path)
    store.insert_message(ids[4], Role.USER, "after")
    with open(root / ".changes", "ab") as f:
        f.write(b"garbage line\n")  # a line that names no session: everything is checked
    drop_archived_by_hand(root, ids[4])
    assert answers(FileStore(root)) == truth(root, tmp_path)


def test_a_summary_from_another_boot_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    data = json.loads((root / ".summary").read_bytes())
    data["boot"] = "a boot before an OS crash"
    (root / ".summary").write_text(json.dumps(data))
    drop_archived_by_hand(root, ids[0])  # as if the crash had lost these lines
    assert answers(FileStore(root)) == truth(root, tmp_path)


def test_rows_returned_are_exact_even_before_the_next_write(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    path = messages_path(root, ids[5])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))  # the newest session loses its last prompt and answer
    listed = {i.id: i.message_count for i in FileStore(root).list_sessions(3, "/p")}
    assert listed[ids[5]] == len(lines) - 2
    assert FileStore(root).recent_user_messages(1) == truth(root, tmp_path)["recent"][:1]


def test_a_prompt_is_read_again_only_where_its_line_was(tmp_path: Path) -> None:
    """Re-checking a returned prompt reads its line at the offset the summary recorded, not the log
    from its end, while the log is the file the summary read it from."""
    root = tmp_path / "root"
    store, ids = build(root)
    store.insert_message(ids[5], Role.USER, "the newest question")
    for _ in range(4):  # a long tail after it: walking back would read all of it
        store.insert_message(ids[5], Role.ASSISTANT, "x" * 20_000)
    answers(store)
    log = root / "sessions" / ids[5] / "messages.jsonl"
    line = next(raw for raw in log.read_bytes().splitlines() if b"the newest question" in raw)
    read: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        if os.fstat(fd).st_ino == log.stat().st_ino:
            read.append(len(data))
        return data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "pread", counting_pread)
        assert FileStore(root).recent_user_messages(1) == ["the newest question"]
    assert 0 < sum(read) <= len(line) + 8


def test_a_prompt_moved_or_changed_by_hand_is_found_in_its_log(tmp_path: Path) -> None:
    """A log edited by hand after the summary (lines above a prompt added, a prompt reworded) is
    walked back instead of trusting where the prompt was: the prompts returned are the file's."""
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    path = root / "sessions" / ids[5] / "messages.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    newest = lines[-2]
    assert b"question 5.3" in newest
    edited = [b"a note typed by hand\n", *lines[:-2], newest.replace(b"question 5.3", b"question five"), lines[-1]]
    path.write_bytes(b"".join(edited))
    got = FileStore(root).recent_user_messages(3)
    assert got == truth(root, tmp_path)["recent"][:3]
    assert got[0] == "question five"


def test_a_torn_or_garbled_index_is_rebuilt_and_stays_one_json_object(tmp_path: Path) -> None:
    """`.index` is one JSON object written an entry a line; a garbled entry or a torn file costs a
    re-read of the files, never a wrong answer, and the next save is whole JSON again."""
    root = tmp_path / "root"
    store, ids = build(root)
    answers(store)
    index = root / ".index"
    assert set(json.loads(index.read_bytes())["logs"]) == set(ids)
    raw = index.read_bytes()
    garbled = raw.replace(f'"{ids[3]}":[['.encode(), f'"{ids[3]}":[[{{'.encode(), 1)
    (root / ".summary").unlink()  # the answers come from the index again
    index.write_bytes(garbled)
    assert answers(FileStore(root)) == truth(root, tmp_path)
    (root / ".summary").unlink()
    index.write_bytes(raw[: len(raw) // 2])  # torn
    store = FileStore(root)
    store.insert_message(ids[2], Role.USER, "after the tear")
    assert answers(store) == truth(root, tmp_path)
    assert set(json.loads(index.read_bytes())["logs"]) == set(ids)
