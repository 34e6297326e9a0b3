"""koda's newest persistence tests (db/tests.rs, persisting_sink_test.rs), translated, on `FileStore`.

Each test is named after the koda test it follows. koda tests without a counterpart here have
no meaning for a file store (config_dir, the SQL pruning helpers tested on bare vectors, which
test_contract covers through `load_context`) or test koda's engine rather than its storage
(PersistingSink routing and forwarding).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from _helpers import json_lines, messages_path, session_dir, tool_calls_json

from koda_files import AsyncFileStore, AsyncPersistence, FileStore, KodaFilesError, Persistence, Role
from koda_files.errors import SessionNotFoundError


def complete_assistant(store: FileStore, sid: str, content: str | None, tool_calls: str | None = None) -> int:
    mid = store.insert_message(sid, Role.ASSISTANT, content, tool_calls)
    store.mark_message_complete(mid)
    return mid


def source_and_target(store: FileStore, tmp_path: Path, *turns: str) -> tuple[str, str]:
    """Two sessions of one project; the first holds `turns` as user, completed assistant, user, ... messages."""
    src = store.create_session("default", tmp_path)
    dst = store.create_session("default", tmp_path)
    for i, text in enumerate(turns):
        if i % 2:
            complete_assistant(store, src, text)
        else:
            store.insert_message(src, Role.USER, text)
    return src, dst


# ── thinking_content ──


def test_thinking_content_round_trip(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    mid = complete_assistant(store, sid, "answer")
    store.update_message_thinking_content(mid, "I should think carefully about this…")
    msgs = store.load_context(sid)
    assert len(msgs) == 1
    assert msgs[0].thinking_content == "I should think carefully about this…"
    assert msgs[0].completed_at is not None


def test_thinking_content_null_by_default(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    store.insert_message(sid, Role.USER, "hello")
    complete_assistant(store, sid, "hi")
    assert [m.thinking_content for m in store.load_context(sid)] == [None, None]


def test_thinking_content_persists_and_is_loaded_in_context(root: Path, tmp_path: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("default", tmp_path)
    store.insert_message(sid, Role.USER, "what is 2+2?")
    mid = complete_assistant(store, sid, "It is 4.")
    store.load_context(sid)  # a warm cache must see the annotation too
    store.update_message_thinking_content(mid, "2+2=4 trivially")
    assert store.load_context(sid)[1].thinking_content == "2+2=4 trivially"
    # Resume: a new store reads it back from the file, by the full read and by the backwards read.
    fresh = FileStore(root)
    assert fresh.load_context(sid)[1].thinking_content == "2+2=4 trivially"
    assert FileStore(root).detect_interruption(sid) is None
    lines = json_lines(messages_path(root, sid))
    assert lines[-1] == {"id": mid, "thinking_content": "2+2=4 trivially"}  # an annotation line
    assert "thinking_content" not in lines[1]  # the message line itself is never edited


def test_thinking_content_last_update_wins_and_survives_compaction(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    mid = complete_assistant(store, sid, "a")
    store.update_message_thinking_content(mid, "first thought")
    store.update_message_thinking_content(mid, "second thought")
    before = len(json_lines(messages_path(store.root, sid)))
    store.update_message_thinking_content(mid, "second thought")  # the same text: no new line
    assert len(json_lines(messages_path(store.root, sid))) == before
    assert store.load_all_messages(sid)[1].thinking_content == "second thought"
    store.insert_message(sid, Role.USER, "next")
    store.compact_session(sid, "summary", 1)
    # Compaction edits no line: the message line and its annotations stay as written.
    archived = [line for line in json_lines(messages_path(store.root, sid)) if line.get("id") == mid]
    assert len(archived) == 4 and "thinking_content" not in archived[0]
    for reader in (store, FileStore(store.root)):
        [message] = [m for m in reader.load_all_messages(sid) if m.id == mid]
        assert message.thinking_content == "second thought" and message.completed_at and message.compacted_at


def test_update_message_thinking_content_unknown_id_raises(store: FileStore, tmp_path: Path) -> None:
    store.create_session("default", tmp_path)
    with pytest.raises(KodaFilesError, match="message 424242"):
        store.update_message_thinking_content(424242, "x")
    with pytest.raises(TypeError):
        store.update_message_thinking_content(1, None)  # type: ignore[arg-type]


# ── full_content ──


def test_insert_tool_message_with_full_stores_both_contents(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("tc_1"))
    mid = store.insert_tool_message_with_full(sid, "short result", "tc_1", "very long full output that was truncated")
    assert mid > 0
    tool = next(m for m in store.load_all_messages(sid) if m.role is Role.TOOL)
    assert (tool.content, tool.tool_call_id) == ("short result", "tc_1")
    assert tool.full_content == "very long full output that was truncated"
    assert json_lines(messages_path(store.root, sid))[-1]["full_content"] == tool.full_content
    with pytest.raises(SessionNotFoundError):
        store.insert_tool_message_with_full("no-such-session", "a", "b", "c")


# ── clear_message_content ──


def test_clear_message_content_replaces_the_content_of_each_id(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    id1 = store.insert_message(sid, Role.USER, "secret")
    id2 = store.insert_message(sid, Role.ASSISTANT, "response")
    store.clear_message_content([id1, id2], "[redacted]")
    assert [m.content for m in store.load_all_messages(sid)] == ["[redacted]", "[redacted]"]


def test_a_warm_load_context_sees_cleared_content(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    complete_assistant(store, sid, None, tool_calls_json("tc_1"))
    tool_id = store.insert_message(sid, Role.TOOL, "LARGE original content", None, "tc_1")
    before = store.load_context(sid)
    assert next(m for m in before if m.id == tool_id).content == "LARGE original content"
    store.clear_message_content([tool_id], "[cleared]")
    after = store.load_context(sid)
    assert next(m for m in after if m.id == tool_id).content == "[cleared]"


# ── copy_messages_into_session ──


def test_copy_messages_empty_is_noop(store: FileStore, tmp_path: Path) -> None:
    dst = store.create_session("default", tmp_path)
    store.copy_messages_into_session(dst, [])
    assert store.load_context(dst) == []


def test_copy_messages_preserves_roles_and_order(store: FileStore, tmp_path: Path) -> None:
    src, dst = source_and_target(store, tmp_path, "first", "second", "third", "fourth")
    history = store.load_context(src)
    assert len(history) == 4
    store.copy_messages_into_session(dst, history)
    copied = store.load_context(dst)
    assert [m.content for m in copied] == ["first", "second", "third", "fourth"]
    assert [m.role.value for m in copied] == ["user", "assistant", "user", "assistant"]
    assert all(m.session_id == dst for m in copied)
    assert min(m.id for m in copied) > max(m.id for m in history)  # new ids, in order
    assert [m.id for m in copied] == sorted(m.id for m in copied)


def test_copy_messages_assistant_rows_are_born_complete(store: FileStore, tmp_path: Path) -> None:
    src, dst = source_and_target(store, tmp_path, "q1", "a1", "q2", "a2")
    store.copy_messages_into_session(dst, store.load_context(src))
    loaded = FileStore(store.root).load_all_messages(dst)
    assert [m.completed_at is not None for m in loaded] == [False, True, False, True]


def test_copy_messages_preserves_tool_call_wiring(store: FileStore, tmp_path: Path) -> None:
    src, dst = source_and_target(store, tmp_path, "read foo.txt")
    calls = '[{"id":"tc_1","function":{"name":"Read","arguments":"{}"}}]'
    complete_assistant(store, src, None, calls)
    store.insert_tool_message_with_full(src, "file contents", "tc_1", "the whole file")
    store.update_message_thinking_content(store.load_all_messages(src)[1].id, "reading first")
    store.copy_messages_into_session(dst, store.load_context(src))
    loaded = store.load_context(dst)
    assert len(loaded) == 3
    assert loaded[1].tool_calls == calls and loaded[1].thinking_content == "reading first"
    assert (loaded[2].tool_call_id, loaded[2].full_content) == ("tc_1", "the whole file")


def test_copy_messages_does_not_touch_source_session(store: FileStore, tmp_path: Path) -> None:
    src, dst = source_and_target(store, tmp_path, "hello", "world")
    raw = messages_path(store.root, src).read_bytes()
    store.copy_messages_into_session(dst, store.load_context(src))
    assert messages_path(store.root, src).read_bytes() == raw


def test_copy_messages_does_not_copy_usage(store: FileStore, tmp_path: Path) -> None:
    from koda_files import TokenUsage

    src, dst = source_and_target(store, tmp_path, "q")
    mid = store.insert_message_with_agent(src, Role.ASSISTANT, "a", None, None, TokenUsage(100, 50), "sub")
    store.mark_message_complete(mid)
    store.copy_messages_into_session(dst, store.load_context(src))
    assert store.session_token_usage(dst).api_calls == 0
    assert [m.agent_name for m in store.load_all_messages(dst)] == [None, None]


def test_copy_messages_is_one_write_and_refuses_bad_input(store: FileStore, tmp_path: Path) -> None:
    src, dst = source_and_target(store, tmp_path, "q")
    history = store.load_all_messages(src)
    before = messages_path(store.root, dst).read_bytes()
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        store.copy_messages_into_session(dst, [history[0], "not a message"])  # type: ignore[list-item]
    assert messages_path(store.root, dst).read_bytes() == before
    with pytest.raises(SessionNotFoundError):
        store.copy_messages_into_session("no-such-session", history)


# ── session events ──


def test_session_events_round_trip_preserves_order_and_parent(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("test-agent", "/tmp")
    store.insert_session_event(sid, "info", "first", None)
    store.insert_session_event(sid, "sub_agent_event", "  🔧 Read", "call_abc")
    store.insert_session_event(sid, "bg_task_update", '{"task_id":1,"status":"Pending"}', None)
    events = FileStore(store.root).load_session_events(sid)
    assert next(e.payload for e in events) == "first"
    assert events[0].parent_tool_call_id is None
    assert (events[1].kind, events[1].parent_tool_call_id) == ("sub_agent_event", "call_abc")
    assert events[2].kind == "bg_task_update"
    assert [e.id for e in events] == sorted({e.id for e in events})
    lines = (session_dir(store.root, sid) / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["parent_tool_call_id"] == "call_abc"
    assert "parent_tool_call_id" not in json.loads(lines[0])


def test_session_events_isolated_per_session(store: FileStore) -> None:
    s1 = store.create_session("agent-1", "/tmp")
    s2 = store.create_session("agent-2", "/tmp")
    store.insert_session_event(s1, "info", "in s1")
    store.insert_session_event(s2, "info", "in s2")
    assert [e.payload for e in store.load_session_events(s1)] == ["in s1"]
    assert [e.payload for e in store.load_session_events(s2)] == ["in s2"]


def test_session_events_empty_when_none_inserted(store: FileStore) -> None:
    sid = store.create_session("test-agent", "/tmp")
    assert store.load_session_events(sid) == []
    assert store.load_session_events("no-such-session") == []
    with pytest.raises(SessionNotFoundError):
        store.insert_session_event("no-such-session", "info", "x")


def test_sub_agent_multi_event_sequence_preserves_order_and_parent_id(root: Path) -> None:
    """persisting_sink_test: many writers (threads and a second store) land every event, ordered by id."""
    import threading

    a, b = FileStore(root), FileStore(root)
    sid = a.create_session("test-agent", "/tmp")

    def emit(store: FileStore, tag: str) -> None:
        for i in range(25):
            store.insert_session_event(sid, "sub_agent_event", f"{tag} {i}", "invoke-call-multi")

    threads = [threading.Thread(target=emit, args=(s, t)) for s, t in ((a, "a"), (b, "b"), (a, "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = FileStore(root).load_session_events(sid)
    assert len(events) == 75
    assert all(e.parent_tool_call_id == "invoke-call-multi" for e in events)
    assert [e.id for e in events] == sorted({e.id for e in events})
    for tag in "abc":
        mine = [int(e.payload.split()[1]) for e in events if e.payload.startswith(tag)]
        assert mine == list(range(25))


def test_session_events_torn_and_bad_lines(store: FileStore, caplog: pytest.LogCaptureFixture) -> None:
    sid = store.create_session("a", "/tmp")
    store.insert_session_event(sid, "info", "one")
    path = session_dir(store.root, sid) / "events.jsonl"
    with path.open("ab") as f:
        f.write(b'{"oops"\n{"id":9,"kind":"info"')  # a hand-broken line, then a torn tail
    store.insert_session_event(sid, "info", "two")
    assert [e.payload for e in store.load_session_events(sid)] == ["one", "two"]
    assert f"{path} line 2" in caplog.text


# ── key-value ──


def test_kv_set_replaces_get_reads_and_delete_is_idempotent(store: FileStore) -> None:
    assert store.kv_get("my_key") is None
    store.kv_set("my_key", "hello")
    assert store.kv_get("my_key") == "hello"
    store.kv_set("my_key", "updated")
    assert FileStore(store.root).kv_get("my_key") == "updated"
    store.kv_delete("my_key")
    assert store.kv_get("my_key") is None
    store.kv_delete("my_key")  # absent: nothing happens


def test_kv_list_prefix_returns_matching_keys_sorted_from_one_json_file(store: FileStore) -> None:
    store.kv_set("cfg:foo", "1")
    store.kv_set("cfg:bar", "2")
    store.kv_set("other:baz", "3")
    assert store.kv_list_prefix("cfg:") == [("cfg:bar", "2"), ("cfg:foo", "1")]
    data = json.loads((store.root / "kv.json").read_text())
    assert data == {"cfg:bar": "2", "cfg:foo": "1", "other:baz": "3"}  # one small hand-editable file


def test_kv_concurrent_writers_lose_nothing(root: Path) -> None:
    from _fault_helpers import fork_child

    FileStore(root).kv_set("seed", "0")

    def body(_: int) -> None:
        s = FileStore(root)
        for i in range(30):
            s.kv_set(f"child:{i}", str(i))

    child = fork_child(body)
    parent = FileStore(root)
    for i in range(30):
        parent.kv_set(f"parent:{i}", str(i))
    child.finish()
    assert len(parent.kv_list_prefix("child:")) == 30
    assert len(parent.kv_list_prefix("parent:")) == 30


def test_kv_damaged_file_raises_naming_it_and_is_not_overwritten(store: FileStore) -> None:
    store.kv_set("a", "1")
    path = store.root / "kv.json"
    path.write_text('{"a": 1')
    with pytest.raises(KodaFilesError, match=r"kv\.json"):
        store.kv_get("a")
    with pytest.raises(KodaFilesError, match=r"kv\.json"):
        store.kv_set("b", "2")
    assert path.read_text() == '{"a": 1'


# ── protocols and the async store ──


def test_protocols_cover_the_new_methods(root: Path) -> None:
    assert isinstance(FileStore(root), Persistence)
    astore = AsyncFileStore(root)
    assert isinstance(astore, AsyncPersistence)

    async def run() -> None:
        sid = await astore.create_session("a", "/tmp")
        mid = await astore.insert_message(sid, Role.ASSISTANT, "hi")
        await astore.mark_message_complete(mid)
        await astore.update_message_thinking_content(mid, "hm")
        tid = await astore.insert_tool_message_with_full(sid, "s", "c", "full")
        await astore.insert_session_event(sid, "info", "x")
        assert [e.payload for e in await astore.load_session_events(sid)] == ["x"]
        await astore.kv_set("k", "v")
        assert await astore.kv_get("k") == "v"
        assert await astore.kv_list_prefix("k") == [("k", "v")]
        await astore.kv_delete("k")
        dst = await astore.create_session("a", "/tmp")
        await astore.copy_messages_into_session(dst, await astore.load_all_messages(sid))
        await astore.clear_message_content([tid], "[x]")
        msgs = await astore.load_all_messages(sid)
        assert (msgs[0].thinking_content, msgs[1].content, msgs[1].full_content) == ("hm", "[x]", None)

    asyncio.run(run())


def test_copy_messages_into_a_session_already_read(store: FileStore, tmp_path: Path) -> None:
    """The batch is one write of several lines: a store with the log cached reads every one."""
    src, dst = source_and_target(store, tmp_path, "a", "b")
    store.insert_message(dst, Role.USER, "before")
    assert len(store.load_context(dst)) == 1  # warm
    store.copy_messages_into_session(dst, store.load_context(src))
    assert [m.content for m in store.load_context(dst)] == ["before", "a", "b"]
    assert [m.content for m in store.load_all_messages(dst)] == ["before", "a", "b"]


def test_purge_drops_thinking_annotations_of_purged_messages(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("default", tmp_path)
    old = store.insert_message(sid, Role.USER, "old")
    store.insert_message(sid, Role.USER, "kept")
    store.compact_session(sid, "summary", 1)
    store.update_message_thinking_content(old, "thought about the old one")
    assert store.purge_compacted(0) == 1
    assert b"thought about the old one" not in messages_path(store.root, sid).read_bytes()
