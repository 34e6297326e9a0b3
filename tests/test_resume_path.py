"""The resume path: what a cold `load_context` builds, and the `last_*` queries on a loaded log.

Messages read from a log are the public `Message` type in every respect; a line is checked in
full even when lines of its shape were seen before; one bad line skips only itself; garbage
collection is back as it was after a load; a log's current cache answers `last_*` after one
stat, without waiting on the cache lock.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import os
import pickle
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _helpers import append_line, messages_path, tool_calls_json
from hypothesis import given, settings
from hypothesis import strategies as st

from koda_files import FileStore, Message, Role, TokenUsage
from koda_files._format import framing as framing
from koda_files._format.framing import iter_lines_backwards, lines_containing_backwards
from koda_files._session.messagelog import paused_gc

REPO = Path(__file__).resolve().parent.parent


def _filled(store: FileStore, turns: int = 30) -> str:
    sid = store.create_session("main", "/p")
    for i in range(turns):
        store.insert_message(sid, Role.USER, f"question {i}")
        call = tool_calls_json(f"c{i}")
        store.insert_message(sid, Role.ASSISTANT, f"calling {i}", call, None, TokenUsage(10 + i, 5))
        store.insert_message(sid, Role.TOOL, f"result {i}", None, f"c{i}")
        store.insert_message(sid, Role.ASSISTANT, f"answer {i}", usage=TokenUsage(20, 7))
    return sid


# ── Message ──


def test_a_read_message_is_the_public_type_in_every_respect(root: Path) -> None:
    store = FileStore(root)
    sid = _filled(store, 2)
    loaded = FileStore(root).load_all_messages(sid)
    for m in loaded:
        built = Message(**{f.name: getattr(m, f.name) for f in dataclasses.fields(Message)})
        assert type(m) is Message
        assert m == built and hash(m) == hash(built) and repr(m) == repr(built)
        assert repr(m).startswith(f"Message(id={m.id}, session_id={sid!r}, role=<Role.")
        assert pickle.loads(pickle.dumps(m)) == m
        assert copy.copy(m) == m == copy.deepcopy(m)
        assert dataclasses.replace(m, content="x") == dataclasses.replace(built, content="x")
        assert dataclasses.asdict(m) == dataclasses.asdict(built)
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.content = "changed"  # type: ignore[misc]
        assert not hasattr(m, "__dict__")
    assert len({*loaded}) == len(loaded)  # hashable, distinct


def test_messages_survive_a_trip_through_a_child_process(root: Path) -> None:
    store = FileStore(root)
    sid = _filled(store, 2)
    messages = store.load_context(sid)
    script = "import pickle, sys; sys.stdout.buffer.write(pickle.dumps(pickle.loads(sys.stdin.buffer.read())))"
    out = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(messages), capture_output=True, check=True)
    assert pickle.loads(out.stdout) == messages


# ── decoding ──


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("prompt_tokens", "12", "'prompt_tokens' must be an integer or null"),
        ("content", 7, "'content' must be a string or null"),
        ("id", None, "'id' must be an integer"),
        ("session_id", [], "'session_id' must be a string or null"),
    ],
)
def test_a_line_shaped_like_good_ones_but_of_a_wrong_type_is_rejected(
    root: Path, field: str, value: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines of a known shape skip the per-field checks only when every value has the type seen."""
    store = FileStore(root)
    sid = _filled(store, 3)
    good = json.loads(messages_path(root, sid).read_bytes().splitlines()[-1])
    assert store.load_all_messages(sid)  # lines of this shape are now known to be good
    bad = {**good, "id": 9999, field: value}
    assert list(bad) == list(good) or field == "session_id"
    append_line(root, sid, bad)
    line_no = len(messages_path(root, sid).read_bytes().splitlines())
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        for reader in (store, FileStore(root)):  # warm (an append read) and cold
            assert 9999 not in [m.id for m in reader.load_all_messages(sid)]
    assert f"line {line_no}: skipped, {reason}" in caplog.text
    problems = FileStore(root).check().problems
    assert [p.kind for p in problems] == ["bad-line"] and str(line_no) in str(problems[0])


