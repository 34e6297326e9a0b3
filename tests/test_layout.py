"""The on-disk layout of compaction: what a compaction writes, what it never rewrites, and stores
of the first layout (checked in under `tests/fixtures/layout1/`, written by the koda-files that
compacted by rewriting every archived line) read and compacted as before.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _helpers import messages_path, quarantine_path, raw_lines

from koda_files import FileStore, KodaFilesError, Role

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAYOUT_1 = FIXTURES / "layout1"
EXPECTED: dict[str, dict[str, list[dict[str, Any]]]] = json.loads((FIXTURES / "layout1-expected.json").read_text())
FIRST, SECOND = sorted(EXPECTED)  # the session with tool calls and marks; the one compacted twice


def _as_dicts(messages: list[Any]) -> list[dict[str, Any]]:
    return [{**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)}, "role": m.role.value} for m in messages]


def _layout(root: Path) -> int:
    value = json.loads((root / "koda-files.json").read_text())["layout"]
    assert isinstance(value, int)
    return value


@pytest.fixture
def old_root(tmp_path: Path) -> Path:
    root = tmp_path / "layout1"
    shutil.copytree(LAYOUT_1, root)
    return root


def test_a_first_layout_store_reads_exactly_as_it_did(old_root: Path) -> None:
    store = FileStore(old_root)
    for sid, expected in EXPECTED.items():
        assert _as_dicts(store.load_all_messages(sid)) == expected["all"]
        assert _as_dicts(store.load_context(sid)) == expected["context"]
        assert _as_dicts(FileStore(old_root).load_context(sid)) == expected["context"]  # cold, read backwards
    archived = sum(1 for e in EXPECTED.values() for m in e["all"] if m["compacted_at"])
    assert store.compacted_stats().message_count == archived
    assert store.check().ok
    assert _layout(old_root) == 1  # reading changes nothing


def test_a_first_layout_store_compacts_again_without_rewriting_a_line(old_root: Path) -> None:
    store = FileStore(old_root)
    before = raw_lines(messages_path(old_root, FIRST))
    old_archived = {m["id"]: m["compacted_at"] for m in EXPECTED[FIRST]["all"] if m["compacted_at"]}
    store.insert_message(FIRST, Role.USER, "one more")
    archived = store.compact_session(FIRST, "second summary", 1)
    assert archived == len(EXPECTED[FIRST]["context"])  # the old summary, hint and exchange
    after = raw_lines(messages_path(old_root, FIRST))
    assert after[: len(before)] == before and len(after) == len(before) + 3  # the insert, summary, hint
    everything = store.load_all_messages(FIRST)
    summary = next(m for m in everything if m.content == "second summary")
    for m in everything:
        if m.id in old_archived:
            assert m.compacted_at == old_archived[m.id]  # the first layout's own time stays
        elif m.id not in (summary.id, summary.id + 1) and m.content != "one more":
            assert m.compacted_at == summary.created_at
    assert [m.content for m in store.load_context(FIRST)][::2] == ["second summary", "one more"]
    assert _layout(old_root) == 2  # an older koda-files now refuses this root
    assert store.check().ok
    archived_now = store.compacted_stats().message_count
    assert archived_now == len(everything) - 3 + sum(1 for m in EXPECTED[SECOND]["all"] if m["compacted_at"])
    assert store.purge_compacted(0) == archived_now
    assert [m.content for m in FileStore(old_root).load_all_messages(FIRST)][::2] == ["second summary", "one more"]


def test_a_first_layout_store_purges_by_the_lines_own_time(old_root: Path) -> None:
    store = FileStore(old_root)
    assert store.purge_compacted(10_000) == 0  # archived today: nothing that old
    dropped = sum(1 for m in EXPECTED[SECOND]["all"] if m["compacted_at"])
    kept = [line for line in raw_lines(messages_path(old_root, SECOND)) if b'"compacted_at"' not in line]
    assert store.purge_compacted(0) >= dropped
    assert raw_lines(messages_path(old_root, SECOND)) == kept


def test_a_root_is_moved_to_the_second_layout_by_its_first_compaction_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    store.insert_message(sid, Role.USER, "q")
    assert _layout(store.root) == 1  # nothing only the new layout reads yet
    assert store.compact_session(sid, "s", 5) == 0
    assert _layout(store.root) == 1
    assert store.compact_session(sid, "s", 0) == 1
    assert _layout(store.root) == 2
    (store.root / "koda-files.json").write_text('{"format": "koda-files", "layout": 3}\n')
    with pytest.raises(KodaFilesError, match="layout 3 is newer"):
        FileStore(store.root).load_context(sid)


def _git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    done = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("history,keep", [(10, 3), (2000, 10), (2000, 0)])
def test_a_compaction_is_a_few_added_lines_in_git(tmp_path: Path, history: int, keep: int) -> None:
    """`git diff --numstat` after a compaction on a committed store: nothing deleted, 2 lines added.

    The root's first compaction also moves its marker to layout 2 (one changed line, once).
    """
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    _git(store.root, "init", "-q")
    for round_ in range(2):
        for i in range(history):
            store.insert_message(sid, Role.USER if i % 2 == 0 else Role.ASSISTANT, f"message {i} " + "x" * 200)
        _git(store.root, "add", "-A")
        _git(store.root, "commit", "-qm", "history")
        archived = history - keep if round_ == 0 else history + 2  # then the summary, hint and kept ones too
        assert store.compact_session(sid, "what happened so far", keep) == archived
        rows = [line.split("\t") for line in _git(store.root, "diff", "--numstat").splitlines()]
        marker = [["1", "1", "koda-files.json"]] if round_ == 0 else []
        assert rows == [*marker, ["2", "0", f"sessions/{sid}/messages.jsonl"]]


def test_a_broken_compaction_line_is_reported_and_repair_loses_no_message(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    ids = [store.insert_message(sid, Role.USER, f"m{i}") for i in range(4)]
    store.compact_session(sid, "summary", 1)
    path = messages_path(store.root, sid)
    path.write_bytes(path.read_bytes().replace(b'"compaction":"', b'"compaction":"not a time '))
    report = FileStore(store.root).check()
    [problem] = report.problems
    assert problem.kind == "bad-line" and problem.line == 4 and "'compaction' is not a time" in problem.detail
    # The line no longer archives anything: every message is active again, none lost.
    assert [m.id for m in FileStore(store.root).load_context(sid)][:4] == [*ids[:3], ids[3] + 2]
    assert FileStore(store.root).check(repair=True).ok
    assert [m.id for m in FileStore(store.root).load_all_messages(sid)] == [*ids[:3], ids[3] + 2, ids[3]]
    assert b"not a time" in quarantine_path(store.root, sid).read_bytes()


def test_deleting_the_summary_line_by_hand_makes_the_archived_messages_active_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", "/p")
    for i in range(4):
        store.insert_message(sid, Role.USER, f"m{i}")
    store.compact_session(sid, "summary", 1)
    path = messages_path(store.root, sid)
    path.write_bytes(b"".join(line + b"\n" for line in raw_lines(path) if b'"compaction"' not in line))
    assert [m.content for m in store.load_context(sid)][:4] == ["m0", "m1", "m2", store.load_context(sid)[3].content]
    assert all(m.compacted_at is None for m in store.load_all_messages(sid))
