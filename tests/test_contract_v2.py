"""koda's newer contract: titles, approval modes, idle time, completed messages, interruption."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _fault_helpers import copy_root, fork_child, scaled, send
from _helpers import append_to_log, messages_path, metadata_path, raw_lines, session_dir

import koda_files._files.fileops
import koda_files._session.session
from koda_files import (
    AsyncFileStore,
    AsyncPersistence,
    FileStore,
    Interruption,
    InvalidSessionIdError,
    KodaFilesError,
    Persistence,
    Role,
    SessionNotFoundError,
)

MISSING = "no-such-session"


def _calls(*ids: str) -> str:
    return json.dumps([{"id": i, "type": "function", "function": {"name": "f"}} for i in ids])


def _age(path: Path, seconds: float) -> None:
    """Move a file's mtime `seconds` into the past."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def _annotations(root: Path, sid: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw_lines(messages_path(root, sid)) if b'"role"' not in line]


def test_protocols_have_the_new_methods(store: FileStore) -> None:
    names = [
        "set_session_title",
        "set_session_mode",
        "get_session_mode",
        "get_session_idle_secs",
        "mark_message_complete",
        "detect_interruption",
    ]
    for name in names:
        assert hasattr(Persistence, name) and hasattr(AsyncPersistence, name), name
    assert isinstance(store, Persistence)
    assert isinstance(AsyncFileStore(store.root), AsyncPersistence)


# ── titles and modes ──


def test_title_and_mode_round_trip_and_survive_a_reopen(store: FileStore, root: Path) -> None:
    sid = store.create_session("main", ".")
    other = store.create_session("main", ".")
    assert store.get_session_mode(sid) is None
    [info] = [i for i in store.list_sessions(10, ".") if i.id == sid]
    assert (info.title, info.mode) == (None, None)

    store.set_session_title(sid, "Fix the flaky test ✨")
    store.set_session_mode(sid, "auto-edit")
    store.set_session_title(sid, "Fix the flaky test")  # replaced
    assert store.get_session_mode(sid) == "auto-edit"
    assert store.get_session_mode(other) is None

    for s in (store, FileStore(root)):
        by_id = {i.id: i for i in s.list_sessions(10, ".")}
        assert (by_id[sid].title, by_id[sid].mode) == ("Fix the flaky test", "auto-edit")
        assert (by_id[other].title, by_id[other].mode) == (None, None)
        assert s.get_session_mode(sid) == "auto-edit"


