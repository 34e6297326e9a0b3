"""`kill -9` during appends and during every rewrite, with real processes.

Kill points are spread evenly over the measured duration of the operation; after every kill the
store must hold exactly the old state or exactly the new one, nothing acknowledged may be lost,
no stray non-dot file may remain, and the next operation must succeed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _fault_helpers import copy_root, fork_child, leftovers, scaled, send, stray_entries
from _helpers import messages_path, metadata_path, session_dir, sessions_dir

from koda_files import FileStore, Role

KILL_POINTS = scaled(12, 40)


def _all_lines_parse(path: Path) -> None:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a kill left a torn line"
    for line in data.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict) and type(obj["id"]) is int


# ── 1. appends ──


def test_kill9_during_appends_loses_no_acknowledged_insert(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sid = FileStore(root).create_session("main", ".")
    per_child = scaled(300, 3000)

    def body(wfd: int) -> None:
        store = FileStore(root)
        send(wfd, "go")
        for i in range(per_child):
            mid = store.insert_message(sid, Role.USER, f"message {i}")
            os.write(wfd, b"%d\n" % mid)  # acknowledged to the "user" only after it returned
        send(wfd, "done")

    def acked(out: bytes) -> list[int]:
        return [int(x) for x in out.split() if x.isdigit()]

    # Calibrate: how long does the whole loop take in a child?
    child = fork_child(body)
    child.read_until(b"go\n")
    t0 = time.perf_counter()
    child.read_until(b"done\n")
    duration = time.perf_counter() - t0
    child.finish()

    killed_mid_loop = 0
    for k in range(KILL_POINTS):
        before = {m.id for m in FileStore(root).load_all_messages(sid)}
        child = fork_child(body)
        child.read_until(b"go\n")
        time.sleep(duration * k / KILL_POINTS)
        child.kill()
        child.wait()
        got = acked(child.output())
        if len(got) < per_child:
            killed_mid_loop += 1

        store = FileStore(root)  # "restart"
        ids = [m.id for m in store.load_all_messages(sid)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids not unique and increasing"
        assert set(got) <= set(ids), f"acknowledged inserts lost at kill point {k}"
        unacked = set(ids) - before - set(got)
        assert len(unacked) <= 1, "more than the one in-flight insert appeared unacknowledged"
        _all_lines_parse(messages_path(root, sid))
        new_id = store.insert_message(sid, Role.USER, f"after kill {k}")
        assert new_id > max(ids)
        assert store.load_all_messages(sid)[-1].id == new_id
    assert killed_mid_loop >= 3, "the kills did not land inside the insert loop"


def test_truncated_last_record_at_every_byte_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    for text in ("first", "second"):
        store.insert_message(sid, Role.USER, text)
    last_id = store.insert_message(sid, Role.ASSISTANT, 'last "quoted" \u00e9\U0001f600 reply', None, None)
    path = messages_path(root, sid)
    full = path.read_bytes()
    body, last = full[: full.rstrip(b"\n").rfind(b"\n") + 1], full[full.rstrip(b"\n").rfind(b"\n") + 1 :]
    before_ids = [m.id for m in store.load_all_messages(sid)][:-1]
    store.close()

    for cut in range(1, len(last)):
        path.write_bytes(body + last[:cut])
        fresh = FileStore(root)
        caplog.clear()
        # Only the newline lost: the record is whole, and a message to every reader at once.
        complete_json = cut == len(last) - 1
        visible = before_ids + ([last_id] if complete_json else [])
        with caplog.at_level(logging.WARNING, logger="koda_files"):
            assert [m.id for m in fresh.load_all_messages(sid)] == visible, cut
            assert [m.id for m in fresh.load_all_messages(sid)] == visible, cut
        torn = [r.getMessage() for r in caplog.records if "incomplete last line" in r.getMessage()]
        if complete_json:
            assert torn == [], cut
        else:
            assert len(torn) == 1, (cut, torn)  # reported once, not on every read
            assert str(path) in torn[0] and "line 3" in torn[0]
        report = fresh.check()
        assert [(p.kind, p.line) for p in report.problems] == [("torn-tail", 3)], cut

        new_id = fresh.insert_message(sid, Role.USER, "after the crash")
        assert new_id > last_id
        lines = path.read_bytes().split(b"\n")
        assert lines[2] == last[:cut], "the torn bytes were changed"
        assert json.loads(lines[3])["content"] == "after the crash", "the new line was glued to the torn one"
        assert [m.id for m in fresh.load_all_messages(sid)] == [*visible, new_id], cut
        fresh.close()


# ── 2. rewrites ──


@dataclass
class Rewrite:
    name: str
    setup: Callable[[FileStore], str]  # builds the template; returns the session id
    op: Callable[[FileStore, str], object]
    state: Callable[[Path, str], object]  # what "old" and "new" are compared by


def _messages_state(root: Path, sid: str) -> object:
    path = messages_path(root, sid)
    _all_lines_parse(path)
    msgs = FileStore(root).load_all_messages(sid)
    ids = [m.id for m in msgs]
    assert len(set(ids)) == len(ids)  # (compaction puts its summary, with new ids, before the tail)
    return [(m.role, m.content, m.compacted_at is not None) for m in msgs]


def _file_state(name: str) -> Callable[[Path, str], object]:
    def state(root: Path, sid: str) -> object:
        p = session_dir(root, sid) / name
        return p.read_bytes() if p.exists() else None

    return state


def _session_state(root: Path, sid: str) -> object:
    sessions = sessions_dir(root)
    out = []
    for name in sorted(os.listdir(sessions)):
        if name.startswith("."):
            continue
        d = sessions / name
        json.loads(metadata_path(root, name).read_bytes())  # a visible session is always whole
        files: dict[str, bytes] = {
            str(p.relative_to(d)): p.read_bytes()
            for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
        if name == sid:
            out.append((name, files))
        else:  # a session made by the operation: its id and times are new each run
            out.append(("other", {k: b"" for k in files}))
    return sorted(out, key=lambda x: x[0])


def _chatty_session(store: FileStore, n: int) -> str:
    sid = store.create_session("main", ".")
    for i in range(n):
        store.insert_message(sid, Role.USER if i % 2 == 0 else Role.ASSISTANT, f"message {i} " + "x" * 150)
    return sid


N_MSG = scaled(2500, 25000)
BIG = scaled(6, 60) << 20


def _setup_compacted(store: FileStore) -> str:
    sid = _chatty_session(store, N_MSG)
    store.compact_session(sid, "summary", 10)
    return sid


def _setup_big_header(store: FileStore) -> str:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hi")
    store.set_metadata(sid, "model", "old")
    return sid


def _setup_deletable(store: FileStore) -> str:
    sid = _chatty_session(store, 50)
    store.set_todo(sid, "- [ ] keep")
    attachments = session_dir(store.root, sid) / "attachments"
    attachments.mkdir()
    for i in range(scaled(400, 4000)):
        (attachments / f"note-{i}.txt").write_text("note")
    return sid


REWRITES = [
    Rewrite("compact", lambda s: _chatty_session(s, N_MSG), lambda s, sid: s.compact_session(sid, "sum", 5),
            _messages_state),
    Rewrite("purge", _setup_compacted, lambda s, sid: s.purge_compacted(0), _messages_state),
    Rewrite("set_metadata", _setup_big_header, lambda s, sid: s.set_metadata(sid, "model", "n" * BIG),
            _file_state("metadata.json")),
    Rewrite("set_todo", _setup_big_header, lambda s, sid: s.set_todo(sid, "- [ ] t\n" * (BIG // 8)),
            _file_state("todo.md")),
    Rewrite("delete_session", _setup_deletable, lambda s, sid: s.delete_session(sid), _session_state),
    Rewrite("create_session", lambda s: _chatty_session(s, 3), lambda s, sid: s.create_session("sub", "/p"),
            _session_state),
]


@pytest.mark.parametrize("case", REWRITES, ids=[r.name for r in REWRITES])
def test_kill9_during_rewrite_leaves_old_or_new_state(tmp_path: Path, case: Rewrite) -> None:
    template = tmp_path / "template"
    sid = case.setup(FileStore(template, durability="fsync"))
    old = case.state(template, sid)
    old_log = messages_path(template, sid).read_bytes()

    def body_for(root: Path) -> Callable[[int], None]:
        def body(wfd: int) -> None:
            store = FileStore(root, durability="fsync")
            send(wfd, "go")
            case.op(store, sid)
            send(wfd, "done")

        return body

    # The new state, and how long the operation takes in a child, measured as the kills see it.
    durations = []
    new: object = None
    for i in range(3):
        scratch = copy_root(template, tmp_path / f"scratch-{i}")
        child = fork_child(body_for(scratch))
        child.read_until(b"go\n")
        t0 = time.perf_counter()
        child.read_until(b"done\n")
        durations.append(time.perf_counter() - t0)
        child.finish()
        new = case.state(scratch, sid)
        shutil.rmtree(scratch)
    duration = max(durations)
    assert new != old

    outcomes = []
    interrupted = 0
    for k in range(KILL_POINTS):
        root = copy_root(template, tmp_path / f"kill-{k}")
        child = fork_child(body_for(root))
        child.read_until(b"go\n")
        time.sleep(duration * 1.5 * k / (KILL_POINTS - 1))
        child.kill()
        child.wait()
        child.output()

        got = case.state(root, sid)
        assert got in (old, new), f"{case.name}: kill point {k} left a state that is neither old nor new"
        outcomes.append("old" if got == old else "new")
        if got == old and case.name in ("compact", "purge"):
            assert messages_path(root, sid).read_bytes() == old_log
        assert stray_entries(root, template) == [], f"{case.name}: kill point {k} left stray files"
        interrupted += any("/.deleted-" in p for p in leftovers(root))

        # The next operation succeeds, and check/repair clears whatever the crash left.
        store = FileStore(root, durability="fsync")
        case.op(store, sid)
        if session_dir(root, sid).exists():
            store.insert_message(sid, Role.USER, "after")
        store.check(repair=True)
        for p in leftovers(root):  # `.new-*` and root temp files younger than the grace period stay
            assert "/.new-" in p or os.path.dirname(p) == str(root), p
        shutil.rmtree(root)
    # The kill points spanned the operation: some landed before its commit (the rename at its end),
    # some after; a deletion commits first (rename to `.deleted-*`), then kills land in the removal.
    # (Only "old" is required: on a loaded machine the child may run slower than calibrated.)
    if case.name in ("compact", "purge", "set_metadata", "set_todo"):
        assert "old" in outcomes, (case.name, duration, outcomes)
    if case.name == "delete_session":
        assert interrupted, "no kill landed during the removal of the session's files"
