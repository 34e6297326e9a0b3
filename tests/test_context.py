"""The context the model gets: call groups, repeated results, interrupted replies, compaction
boundaries and koda.db round trips (README, "The context the model gets").

Tests that follow koda's own tests (koda-core/src/db/tests.rs) carry their names.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from _helpers import (
    Msg,
    append_line,
    as_msg,
    metadata_path,
    read_calls,
    sanitize_indices,
    tool_calls_json,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koda_files import FileStore, Interruption, Message, Role, export_sqlite, import_sqlite
from koda_files._session.completion import COMPACTION_HINT

SCRIPT = Path(sys.executable).parent / "koda-files"  # the installed console script


def _ctx(store: FileStore, sid: str) -> list[tuple[str, str | None]]:
    return [(m.role.value, m.content) for m in store.load_context(sid)]


def _assistant(store: FileStore, sid: str, content: str | None, calls: str | None = None) -> int:
    """An assistant message marked complete, as a caller that tracks completion writes it."""
    mid = store.insert_message(sid, Role.ASSISTANT, content, calls)
    store.mark_message_complete(mid)
    return mid


# ── the rule, checked on its own terms ──


def check_rule(stored: list[Message], context: list[Message], tracking: bool) -> None:
    """The README's rule, checked without the reference sanitiser's way of computing it."""
    active = [m for m in stored if m.compacted_at is None]
    position = {m.id: i for i, m in enumerate(active)}
    assert [position[m.id] for m in context] == sorted(position[m.id] for m in context)  # a subsequence
    for j, m in enumerate(context):
        ids, readable = read_calls(m.tool_calls) if m.role is Role.ASSISTANT else ([], True)
        if m.role is Role.ASSISTANT:
            assert readable and (ids or (m.content or "").strip()), f"empty or unreadable assistant {m}"
            assert not (tracking and m.completed_at is None), f"interrupted assistant kept {m}"
        for call in ids:  # answered by exactly one result after it, before the next call of that id
            answers = []
            for later in context[j + 1 :]:
                if later.role is Role.ASSISTANT and call in read_calls(later.tool_calls)[0]:
                    break
                if later.role is Role.TOOL and later.tool_call_id == call:
                    answers.append(later)
            assert len(answers) == 1, f"call {call} of {m.id} answered {len(answers)} times"
            stored_answers = []  # the newest of those stored for this call
            for later in active[position[m.id] + 1 :]:
                if later.role is Role.ASSISTANT and call in read_calls(later.tool_calls)[0]:
                    break
                if later.role is Role.TOOL and later.tool_call_id == call:
                    stored_answers.append(later)
            assert answers[0] == stored_answers[-1]
        if m.role is Role.TOOL:  # answers a call made by an earlier assistant message of the context
            assert any(
                c.role is Role.ASSISTANT and m.tool_call_id in read_calls(c.tool_calls)[0] for c in context[:j]
            ), f"result {m} answers no call of the context"


def tracks(store: FileStore, sid: str) -> bool:
    header = json.loads(metadata_path(store.root, sid).read_text())
    marked = any(m.completed_at and m.content != COMPACTION_HINT for m in store.load_all_messages(sid))
    return header.get("tracks_completion") is True or marked


IDS = ["a", "b", "c"]
calls_st = st.one_of(
    st.none(),
    st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True).map(lambda ids: tool_calls_json(*ids)),
    st.sampled_from(["[]", "null", '[{"id":"a"},{"id":"a"}]', '[{"name":"f"}]', "nope"]),
)
step_st = st.one_of(
    st.tuples(st.just("user"), st.sampled_from(["q", " "])),
    st.tuples(st.just("assistant"), st.sampled_from([None, "", " \n", "text"]), calls_st, st.booleans()),
    st.tuples(st.just("tool"), st.sampled_from([*IDS, "unknown", None])),
    st.tuples(st.just("system"), st.just("sys")),
    st.tuples(st.just("compact"), st.integers(min_value=0, max_value=6)),
    st.tuples(st.just("hand"), st.sampled_from(IDS), st.booleans()),  # a line written by hand
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, max_size=25), track_root=st.booleans())
def test_context_rule_holds_for_any_history(steps: list[tuple[object, ...]], track_root: bool) -> None:
    """Parallel calls, partial and repeated answers, results before calls, unknown ids, blank
    assistants, compactions anywhere and hand-written lines: the rule holds on every one, and the
    code agrees with the reference sanitiser (also warm, after each step)."""
    scratch = Path(tempfile.mkdtemp())
    try:
        _run_history(scratch / "root", steps, track_root)
    finally:
        shutil.rmtree(scratch)


def _run_history(root: Path, steps: list[tuple[object, ...]], track_root: bool) -> None:
    store = FileStore(root, tracks_completion=track_root)
    sid = store.create_session("main", ".")
    for step in steps:
        kind = step[0]
        if kind == "compact":
            store.compact_session(sid, "summary", int(step[1]))  # type: ignore[call-overload]
        elif kind == "hand":
            last = max((m.id for m in store.load_all_messages(sid)), default=0)
            line: dict[str, object] = {"id": last + 1000, "role": "tool", "tool_call_id": step[1], "content": "by hand"}
            if step[2]:
                line = {"id": last + 1000, "role": "assistant", "tool_calls": tool_calls_json(str(step[1]))}
            append_line(root, sid, line)
        elif kind == "assistant":
            mid = store.insert_message(sid, Role.ASSISTANT, step[1], step[2])  # type: ignore[arg-type]
            if step[3]:
                store.mark_message_complete(mid)
        elif kind == "tool":
            store.insert_message(sid, Role.TOOL, "result", None, step[1])  # type: ignore[arg-type]
        else:
            store.insert_message(sid, Role(kind), step[1])  # type: ignore[arg-type]
        stored = store.load_all_messages(sid)
        context = store.load_context(sid)
        tracking = tracks(store, sid)
        check_rule(stored, context, tracking)
        active = [m for m in stored if m.compacted_at is None]
        assert context == [active[i] for i in sanitize_indices([as_msg(m) for m in active], tracking)]
        # A cold store reads only the log's end when that is enough: it must say the same.
        assert FileStore(root).detect_interruption(sid) == _how_it_ends(context)
    assert FileStore(root).load_context(sid) == store.load_context(sid)  # cold agrees with warm


def _how_it_ends(context: list[Message]) -> Interruption | None:
    """`detect_interruption`'s rule applied to a whole context."""
    last = next((m for m in reversed(context) if m.role is not Role.SYSTEM), None)
    if last is None or last.role is Role.ASSISTANT:
        return None
    return Interruption("prompt", (last.content or "")[:80]) if last.role is Role.USER else Interruption("tool")