def test_title_and_mode_are_top_level_keys_of_the_header(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    fstore.set_metadata(sid, "title", "a metadata value, not the title")
    fstore.set_session_title(sid, "The title")
    fstore.set_session_mode(sid, "plan")
    text = metadata_path(root, sid).read_text()
    header = json.loads(text)
    assert header["title"] == "The title" and header["mode"] == "plan"
    assert header["metadata"] == {"title": "a metadata value, not the title"}
    assert '\n  "mode": "plan",\n' in text and text.endswith("}\n")  # one line per value
    assert fstore.get_metadata(sid, "title") == "a metadata value, not the title"
    assert stat.S_IMODE(os.stat(metadata_path(root, sid)).st_mode) == 0o600


def test_title_and_mode_written_by_hand_are_read(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    path = metadata_path(root, sid)
    header = json.loads(path.read_bytes())
    header.update(title="hand title", mode=7)  # a non-string mode reads as none
    path.write_text(json.dumps(header))
    [info] = fstore.list_sessions(1, ".")
    assert (info.title, info.mode) == ("hand title", None)
    assert fstore.get_session_mode(sid) is None


def test_unknown_session_writes_raise_and_reads_are_empty(store: FileStore, root: Path) -> None:
    store.create_session("main", ".")
    with pytest.raises(SessionNotFoundError):
        store.set_session_title(MISSING, "t")
    with pytest.raises(SessionNotFoundError):
        store.set_session_mode(MISSING, "m")
    assert not session_dir(root, MISSING).exists()
    assert store.get_session_mode(MISSING) is None
    assert store.get_session_idle_secs(MISSING) is None
    assert store.detect_interruption(MISSING) is None
    for call in (
        lambda: store.set_session_title("../x", "t"),
        lambda: store.set_session_mode("", "m"),
        lambda: store.get_session_mode("a/b"),
        lambda: store.get_session_idle_secs(".hidden"),
        lambda: store.detect_interruption("x" * 200),
    ):
        with pytest.raises(InvalidSessionIdError):
            call()


def test_bad_title_or_mode_raises_and_writes_nothing(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    before = metadata_path(root, sid).read_bytes()
    with pytest.raises(TypeError, match="title"):
        fstore.set_session_title(sid, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mode"):
        fstore.set_session_mode(sid, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        fstore.set_session_title(sid, "bad \udc80")
    assert metadata_path(root, sid).read_bytes() == before


@pytest.mark.parametrize("which", ["title", "mode"])
def test_a_failing_rename_leaves_the_old_header(
    fstore: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    sid = fstore.create_session("main", ".")
    fstore.set_session_title(sid, "old title")
    fstore.set_session_mode(sid, "old mode")
    before = metadata_path(root, sid).read_bytes()

    def broken(src: Path, dst: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(koda_files._files.fileops, "rename", broken)
    with pytest.raises(OSError):
        if which == "title":
            fstore.set_session_title(sid, "new title")
        else:
            fstore.set_session_mode(sid, "new mode")
    monkeypatch.undo()
    assert metadata_path(root, sid).read_bytes() == before
    assert sorted(p.name for p in session_dir(root, sid).iterdir() if p.name.endswith(".tmp")) == []
    assert FileStore(root).get_session_mode(sid) == "old mode"


def test_kill9_during_a_title_write_leaves_old_or_new_header(tmp_path: Path) -> None:
    template = tmp_path / "template"
    store = FileStore(template, durability="fsync")
    sid = store.create_session("main", ".")
    store.set_session_title(sid, "old")
    old = metadata_path(template, sid).read_bytes()
    big = "n" * (scaled(6, 60) << 20)

    def body_for(root: Path) -> Callable[[int], None]:
        def body(wfd: int) -> None:
            s = FileStore(root, durability="fsync")
            send(wfd, "go")
            s.set_session_title(sid, big)
            send(wfd, "done")

        return body

    scratch = copy_root(template, tmp_path / "scratch")
    child = fork_child(body_for(scratch))
    child.read_until(b"go\n")
    t0 = time.perf_counter()
    child.read_until(b"done\n")
    duration = time.perf_counter() - t0
    child.finish()
    new = metadata_path(scratch, sid).read_bytes()
    assert json.loads(new)["title"] == big

    outcomes = set()
    points = 8
    for k in range(points):
        root = copy_root(template, tmp_path / f"kill-{k}")
        child = fork_child(body_for(root))
        child.read_until(b"go\n")
        time.sleep(duration * 3 * k / (points - 1))
        child.kill()
        child.wait()
        child.output()
        got = metadata_path(root, sid).read_bytes()
        assert got in (old, new), f"kill point {k} left a header that is neither old nor new"
        outcomes.add("old" if got == old else "new")
        s = FileStore(root)
        assert [i.title for i in s.list_sessions(1, ".")] == [json.loads(got)["title"]]
        s.set_session_mode(sid, "after")  # the next write succeeds
        assert s.get_session_mode(sid) == "after"
    assert "old" in outcomes  # (which kills land after the commit depends on the machine's timing)


# ── idle time ──


def test_idle_is_none_until_the_first_access(store: FileStore, root: Path) -> None:
    sid = store.create_session("main", ".")
    _age(messages_path(root, sid), 1000)
    assert store.get_session_idle_secs(sid) is None  # created, never used
    store.set_session_title(sid, "t")
    store.set_todo(sid, "- [ ] x")
    assert store.get_session_idle_secs(sid) is None  # metadata writes are not accesses
    assert store.load_all_messages(sid) == []
    assert store.get_session_idle_secs(sid) is None  # neither are other reads

    store.load_context(sid)
    assert store.get_session_idle_secs(sid) == 0
    access = session_dir(root, sid) / ".access"
    assert access.read_bytes() == b""
    assert stat.S_IMODE(os.stat(access).st_mode) == 0o600


def test_idle_counts_from_the_last_insert_or_load_context(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    fstore.insert_message(sid, Role.USER, "hi")
    assert fstore.get_session_idle_secs(sid) == 0
    access = session_dir(root, sid) / ".access"
    assert not access.exists()  # an insert needs no extra file: the log's mtime is the access
    _age(messages_path(root, sid), 125.5)
    idle = fstore.get_session_idle_secs(sid)
    assert idle is not None and 125 <= idle <= 127
    assert fstore.last_user_message(sid) == "hi"
    assert (fstore.get_session_idle_secs(sid) or 0) >= 125  # only inserts and load_context count

    fstore.load_context(sid)
    assert fstore.get_session_idle_secs(sid) == 0
    _age(access, 50)
    idle = fstore.get_session_idle_secs(sid)
    assert idle is not None and 50 <= idle <= 52  # the newer of the two
    fstore.insert_message(sid, Role.ASSISTANT, "hello")
    assert fstore.get_session_idle_secs(sid) == 0


def test_idle_is_right_across_processes(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    fstore.insert_message(sid, Role.USER, "hi")
    fstore.load_context(sid)
    for name in ("messages.jsonl", ".access"):
        _age(session_dir(root, sid) / name, 600)
    assert (fstore.get_session_idle_secs(sid) or 0) >= 600
    code = "import sys; from koda_files import FileStore; FileStore(sys.argv[1]).load_context(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(root), sid], check=True)
    assert fstore.get_session_idle_secs(sid) in (0, 1)
    assert FileStore(root).get_session_idle_secs(sid) in (0, 1)


def test_an_unwritable_access_file_does_not_break_load_context(
    fstore: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fstore.create_session("main", ".")
    fstore.insert_message(sid, Role.USER, "hi")

    def read_only(path: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(koda_files._session.session, "touch", read_only)
    assert [m.content for m in fstore.load_context(sid)] == ["hi"]
    assert not (session_dir(root, sid) / ".access").exists()
    assert fstore.get_session_idle_secs(sid) in (0, 1)  # the insert still counts


def test_last_accessed_can_be_read_and_restored(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    assert fstore.session_last_accessed(sid) is None
    fstore.set_session_last_accessed(sid, "2020-01-02T03:04:05.000000Z")
    assert fstore.session_last_accessed(sid) == "2020-01-02T03:04:05.000000Z"
    assert (fstore.get_session_idle_secs(sid) or 0) > 5 * 365 * 86400
    fstore.insert_message(sid, Role.USER, "hi")
    fstore.set_session_last_accessed(sid, "2020-01-02T03:04:05Z")
    # the log's mtime never goes back before its newest message
    assert fstore.get_session_idle_secs(sid) in (0, 1)
    with pytest.raises(ValueError):
        fstore.set_session_last_accessed(sid, "yesterday")
    with pytest.raises(SessionNotFoundError):
        fstore.set_session_last_accessed(MISSING, "2020-01-02T03:04:05Z")


# ── completed messages ──


def test_mark_message_complete_sets_completed_at(store: FileStore, root: Path) -> None:
    sid = store.create_session("main", ".")
    a = store.insert_message(sid, Role.USER, "q")
    assert store.load_all_messages(sid)[0].completed_at is None
    store.mark_message_complete(a)
    b = store.insert_message(sid, Role.ASSISTANT, "a")
    store.mark_message_complete(b)
    c = store.insert_message(sid, Role.USER, "interrupted")
    for s in (store, FileStore(root)):
        stamps = [m.completed_at for m in s.load_all_messages(sid)]
        assert stamps[0] is not None and stamps[1] is not None and stamps[2] is None
        assert stamps[0] <= stamps[1] and stamps[0].endswith("Z")
        assert [m.completed_at for m in s.load_context(sid)] == stamps
        assert [m.id for m in s.load_context(sid)] == [a, b, c]
    # the annotation line: id and time, no role; message lines are untouched
    assert _annotations(root, sid) == [{"id": a, "completed_at": stamps[0]}, {"id": b, "completed_at": stamps[1]}]
    assert store.list_sessions(1, ".")[0].message_count == 3
    assert store.check().ok


def test_marking_again_is_a_no_op(store: FileStore, root: Path) -> None:
    sid = store.create_session("main", ".")
    a = store.insert_message(sid, Role.USER, "q")
    store.mark_message_complete(a)
    first = store.load_all_messages(sid)[0].completed_at
    log = messages_path(root, sid).read_bytes()
    store.mark_message_complete(a)
    FileStore(root).mark_message_complete(a)  # a store with nothing cached reads the log backwards
    assert messages_path(root, sid).read_bytes() == log
    assert store.load_all_messages(sid)[0].completed_at == first


def test_mark_message_complete_refuses_an_unknown_or_non_int_id(fstore: FileStore) -> None:
    with pytest.raises(KodaFilesError, match="424242"):
        fstore.mark_message_complete(424242)  # no root yet
    sid = fstore.create_session("main", ".")
    a = fstore.insert_message(sid, Role.USER, "q")
    with pytest.raises(KodaFilesError, match=str(a + 1)):
        fstore.mark_message_complete(a + 1)
    with pytest.raises(TypeError):
        fstore.mark_message_complete(True)
    with pytest.raises(TypeError):
        fstore.mark_message_complete("1")  # type: ignore[arg-type]
    fstore.delete_session(sid)
    with pytest.raises(KodaFilesError, match=str(a)):
        fstore.mark_message_complete(a)


def test_mark_finds_an_old_message_in_an_old_session(fstore: FileStore, root: Path) -> None:
    old = fstore.create_session("main", ".")
    old_ids = [fstore.insert_message(old, Role.USER, f"old {i}") for i in range(300)]
    others = [fstore.create_session("main", ".") for _ in range(3)]
    for sid in others:
        for i in range(50):
            fstore.insert_message(sid, Role.ASSISTANT, f"newer {i}")
    _age(messages_path(root, old), 3600)
    fresh = FileStore(root)  # nothing remembered: found by reading the sessions backwards
    fresh.mark_message_complete(old_ids[3])
    fresh.mark_message_complete(old_ids[-1])
    stamps = {m.id: m.completed_at for m in FileStore(root).load_all_messages(old)}
    assert stamps[old_ids[3]] is not None and stamps[old_ids[-1]] is not None
    assert sum(v is not None for v in stamps.values()) == 2
    assert all(m.completed_at is None for sid in others for m in fresh.load_all_messages(sid))
    # the store that has the session loaded sees the mark another store made
    assert fstore.load_context(old)[3].completed_at == stamps[old_ids[3]]


def test_mark_after_compaction_finds_summary_and_archived(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    ids = [fstore.insert_message(sid, Role.USER, f"m{i}") for i in range(6)]
    fstore.compact_session(sid, "summary", 2)
    summary = next(m for m in fstore.load_all_messages(sid) if m.role is Role.SYSTEM)
    fresh = FileStore(root)
    fresh.mark_message_complete(summary.id)
    fresh.mark_message_complete(ids[0])  # archived
    by_id = {m.id: m for m in fstore.load_all_messages(sid)}
    assert by_id[summary.id].completed_at is not None and by_id[ids[0]].completed_at is not None
    # the hint is written complete, as koda writes it
    assert [m.completed_at is not None for m in fstore.load_context(sid)] == [True, True, False, False]


def test_warm_context_sees_a_mark_of_an_earlier_message(fstore: FileStore) -> None:
    sid = fstore.create_session("main", ".")
    q = fstore.insert_message(sid, Role.USER, "q")
    call = fstore.insert_message(sid, Role.ASSISTANT, None, _calls("c1"))
    fstore.insert_message(sid, Role.TOOL, "r", None, "c1")
    lost = fstore.insert_message(sid, Role.ASSISTANT, None, _calls("c9"))  # dropped by sanitising
    assert [m.id for m in fstore.load_context(sid)] == [q, call, call + 1]
    fstore.mark_message_complete(call)
    fstore.mark_message_complete(lost)
    ctx = fstore.load_context(sid)
    assert [m.id for m in ctx] == [q, call, call + 1]
    assert [m.completed_at is not None for m in ctx] == [False, True, False]
    assert ctx == FileStore(fstore.root).load_context(sid)


def test_a_hand_written_annotation_is_honoured(fstore: FileStore, root: Path, caplog: pytest.LogCaptureFixture) -> None:
    sid = fstore.create_session("main", ".")
    a = fstore.insert_message(sid, Role.USER, "q")
    b = fstore.insert_message(sid, Role.ASSISTANT, "a")
    fstore.load_context(sid)
    append_to_log(root, sid, b'{"id": %d, "completed_at": "2026-01-02T03:04:05.000000Z"}\r\n' % b)
    append_to_log(root, sid, b'{"id":999999,"completed_at":"2026-01-02T03:04:05.000000Z"}\n')  # no such message
    append_to_log(root, sid, b'{"completed_at":"2026-01-02T03:04:05.000000Z","id":%d}\n' % a)
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        for s in (fstore, FileStore(root)):
            stamps = [m.completed_at for m in s.load_context(sid)]
            assert stamps == ["2026-01-02T03:04:05.000000Z"] * 2
            assert s.last_assistant_message(sid) == "a"
            assert s.list_sessions(1, ".")[0].message_count == 2
            assert s.recent_user_messages(5) == ["q"]
        report = fstore.check()
    assert report.ok, report.problems
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_first_completion_wins(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    a = fstore.insert_message(sid, Role.USER, "q")
    append_to_log(root, sid, b'{"id":%d,"completed_at":"2026-01-01T00:00:00.000000Z"}\n' % a)
    append_to_log(root, sid, b'{"id":%d,"completed_at":"2027-01-01T00:00:00.000000Z"}\n' % a)
    assert fstore.load_all_messages(sid)[0].completed_at == "2026-01-01T00:00:00.000000Z"
    fstore.compact_session(sid, "s", 0)
    assert FileStore(root).load_all_messages(sid)[0].completed_at == "2026-01-01T00:00:00.000000Z"
    assert len(_annotations(root, sid)) == 2  # compaction edits no line: both stay as written


@pytest.mark.parametrize("warm", [True, False], ids=["cached-log", "cold-log"])
def test_compaction_keeps_annotation_lines_and_every_mark(fstore: FileStore, root: Path, warm: bool) -> None:
    sid = fstore.create_session("main", ".")
    ids = []
    for i in range(6):
        ids.append(fstore.insert_message(sid, Role.USER if i % 2 == 0 else Role.ASSISTANT, f"m{i}"))
        if i != 4:
            fstore.mark_message_complete(ids[-1])
    before = {m.id: m.completed_at for m in fstore.load_all_messages(sid)}
    lines_before = raw_lines(messages_path(root, sid))
    store = fstore if warm else FileStore(root)
    if warm:
        store.load_context(sid)
    assert store.compact_session(sid, "summary", 3) == 3
    lines = raw_lines(messages_path(root, sid))
    # No line edited: the summary and the hint are inserted before the kept tail (m3's line).
    tail = lines_before.index(next(x for x in lines_before if b'"content":"m3"' in x))
    assert lines[:tail] + lines[tail + 2 :] == lines_before
    assert len(_annotations(root, sid)) == 5
    for s in (store, FileStore(root)):
        after = {m.id: m.completed_at for m in s.load_all_messages(sid)}
        assert {k: after[k] for k in before} == before
        assert [m.compacted_at is not None for m in s.load_all_messages(sid)] == [True] * 3 + [False] * 5
    hint = json.loads(lines[tail + 1])
    assert "completed_at" in hint  # the hint is written complete, as koda writes it
    assert store.check().ok


def test_purge_drops_the_annotations_of_purged_messages(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main", ".")
    ids = [fstore.insert_message(sid, Role.USER, f"m{i}") for i in range(4)]
    fstore.compact_session(sid, "summary", 2)
    # marks after the compaction: annotation lines for an archived and for an active message
    fstore.mark_message_complete(ids[0])
    fstore.mark_message_complete(ids[3])
    assert [a["id"] for a in _annotations(root, sid)] == [ids[0], ids[3]]
    _age(messages_path(root, sid), 300)
    kept_lines = raw_lines(messages_path(root, sid))[2:]  # from the summary on
    assert fstore.purge_compacted(0) == 2
    assert [a["id"] for a in _annotations(root, sid)] == [ids[3]]
    assert [x for x in raw_lines(messages_path(root, sid))] == [
        x for x in kept_lines if b'"id":%d,"completed_at"' % ids[0] not in x
    ]
    by_id = {m.id: m.completed_at for m in FileStore(root).load_all_messages(sid)}
    assert ids[0] not in by_id and by_id[ids[3]] is not None
    assert (fstore.get_session_idle_secs(sid) or 0) >= 300  # a purge is not a use of the session


# ── interruption ──


def test_detect_interruption_names_what_the_session_ended_on(store: FileStore, root: Path) -> None:
    sid = store.create_session("main", ".")
    assert store.detect_interruption(sid) is None  # empty
    long_prompt = "p" * 79 + "é" + "tail" * 50
    store.insert_message(sid, Role.USER, long_prompt)
    assert store.detect_interruption(sid) == Interruption("prompt", long_prompt[:80])
    assert Interruption("prompt", "x").kind == "prompt"
    store.insert_message(sid, Role.ASSISTANT, None, _calls("c1"))
    # the call is unanswered, so the model would get the prompt last: it is reported
    assert store.detect_interruption(sid) == Interruption("prompt", long_prompt[:80])
    store.insert_message(sid, Role.TOOL, "result", None, "c1")
    assert store.detect_interruption(sid) == Interruption("tool")
    store.insert_message(sid, Role.ASSISTANT, "done")
    assert store.detect_interruption(sid) is None
    store.insert_message(sid, Role.USER, None)
    assert store.detect_interruption(sid) == Interruption("prompt", "")
    store.insert_message(sid, Role.SYSTEM, "note")
    assert store.detect_interruption(sid) == Interruption("prompt", "")  # system messages are skipped
    store.insert_message(sid, Role.USER, "short")
    store.compact_session(sid, "summary", 1)  # the preserved tail keeps the unanswered prompt last
    assert FileStore(root).detect_interruption(sid) == Interruption("prompt", "short")
    store.compact_session(sid, "summary", 0)  # everything archived: the hint is last
    assert store.detect_interruption(sid) is None


def test_detect_interruption_reads_only_the_end(
    fstore: FileStore, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cold store answers from the log's end: damage at the start is never read (a full read
    would log a warning naming line 1), and the answer is the one a full read gives."""
    sid = fstore.create_session("main", ".")
    for i in range(2000):
        fstore.insert_message(sid, Role.USER if i % 2 else Role.ASSISTANT, f"message {i} " + "x" * 200)
    with open(messages_path(root, sid), "r+b") as f:
        f.write(b"#")  # the first line no longer parses
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        assert FileStore(root).detect_interruption(sid) == Interruption("prompt", ("message 1999 " + "x" * 200)[:80])
    assert "line 1" not in caplog.text and caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        FileStore(root).load_context(sid)  # the same damage, read whole: named
    assert "line 1" in caplog.text


def test_detect_interruption_reads_on_when_the_end_cannot_say(fstore: FileStore, root: Path) -> None:
    """A result after the last prompt that answers a call made before it, or an unfinished reply
    in a session whose marks may be anywhere, need the whole log: the answer is still exact."""
    sid = fstore.create_session("main", ".")
    calls = '[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]'
    fstore.insert_message(sid, Role.ASSISTANT, None, calls)
    fstore.insert_message(sid, Role.USER, "meanwhile")
    fstore.insert_message(sid, Role.TOOL, "out", None, "c1")
    assert FileStore(root).detect_interruption(sid) == Interruption("tool")
    other = fstore.create_session("main", ".")
    done = fstore.insert_message(other, Role.ASSISTANT, "first answer")
    fstore.mark_message_complete(done)  # the session now tracks completion (a mark, not the header)
    fstore.insert_message(other, Role.USER, "question")
    fstore.insert_message(other, Role.ASSISTANT, "cut off")  # never marked: left out
    assert FileStore(root).detect_interruption(other) == Interruption("prompt", "question")


# ── async ──


def test_async_store_has_every_new_method(astore: AsyncFileStore, root: Path) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main", ".")
        assert await astore.get_session_idle_secs(sid) is None
        await astore.set_session_title(sid, "title")
        await astore.set_session_mode(sid, "auto")
        assert await astore.get_session_mode(sid) == "auto"
        q = await astore.insert_message(sid, Role.USER, "question")
        assert await astore.detect_interruption(sid) == Interruption("prompt", "question")
        await astore.mark_message_complete(q)
        [m] = await astore.load_context(sid)
        assert m.completed_at is not None
        assert await astore.get_session_idle_secs(sid) == 0
        [info] = await astore.list_sessions(5, ".")
        assert (info.title, info.mode) == ("title", "auto")
        with pytest.raises(SessionNotFoundError):
            await astore.set_session_title(MISSING, "t")
        with pytest.raises(SessionNotFoundError):
            await astore.set_session_mode(MISSING, "m")
        with pytest.raises(KodaFilesError):
            await astore.mark_message_complete(q + 100)
        assert await astore.get_session_mode(MISSING) is None
        assert await astore.get_session_idle_secs(MISSING) is None
        assert await astore.detect_interruption(MISSING) is None

    asyncio.run(scenario())
    reopened = AsyncFileStore(root)

    async def after() -> None:
        [info] = await reopened.list_sessions(5, ".")
        assert (info.title, info.mode) == ("title", "auto")
        assert await reopened.get_session_mode(info.id) == "auto"
        [m] = await reopened.load_all_messages(info.id)
        assert m.completed_at is not None

    asyncio.run(after())
