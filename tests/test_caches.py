"""Derived state is never trusted over the files.

A store keeps parsed logs, an incrementally sanitised context, its own append position and the
`<root>/.index` of headers and counts, and the root summary `<root>/.summary` behind the
whole-store answers. After every kind of hand change (an edit in place, a truncation, a file
replaced by rename, `rm -rf` of a session, a session copied in, a damaged or deleted index), a
store whose caches are warm must answer exactly as the files say (a store reading a copy of the
root without its derived files). One promise is weaker than it was: whole-store aggregates see a
hand edit to an existing session's files only after the next store write to that session (see
`WHOLE_STORE` below and tests/test_summary.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _helpers import messages_path, metadata_path, session_dir

from koda_files import FileStore, Role, TokenUsage

Query = Callable[[FileStore, str], Any]

QUERIES: dict[str, Query] = {
    "load_all_messages": lambda s, sid: s.load_all_messages(sid),
    "load_context": lambda s, sid: s.load_context(sid),
    "last_user_message": lambda s, sid: s.last_user_message(sid),
    "has_pending_tool_calls": lambda s, sid: s.has_pending_tool_calls(sid),
    "session_token_usage": lambda s, sid: s.session_token_usage(sid),
    "list_sessions": lambda s, sid: [
        (i.id, i.message_count, i.total_tokens, i.agent_name) for i in s.list_sessions(10, "/p")
    ],
    "compacted_stats": lambda s, sid: s.compacted_stats(),
    "recent_user_messages": lambda s, sid: s.recent_user_messages(10),
}

# Whole-store answers come from the root summary. Sessions created or removed by hand, and a
# damaged or deleted index, are seen at once; a hand edit to an existing session's files only
# after the store next writes to that session (or `reindex`): that promise changed from "at
# once" when the summary replaced a stat per session.
WHOLE_STORE = ("list_sessions", "compacted_stats", "recent_user_messages")
SEEN_AT_ONCE = {"rm_rf_session", "copy_in_a_session", "corrupt_the_index", "delete_the_index"}

CALL = json.dumps([{"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}])


def _session(store: FileStore) -> str:
    sid = store.create_session("main", "/p")
    store.insert_message(sid, Role.USER, "first question")
    store.insert_message(sid, Role.ASSISTANT, "first answer", usage=TokenUsage(10, 5))
    store.insert_message(sid, Role.USER, "second question")
    store.insert_message(sid, Role.ASSISTANT, "ok", CALL, None, TokenUsage(20, 7))
    store.insert_message(sid, Role.TOOL, "file.py", None, "c1")
    store.insert_message(sid, Role.ASSISTANT, "third answer", usage=TokenUsage(30, 9))
    store.compact_session(sid, "summary", 3)
    store.insert_message(sid, Role.USER, "last question")
    return sid


def _later_tick() -> None:
    # A person's edit lands on a later tick of the file system clock than the store's write.
    time.sleep(0.05)


def edit_in_place_same_size(root: Path, sid: str) -> None:
    _later_tick()
    path = messages_path(root, sid)
    data = path.read_bytes()
    assert b"last question" in data
    with open(path, "r+b") as f:
        f.write(data.replace(b"last question", b"LAST QUESTION"))


def edit_in_place_new_size(root: Path, sid: str) -> None:
    path = messages_path(root, sid)
    lines = path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["content"] = "an edited and longer question"
    lines[-1] = json.dumps(record).encode() + b"\n"
    with open(path, "r+b") as f:  # in place: same inode
        f.write(b"".join(lines))
        f.truncate()


def truncate_last_line(root: Path, sid: str) -> None:
    path = messages_path(root, sid)
    lines = path.read_bytes().splitlines(keepends=True)
    with open(path, "r+b") as f:
        f.truncate(sum(len(line) for line in lines[:-2]))


def replace_by_rename(root: Path, sid: str) -> None:
    path = messages_path(root, sid)
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if b'"role":"tool"' not in line and b"third" not in line]
    tmp = path.with_name("edited.tmp")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)


def rm_rf_session(root: Path, sid: str) -> None:
    shutil.rmtree(session_dir(root, sid))


def copy_in_a_session(root: Path, sid: str) -> None:
    shutil.copytree(session_dir(root, sid), session_dir(root, "copied-in-by-hand"))


def corrupt_the_index(root: Path, sid: str) -> None:
    (root / ".index").write_bytes(b"{not json")
    truncate_last_line(root, sid)


def delete_the_index(root: Path, sid: str) -> None:
    (root / ".index").unlink()
    edit_in_place_new_size(root, sid)


def edit_metadata_by_hand(root: Path, sid: str) -> None:
    path = metadata_path(root, sid)
    header = json.loads(path.read_text())
    header["agent_name"] = "renamed-by-hand"
    path.write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")


EDITS: dict[str, Callable[[Path, str], None]] = {
    f.__name__: f
    for f in (
        edit_in_place_same_size,
        edit_in_place_new_size,
        truncate_last_line,
        replace_by_rename,
        rm_rf_session,
        copy_in_a_session,
        corrupt_the_index,
        delete_the_index,
        edit_metadata_by_hand,
    )
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_warm_store_answers_like_a_fresh_one_after_a_hand_change(tmp_path: Path, edit: str) -> None:
    root = tmp_path / "root"
    warm = FileStore(root)
    sid = _session(warm)
    before = {name: ask(warm, sid) for name, ask in QUERIES.items()}  # warms every cache
    EDITS[edit](root, sid)
    expected = _from_the_files(root, tmp_path, sid)
    for name, ask in QUERIES.items():
        if name in WHOLE_STORE and edit not in SEEN_AT_ONCE:
            continue  # checked below, after a store write to the session
        assert ask(warm, sid) == expected[name], f"{name} is stale after {edit}"
        assert ask(FileStore(root), sid) == expected[name], f"{name} of a new store is stale after {edit}"
    assert expected != before, "the edit should change some answer, or the test proves nothing"
    if edit not in SEEN_AT_ONCE and sid in warm.session_ids():
        warm.set_metadata(sid, "touched", "by the store")  # changes no answer below
        expected = _from_the_files(root, tmp_path, sid)
        for name in WHOLE_STORE:
            assert QUERIES[name](warm, sid) == expected[name], f"{name} is stale after {edit} and a write"
            assert QUERIES[name](FileStore(root), sid) == expected[name], f"{name}: new store, {edit}, a write"


def _from_the_files(root: Path, tmp_path: Path, sid: str) -> dict[str, Any]:
    """Every answer as the files say it: a new store on a copy of the root without derived files."""
    copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(root, copy)
    for name in (".index", ".summary", ".changes"):
        (copy / name).unlink(missing_ok=True)
    fresh = FileStore(copy)
    return {name: ask(fresh, sid) for name, ask in QUERIES.items()}


@pytest.mark.parametrize("edit", ["truncate_last_line", "replace_by_rename", "edit_in_place_new_size"])
def test_an_append_after_a_hand_change_lands_after_what_is_there(tmp_path: Path, edit: str) -> None:
    """The store's remembered end of the log (size, last id) is re-read, not trusted."""
    root = tmp_path / "root"
    warm = FileStore(root)
    sid = _session(warm)
    warm.load_all_messages(sid)
    EDITS[edit](root, sid)
    new_id = warm.insert_message(sid, Role.USER, "after the edit")
    on_disk = [json.loads(line) for line in messages_path(root, sid).read_bytes().splitlines()]
    assert on_disk[-1]["id"] == new_id and on_disk[-1]["content"] == "after the edit"
    assert new_id > max(r["id"] for r in on_disk[:-1])
    assert warm.load_all_messages(sid) == FileStore(root).load_all_messages(sid)


def test_the_index_is_rebuilt_from_the_files_when_it_lies(tmp_path: Path) -> None:
    """An index whose keys match but whose counts were tampered with is still checked by identity:
    an entry is only used while the file's (inode, size, mtime) are the ones it was taken from."""
    root = tmp_path / "root"
    store = FileStore(root)
    sid = _session(store)
    store.list_sessions(10, "/p")
    index = json.loads((root / ".index").read_bytes())
    assert sid in index["logs"] and sid in index["headers"]
    _later_tick()
    store.insert_message(sid, Role.USER, "one more")  # the log changes: its entry is stale
    info = FileStore(root).list_sessions(10, "/p")[0]
    assert info.message_count == len(FileStore(root).load_all_messages(sid))