def test_reference_sanitiser_on_the_rules_cases() -> None:
    """The reference itself, so that a wrong reference cannot pass silently."""
    rows = [
        Msg(Role.TOOL, "early", None, "a"),  # 0: before its call
        Msg(Role.ASSISTANT, None, tool_calls_json("a", "b"), None),  # 1: both answered
        Msg(Role.TOOL, "stub", None, "a"),  # 2: superseded by 4
        Msg(Role.TOOL, "rb", None, "b"),  # 3
        Msg(Role.TOOL, "final", None, "a"),  # 4
        Msg(Role.ASSISTANT, "x", tool_calls_json("c", "d"), None),  # 5: d unanswered
        Msg(Role.TOOL, "rc", None, "c"),  # 6: goes with 5
        Msg(Role.ASSISTANT, "  ", "[]", None),  # 7: "[]" is no calls, and the text is blank
        Msg(Role.TOOL, "nobody", None, None),  # 8
        Msg(Role.ASSISTANT, "ok", None, None),  # 9: not complete
    ]
    assert sanitize_indices(rows) == [1, 3, 4, 9]
    assert sanitize_indices(rows, tracking=True) == []


# ── sequences that must reach the model well formed ──


def test_partly_answered_parallel_calls_leave_no_orphan_result(store: FileStore) -> None:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "go")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c1", "c2"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")
    assert _ctx(store, sid) == [("user", "go")]
    store.insert_message(sid, Role.TOOL, "r2", None, "c2")  # answered at last: the turn comes back whole
    assert _ctx(store, sid) == [("user", "go"), ("assistant", None), ("tool", "r1"), ("tool", "r2")]


def test_a_result_stored_before_its_call_answers_nothing(store: FileStore) -> None:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "go")
    store.insert_message(sid, Role.TOOL, "early", None, "a")
    store.insert_message(sid, Role.ASSISTANT, "calling", tool_calls_json("a"))
    assert _ctx(store, sid) == [("user", "go")]