@pytest.mark.parametrize("bad", [b"{not json", b'{"id": 5, "role": "robot"}', b"[1, 2]", b"   ", b'"text"'])
def test_one_bad_line_in_a_long_log_skips_only_itself(root: Path, bad: bytes) -> None:
    store = FileStore(root)
    sid = _filled(store, 400)
    path = messages_path(root, sid)
    lines = path.read_bytes().splitlines(keepends=True)
    expected = FileStore(root).load_all_messages(sid)
    middle = len(lines) // 2
    path.write_bytes(b"".join(lines[:middle]) + bad + b"\n" + b"".join(lines[middle:]))
    assert FileStore(root).load_all_messages(sid) == expected
    assert FileStore(root).load_context(sid) == store.load_context(sid)


@pytest.mark.parametrize("key", [b'"compacted_at"', b'"\\u0063ompacted_at"'])
def test_a_line_archived_on_its_own_line_is_not_in_the_context(root: Path, key: bytes) -> None:
    """The first layout archived a message by writing `compacted_at` into its line; however
    the key is spelled, a read of many lines at once leaves it out of the context."""
    store = FileStore(root)
    sid = _filled(store, 5)
    archived = b'{"id":900,"role":"user","content":"old question",' + key + b':"2024-01-01T00:00:00Z"}'
    append_line(root, sid, archived)
    append_line(root, sid, {"id": 901, "role": "user", "content": "new question"})
    for reader in (FileStore(root), store):
        assert [m.content for m in reader.load_context(sid)][-2:] == ["answer 4", "new question"]
        assert [m.compacted_at for m in reader.load_all_messages(sid) if m.id == 900] == ["2024-01-01T00:00:00Z"]


def test_a_completion_key_in_a_message_line_turns_tracking_on(root: Path) -> None:
    """A message line carrying `completed_at` (a hand edit) counts as a mark, read in bulk too:
    assistant messages never marked complete are then left out."""
    store = FileStore(root)
    sid = _filled(store, 2)
    assert [m.content for m in FileStore(root).load_context(sid)][-1:] == ["answer 1"]
    append_line(root, sid, {"id": 900, "role": "assistant", "content": "done", "completed_at": "2024-01-01T00:00:00Z"})
    append_line(root, sid, {"id": 901, "role": "assistant", "content": "cut off"})
    assert [m.content for m in FileStore(root).load_context(sid)] == ["question 0", "question 1", "done"]


# ── garbage collection ──


def test_garbage_collection_is_as_it_was_after_a_load(root: Path) -> None:
    store = FileStore(root)
    sid = _filled(store, 50)
    assert gc.isenabled()
    FileStore(root).load_context(sid)
    assert gc.isenabled()
    gc.disable()
    try:
        FileStore(root).load_context(sid)
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
    with pytest.raises(ValueError, match="inside"), paused_gc():
        assert not gc.isenabled()
        raise ValueError("raised inside")
    assert gc.isenabled()


def test_a_big_load_leaves_the_process_own_frozen_objects_frozen(root: Path) -> None:
    """What a big load builds goes straight to the oldest generation, without thawing objects
    the process froze itself (a server that forks after `gc.freeze()` keeps its pages shared)."""
    store = FileStore(root)
    sid = _filled(store, 2600)
    gc.collect()
    context = FileStore(root).load_context(sid)
    allocated: list[None] = [None]  # a young collection would run at this allocation if one were due
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(context[0]) in oldest and id(context[-1]) in oldest and allocated  # no young collection walked them
    mine = [[i] for i in range(100)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        FileStore(root).load_context(sid)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert mine


# ── framing ──


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(
            st.sampled_from([b"", b"x", b"MK", b"aMKb", b"\r", b"long" * 9, b"MKMK", b"\xef\xbb\xbf", b"M", b"K"]),
            st.sampled_from([b"\n", b"\r\n", b""]),
        ),
        max_size=14,
    ),
    first_block=st.sampled_from([1, 2, 3, 5, 64]),
    block=st.sampled_from([4, 7, 16, 1 << 20]),
    cut=st.floats(0, 1),
)
def test_lines_holding_a_marker_are_found_backwards_like_every_line_is(
    pieces: list[tuple[bytes, bytes]],
    first_block: int,
    block: int,
    cut: float,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Lines longer than a read, a marker cut by a read, CRLF, a BOM, an unterminated last line."""
    data = b"".join(text + end for text, end in pieces)
    path = tmp_path_factory.mktemp("lines") / "log"
    path.write_bytes(data)
    end = round(len(data) * cut)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(framing, "_FIRST_BACK_CHUNK", first_block)
            mp.setattr(framing, "_STREAM_CHUNK", block)
            expected = [(offset, line) for offset, line in iter_lines_backwards(fd, end) if b"MK" in line]
            assert list(lines_containing_backwards(fd, b"MK", end)) == expected
    finally:
        os.close(fd)


# ── last_* on a loaded log ──


def test_last_queries_on_a_current_log_take_one_stat_and_no_lock(root: Path) -> None:
    """Each answer is checked against the file (one stat) and read from the cache, without
    waiting for a thread that holds the session's cache lock."""
    store = FileStore(root)
    sid = _filled(store, 40)
    store.load_context(sid)
    store.last_user_message(sid)  # the cache is now known to be current
    handle = store._root.acquire(sid)  # the cached handle the queries use
    store._root.release(handle)
    stats: list[object] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(path)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    held, release, answers = threading.Event(), threading.Event(), []

    def holder() -> None:
        with handle.cache_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "stat", counting_stat)
            asker = threading.Thread(
                target=lambda: answers.extend([store.last_user_message(sid), store.has_pending_tool_calls(sid)])
            )
            asker.start()
            asker.join(5)
            assert answers == ["question 39", False], "the queries waited for the cache lock"
        assert stats == [str(messages_path(root, sid))] * 2
    finally:
        release.set()
        thread.join()
    # And still exact: another process's append is seen by the next query.
    append_line(root, sid, {"id": 5000, "role": "user", "content": "typed elsewhere"})
    append_line(root, sid, {"id": 5001, "role": "assistant", "tool_calls": tool_calls_json("z")})
    assert store.last_user_message(sid) == "typed elsewhere"
    assert store.has_pending_tool_calls(sid)