def test_compaction_keeps_a_call_group_whole(store: FileStore) -> None:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c1"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")
    assert store.compact_session(sid, "summary", 1) == 1  # the tail of 1 starts at r1: its call stays
    assert _ctx(store, sid) == [
        ("system", "summary"),
        ("assistant", COMPACTION_HINT),
        ("assistant", None),
        ("tool", "r1"),
    ]
    store.insert_message(sid, Role.ASSISTANT, "x", tool_calls_json("p", "q"))
    store.insert_message(sid, Role.TOOL, "rp", None, "p")
    store.insert_message(sid, Role.TOOL, "rq", None, "q")
    store.insert_message(sid, Role.TOOL, "rp again", None, "p")  # the newest answer of p, far from its call
    assert store.compact_session(sid, "again", 1) == 4  # summary, hint, c1's group and q archived
    assert _ctx(store, sid) == [
        ("system", "again"), ("assistant", COMPACTION_HINT), ("assistant", "x"), ("tool", "rq"), ("tool", "rp again")
    ]


def test_detect_interruption_after_a_dropped_call_and_an_interrupted_reply(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "u" * 100)
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("never"))
    assert store.detect_interruption(sid) == Interruption("prompt", "u" * 80)
    _assistant(store, sid, None, tool_calls_json("t"))
    store.insert_message(sid, Role.TOOL, "r", None, "t")
    assert store.detect_interruption(sid) == Interruption("tool")
    _assistant(store, sid, "done")
    assert store.detect_interruption(sid) is None
    store.insert_message(sid, Role.USER, "again")
    store.insert_message(sid, Role.ASSISTANT, "partial")  # never marked: the session tracks completion
    assert store.detect_interruption(sid) == Interruption("prompt", "again")
    idle = store.get_session_idle_secs(sid)
    assert idle is not None  # detect_interruption reads the context, not as an access


# ── koda's tests (koda-core/src/db/tests.rs) ──


def test_dedupe_keeps_latest_for_same_call_id(store: FileStore) -> None:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "please explore")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("tc1"))
    store.insert_message(sid, Role.TOOL, "started (agent:1)", None, "tc1")
    store.insert_message(sid, Role.USER, "meanwhile")
    store.insert_message(sid, Role.TOOL, "[completed] Found 3 issues", None, "tc1")
    tools = [m.content for m in store.load_context(sid) if m.role is Role.TOOL]
    assert tools == ["[completed] Found 3 issues"]
    assert sum(m.role is Role.TOOL for m in store.load_all_messages(sid)) == 2


def test_dedupe_handles_many_call_ids_independently(store: FileStore) -> None:
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("tc1", "tc2", "tc3"))
    for call, text in [("tc1", "tc1 stub"), ("tc2", "tc2 stub"), ("tc3", "tc3 only"), ("tc1", "tc1 final"),
                       ("tc2", "tc2 mid"), ("tc2", "tc2 final")]:
        store.insert_message(sid, Role.TOOL, text, None, call)
    got = {m.tool_call_id: m.content for m in store.load_context(sid) if m.role is Role.TOOL}
    assert got == {"tc1": "tc1 final", "tc2": "tc2 final", "tc3": "tc3 only"}


def test_dedupe_via_load_context_keeps_only_latest_bg_completion(root: Path) -> None:
    store = FileStore(root, tracks_completion=True)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "please explore")
    _assistant(store, sid, "I'll spawn an explorer", tool_calls_json("tc1"))
    store.insert_message(sid, Role.TOOL, "Background agent 'explore' started (agent:1).", None, "tc1")
    store.insert_message(sid, Role.TOOL, "[Background agent 'explore' completed] Found 3 issues.", None, "tc1")
    tools = [m for m in store.load_context(sid) if m.role is Role.TOOL]
    assert [m.content for m in tools] == ["[Background agent 'explore' completed] Found 3 issues."]


def test_load_context_excludes_incomplete_assistant_messages(root: Path) -> None:
    store = FileStore(root, tracks_completion=True)  # koda marks every finished reply
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "research inference")
    store.insert_message(sid, Role.ASSISTANT, "I'll start by looking at")  # interrupted in the first turn
    assert _ctx(store, sid) == [("user", "research inference")]
    assert len(store.load_all_messages(sid)) == 2


def test_load_context_excludes_incomplete_in_a_later_session_of_a_root_that_saw_marks(root: Path) -> None:
    marker = FileStore(root)  # no declaration: the first mark on the root turns tracking on
    first = marker.create_session("main", ".")
    _assistant(marker, first, "hi")
    store = FileStore(root)  # another process
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    store.insert_message(sid, Role.ASSISTANT, "partial")
    assert _ctx(store, sid) == [("user", "hello")]
    assert store.detect_interruption(sid) == Interruption("prompt", "hello")