@pytest.mark.parametrize("edit", ["same size in place", "same size by rename", "cut", "cut, mtime put back"])
def test_last_queries_on_a_current_log_see_a_hand_edit_first(root: Path, edit: str) -> None:
    """The cache the `last_*` queries trust is checked against the file's inode, size and mtime."""
    store = FileStore(root)
    sid = _filled(store, 5)
    store.insert_message(sid, Role.USER, "last question")
    store.load_context(sid)
    assert store.last_user_message(sid) == "last question"  # now answered from the current cache
    path = messages_path(root, sid)
    data, mtime_ns = path.read_bytes(), path.stat().st_mtime_ns
    time.sleep(0.05)  # a person's edit lands on a later tick of the file system clock
    if edit == "same size in place":
        with open(path, "r+b") as f:
            f.write(data.replace(b"last question", b"LAST QUESTION"))
        expected = "LAST QUESTION"
    elif edit == "same size by rename":
        path.with_name("edited").write_bytes(data.replace(b"last question", b"other version"))
        os.replace(path.with_name("edited"), path)
        expected = "other version"
    else:
        with open(path, "r+b") as f:  # in place: the same inode
            f.truncate(len(data) - len(data.splitlines(keepends=True)[-1]))
        if edit == "cut, mtime put back":
            os.utime(path, ns=(mtime_ns, mtime_ns))
        expected = "question 4"
    assert store.last_user_message(sid) == expected
    assert store.last_user_message(sid) == FileStore(root).last_user_message(sid)


def test_last_queries_after_our_own_appends_and_a_compaction(root: Path) -> None:
    store = FileStore(root)
    sid = _filled(store, 5)
    store.load_context(sid)
    rng = random.Random(7)
    for i in range(30):
        action = rng.choice(["user", "call", "answer", "compact", "ask"])
        if action == "user":
            store.insert_message(sid, Role.USER, f"typed {i}")
        elif action == "call":
            store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json(f"k{i}"))
        elif action == "answer":
            store.insert_message(sid, Role.ASSISTANT, f"said {i}")
        elif action == "compact":
            store.compact_session(sid, f"summary {i}", rng.randint(0, 3))
        fresh = FileStore(root)
        for ask in (FileStore.last_user_message, FileStore.last_assistant_message, FileStore.has_pending_tool_calls):
            assert ask(store, sid) == ask(fresh, sid), (i, action, ask.__name__)


def test_the_benchmark_runs_the_resume_workloads_alone(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--messages", "100", "--repeat", "1"]
    run = subprocess.run([*command, "--tmp", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for row in ("load_context 100 msgs, cold", "load_context 100 msgs, warm", "has_pending_tool_calls (100 msgs)"):
        assert row in out
    assert "both stores gave the same answers" in out  # on this conversation they do
    assert "list_sessions" not in out and "insert_message" not in out