def test_load_context_includes_completed_assistant_messages(root: Path) -> None:
    store = FileStore(root, tracks_completion=True)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    mid = store.insert_message(sid, Role.ASSISTANT, "hi there!")
    assert _ctx(store, sid) == [("user", "hello")]
    store.mark_message_complete(mid)  # the stream finished: the reply joins the cached context
    assert _ctx(store, sid) == [("user", "hello"), ("assistant", "hi there!")]


def test_interrupted_turn_detected_after_incomplete_filtered(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    _assistant(store, sid, "hi!")
    store.insert_message(sid, Role.USER, "research inference")
    store.insert_message(sid, Role.ASSISTANT, "partial response")
    assert _ctx(store, sid) == [("user", "hello"), ("assistant", "hi!"), ("user", "research inference")]
    assert FileStore(root).detect_interruption(sid) == Interruption("prompt", "research inference")


def test_a_caller_that_never_marks_loses_nothing(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    store.insert_message(sid, Role.ASSISTANT, "hi")  # never marked, and nothing else is
    assert store.compact_session(sid, "summary", 1) == 1  # the hint, written complete, turns no tracking on
    store.insert_message(sid, Role.ASSISTANT, "more")
    assert _ctx(store, sid) == [
        ("system", "summary"), ("assistant", COMPACTION_HINT), ("assistant", "hi"), ("assistant", "more")
    ]
    assert not (root / ".tracks-completion").exists()
    assert FileStore(root).detect_interruption(sid) is None


# ── koda.db round trips ──


def _cli(root: Path, *args: str) -> None:
    subprocess.run([str(SCRIPT), "--root", str(root), *args], check=True, capture_output=True)


def test_round_trip_after_compaction_and_purge_keeps_the_order(tmp_path: Path) -> None:
    src_root = tmp_path / "src"
    src = FileStore(src_root)
    sid = src.create_session("main", ".")
    src.insert_message(sid, Role.USER, "q1")
    src.insert_message(sid, Role.ASSISTANT, "a1")
    src.insert_message(sid, Role.USER, "q2")
    src.insert_message(sid, Role.ASSISTANT, "a2")
    src.compact_session(sid, "summary", 2)
    src.insert_message(sid, Role.USER, "q3")
    src.compact_session(sid, "second", 4)  # archives the first summary only: its hint stays
    other = src.create_session("main", ".")
    src.insert_message(other, Role.USER, "x")
    src.compact_session(other, "s", 0)
    for purge in (None, 0):
        if purge is not None:
            assert src.purge_compacted(purge) > 0
        db = tmp_path / f"koda-{purge}.db"
        _cli(src_root, "export-sqlite", str(db))
        dst_root = tmp_path / f"dst-{purge}"
        _cli(dst_root, "import-sqlite", str(db))
        dst = FileStore(dst_root)
        for s in (sid, other):
            assert [m.id for m in dst.load_all_messages(s)] == [m.id for m in src.load_all_messages(s)]
            assert [m.id for m in dst.load_context(s)] == [m.id for m in src.load_context(s)]
    assert [m.content for m in src.load_context(sid)] == ["second", COMPACTION_HINT, COMPACTION_HINT, "q2", "a2", "q3"]


def test_sessions_created_in_the_same_second_keep_their_order(tmp_path: Path) -> None:
    db = tmp_path / "koda.db"
    src = FileStore(tmp_path / "src")
    made = [src.create_session("main", tmp_path) for _ in range(4)]
    export_sqlite(src, db)
    with sqlite3.connect(db) as conn:
        by_rowid = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY rowid")]
        conn.execute("UPDATE sessions SET created_at = '2026-01-02 03:04:05'")  # all in one second
        for old in made:  # koda's ids are random: take ones that sort against creation order
            conn.execute("UPDATE sessions SET id = ? WHERE id = ?", (f"{9 - made.index(old)}-koda", old))
    assert by_rowid == made
    dst = FileStore(tmp_path / "dst")
    import_sqlite(db, dst)
    listed = [s.id for s in dst.list_sessions(10, tmp_path)]
    assert listed == ["6-koda", "7-koda", "8-koda", "9-koda"]  # newest (last created) first
    again = tmp_path / "again.db"
    export_sqlite(dst, again)
    with sqlite3.connect(again) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY created_at DESC, rowid DESC")] == listed
