"""The public API an embedder uses: optional projects, keyword arguments, typed results, errors.

Each test states one rule of the API and runs it against a real store on disk.
"""

from __future__ import annotations

import json
import logging
import os
import pydoc
import re
import shutil
import types
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _helpers import (
    age_compaction,
    iso_utc,
    json_lines,
    messages_path,
    metadata_path,
    sessions_dir,
    snapshot,
    todo_path,
)

import koda_files
import koda_files._files.fileops as fileops
from koda_files import (
    CompactedStats,
    ConcurrentEditError,
    CorruptFileError,
    FileStore,
    KodaFilesError,
    MessageNotFoundError,
    NotAStoreError,
    PurgePreview,
    Role,
    SessionInfo,
    SessionNotFoundError,
    StoreStats,
    TokenUsage,
    UnsupportedLayoutError,
)
from koda_files._store.summary import LIST_KEEP

LAYOUT_1 = Path(__file__).resolve().parent / "fixtures" / "layout1"


def _newest_first_from_files(root: Path, wanted: str | None) -> list[str]:
    """Session ids as `list_sessions` must order them, read straight from each `metadata.json`."""
    rows = []
    for entry in sessions_dir(root).iterdir():
        header = json.loads(metadata_path(root, entry.name).read_text())
        if wanted is None or header["project_root"] in (None, wanted):
            rows.append((header["created_at"], entry.name))
    return [sid for _, sid in sorted(rows, reverse=True)]


# ── list_sessions and create_session without a project ──


def test_list_sessions_without_a_project_lists_every_project_newest_first(fstore: FileStore, root: Path) -> None:
    # More sessions in one project than the root summary keeps, so a long listing is read from
    # the session files and a short one from the summary: both must give the same order.
    for _ in range(LIST_KEEP + 2):
        fstore.create_session("main", "/a")
    for project in ("/b", None, "/c", None):
        fstore.create_session("main", project)
    everything = _newest_first_from_files(root, None)
    assert len(everything) == LIST_KEEP + 6
    for limit in (1, 5, LIST_KEEP, LIST_KEEP + 1, len(everything), 500):
        listed = fstore.list_sessions(limit)
        assert [s.id for s in listed] == everything[:limit], limit
        assert fstore.list_sessions(limit, None) == listed
    assert {s.project_root for s in fstore.list_sessions(500)} == {"/a", "/b", "/c", None}
    # One project still means that project's sessions and those of none, newest first.
    only_b = [s.id for s in fstore.list_sessions(500, "/b")]
    assert only_b == _newest_first_from_files(root, "/b") and len(only_b) == 3
    assert [s.id for s in fstore.list_sessions(100, "/a")] == _newest_first_from_files(root, "/a")


def test_create_session_without_a_project_shows_in_every_projects_listing(fstore: FileStore, root: Path) -> None:
    loose = fstore.create_session("main")
    also_loose = fstore.create_session("helper", None)
    mine = fstore.create_session("main", "/mine")
    assert json.loads(metadata_path(root, loose).read_text())["project_root"] is None
    for project in ("/mine", "/elsewhere", Path("/elsewhere/deeper")):
        ids = [s.id for s in fstore.list_sessions(10, project)]
        assert loose in ids and also_loose in ids
        assert (mine in ids) is (project == "/mine")
    info = next(s for s in fstore.list_sessions(10) if s.id == also_loose)
    assert info == SessionInfo(also_loose, "helper", info.created_at, 0, 0, None, None, None)


# ── insert_message and insert_message_with_agent ──


def test_insert_message_takes_agent_name_by_keyword_only(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    fstore.insert_message(sid, Role.ASSISTANT, "from the sub-agent", None, None, TokenUsage(3, 4), agent_name="sub")
    fstore.insert_message(sid, Role.USER, "from the main agent")
    assert [(m.content, m.agent_name) for m in fstore.load_all_messages(sid)] == [
        ("from the sub-agent", "sub"),
        ("from the main agent", None),
    ]
    lines = json_lines(messages_path(root, sid))
    assert lines[0]["agent_name"] == "sub" and "agent_name" not in lines[1]
    assert fstore.session_usage_by_agent(sid)[0][0] == "sub"
    before = messages_path(root, sid).read_bytes()
    with pytest.raises(TypeError):
        fstore.insert_message(sid, Role.USER, "x", None, None, None, "sub")  # type: ignore[call-arg]
    assert messages_path(root, sid).read_bytes() == before


def test_insert_message_with_agent_has_defaults_and_kodas_positional_order(fstore: FileStore) -> None:
    sid = fstore.create_session("main")
    bare = fstore.insert_message_with_agent(sid, Role.USER)
    full = fstore.insert_message_with_agent(sid, "tool", "result", '[{"id": "c"}]', "c1", TokenUsage(5, 6), "sub")
    first, second = fstore.load_all_messages(sid)
    assert (first.id, first.role, first.content, first.agent_name) == (bare, Role.USER, None, None)
    assert (first.tool_calls, first.tool_call_id, first.prompt_tokens) == (None, None, None)
    assert (second.id, second.role, second.content) == (full, Role.TOOL, "result")
    assert (second.tool_calls, second.tool_call_id) == ('[{"id": "c"}]', "c1")
    assert (second.prompt_tokens, second.completion_tokens, second.agent_name) == (5, 6, "sub")


def test_check_takes_repair_by_keyword_only(fstore: FileStore) -> None:
    sid = fstore.create_session("main")
    with messages_path(fstore.root, sid).open("ab") as f:
        f.write(b"garbage\n")
    before = snapshot(fstore.root)
    with pytest.raises(TypeError):
        fstore.check(True)  # type: ignore[call-arg]
    assert snapshot(fstore.root) == before  # a positional True repaired nothing
    assert fstore.check(repair=True).problems[0].repaired


# ── stop_reason ──


def test_a_stop_reason_of_none_is_taken_as_none_given(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    fstore.insert_message(sid, Role.ASSISTANT, "ok", usage=TokenUsage(1, 2, stop_reason=None))  # type: ignore[arg-type]
    assert b"stop_reason" not in messages_path(root, sid).read_bytes()
    assert fstore.load_all_messages(sid)[0].stop_reason is None
    with pytest.raises(TypeError, match=r"usage\.stop_reason"):
        fstore.insert_message(sid, Role.ASSISTANT, "no", usage=TokenUsage(stop_reason=3))  # type: ignore[arg-type]


def test_stop_reason_is_stored_on_the_line_and_read_back(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    fstore.insert_message(sid, Role.USER, "q")
    fstore.insert_message(sid, Role.ASSISTANT, "cut", None, None, TokenUsage(1, 2, stop_reason="max_tokens"))
    fstore.insert_message(sid, Role.ASSISTANT, "done", None, None, TokenUsage(1, 2))
    lines = json_lines(messages_path(root, sid))
    assert lines[1]["stop_reason"] == "max_tokens"
    assert "stop_reason" not in lines[2] and "stop_reason" not in lines[0]  # empty: not written
    for store in (fstore, FileStore(root)):  # the cached log and a cold read
        assert [m.stop_reason for m in store.load_all_messages(sid)] == [None, "max_tokens", None]
        assert [m.stop_reason for m in store.load_context(sid)] == [None, "max_tokens", None]


# ── errors ──


@pytest.mark.parametrize(
    "error,builtin",
    [
        (MessageNotFoundError, LookupError),
        (SessionNotFoundError, LookupError),
        (CorruptFileError, ValueError),
        (UnsupportedLayoutError, ValueError),
        (NotAStoreError, ValueError),
        (ConcurrentEditError, RuntimeError),
    ],
)
def test_each_error_is_a_koda_files_error_and_the_builtin_a_caller_catches(error: type, builtin: type) -> None:
    assert issubclass(error, KodaFilesError) and issubclass(error, builtin)


def test_error_attributes_and_messages_name_what_is_involved() -> None:
    missing = MessageNotFoundError([9, 7], "/store/sessions")
    assert (missing.message_id, missing.message_ids) == (7, (7, 9))
    assert str(missing) == "messages 7, 9: no such message in any session under /store/sessions"
    corrupt = CorruptFileError(Path("/s/kv.json"), "does not parse", line=3)
    assert (corrupt.path, corrupt.line, str(corrupt)) == ("/s/kv.json", 3, "/s/kv.json:3: does not parse")
    assert CorruptFileError("/s/kv.json", "x").line is None
    newer = UnsupportedLayoutError("/s/koda-files.json", 7, 2)
    assert (newer.path, newer.layout) == ("/s/koda-files.json", 7) and "layout 7" in str(newer)
    edited = ConcurrentEditError("/s/m.jsonl", "the rewrite")
    assert edited.path == "/s/m.jsonl" and str(edited).startswith("/s/m.jsonl changed during the rewrite")


def test_an_unknown_message_id_raises_message_not_found_and_writes_nothing(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    known = fstore.insert_message(sid, Role.ASSISTANT, "hi")
    before = snapshot(root, include_dot_files=False)
    calls: list[Callable[[], object]] = [
        lambda: fstore.mark_message_complete(known + 100),
        lambda: fstore.update_message_thinking_content(known + 100, "why"),
        lambda: fstore.clear_message_content([known, known + 100], "[redacted]"),
    ]
    for call in calls:
        with pytest.raises(MessageNotFoundError) as caught:
            call()
        assert caught.value.message_ids == (known + 100,)
        assert f"message {known + 100}:" in str(caught.value) and str(sessions_dir(root)) in str(caught.value)
        assert isinstance(caught.value, LookupError)
    assert snapshot(root, include_dot_files=False) == before
    assert fstore.load_all_messages(sid)[0].content == "hi"


def test_a_corrupt_metadata_json_raises_corrupt_file_error_naming_it(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    path = metadata_path(root, sid)
    path.write_text('{\n  "agent_name": "main",\n  "id": nope\n}\n')
    calls: list[Callable[[], object]] = [
        lambda: fstore.get_metadata(sid, "model"),
        lambda: fstore.set_metadata(sid, "model", "m"),
    ]
    for call in calls:
        with pytest.raises(CorruptFileError) as caught:
            call()
        assert caught.value.path == str(path) and caught.value.line == 3  # where the parser stopped
        assert str(caught.value).startswith(f"{path}:3: ") and repr(sid) in str(caught.value)
    assert path.read_text() == '{\n  "agent_name": "main",\n  "id": nope\n}\n'  # left for a person to mend


def test_a_corrupt_kv_json_or_layout_marker_raises_corrupt_file_error(fstore: FileStore, root: Path) -> None:
    fstore.kv_set("k", "v")
    (root / "kv.json").write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match=r"kv\.json: is not a JSON object") as caught:
        fstore.kv_get("k")
    assert caught.value.path == str(root / "kv.json")
    (root / "koda-files.json").write_text("{not json")
    with pytest.raises(CorruptFileError) as marker:
        FileStore(root).list_sessions(5)
    assert marker.value.path == str(root / "koda-files.json") and str(root / "koda-files.json") in str(marker.value)


def test_a_newer_layout_raises_unsupported_layout_and_touches_nothing(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    marker = root / "koda-files.json"
    marker.write_text('{"format": "koda-files", "layout": 99}\n')
    before = snapshot(root)
    newer = FileStore(root)
    calls: list[Callable[[], object]] = [
        lambda: newer.load_context(sid),
        lambda: newer.insert_message(sid, Role.USER, "x"),
    ]
    for call in calls:
        with pytest.raises(UnsupportedLayoutError) as caught:
            call()
        assert (caught.value.path, caught.value.layout) == (str(marker), 99)
        assert str(marker) in str(caught.value) and "layout 99" in str(caught.value)
    assert snapshot(root) == before


def test_a_root_that_is_a_file_raises_not_a_store_at_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    store = FileStore(path)  # opening writes nothing, so it cannot fail yet
    with pytest.raises(NotAStoreError) as caught:
        store.create_session("main")
    assert caught.value.path == str(path) and str(path) in str(caught.value)
    assert not isinstance(caught.value, FileExistsError)
    assert path.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == ["notes.txt"]
    full = tmp_path / "project"
    (full / "src").mkdir(parents=True)
    with pytest.raises(NotAStoreError, match="not a koda-files store") as other:
        FileStore(full).create_session("main")
    assert other.value.path == str(full) and sorted(os.listdir(full)) == ["src"]


def _edit_by_hand_before_the_rewrite(monkeypatch: pytest.MonkeyPatch, log: Path, line: bytes) -> list[bool]:
    """Append `line` to `log` by hand just as the store starts writing its replacement (once)."""
    done: list[bool] = []
    real = fileops.temp_name

    def edit_then_name(target: str) -> str:
        if target == log.name and not done:
            with log.open("ab") as f:
                f.write(line)
            done.append(True)
        return real(target)

    monkeypatch.setattr(fileops, "temp_name", edit_then_name)
    return done


def test_a_hand_edit_during_a_compaction_raises_concurrent_edit_and_a_retry_works(
    fstore: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fstore.create_session("main")
    for text in ("a", "b", "c"):
        fstore.insert_message(sid, Role.USER, text)
    log = messages_path(root, sid)
    hand = b'{"id":500,"role":"user","content":"typed by hand"}\n'
    edited = _edit_by_hand_before_the_rewrite(monkeypatch, log, hand)
    before = log.read_bytes()
    with pytest.raises(ConcurrentEditError) as caught:
        fstore.compact_session(sid, "summary", 1)
    assert edited and caught.value.path == str(log) and str(log) in str(caught.value)
    assert isinstance(caught.value, RuntimeError) and "try again" in str(caught.value)
    assert log.read_bytes() == before + hand  # the hand edit stays, the store wrote nothing
    assert not [p for p in log.parent.iterdir() if p.name.endswith(".tmp")]
    assert fstore.compact_session(sid, "summary", 1) == 3  # the retry sees the edit and succeeds
    assert [m.content for m in fstore.load_context(sid)][::2] == ["summary", "typed by hand"]


def test_a_hand_edit_during_a_purge_skips_that_session_and_a_retry_purges(
    fstore: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sid = fstore.create_session("main")
    for text in ("a", "b"):
        fstore.insert_message(sid, Role.USER, text)
    fstore.compact_session(sid, "summary", 0)
    log = messages_path(root, sid)
    hand = b'{"id":500,"role":"user","content":"typed by hand"}\n'
    edited = _edit_by_hand_before_the_rewrite(monkeypatch, log, hand)
    before = log.read_bytes()
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        assert fstore.purge_compacted(0) == 0
    assert edited and log.read_bytes() == before + hand
    assert f"{log} changed during the purge" in caplog.text
    assert fstore.purge_compacted(0) == 2
    assert [m.content for m in fstore.load_all_messages(sid)][::2] == ["summary", "typed by hand"]


# ── stats, purge_preview, todo_path ──


def test_stats_counts_sessions_messages_archive_and_the_stores_own_bytes(fstore: FileStore, root: Path) -> None:
    assert fstore.stats() == StoreStats(0, 0, 0, 0, CompactedStats())
    first = fstore.create_session("main", "/a")
    second = fstore.create_session("main")
    for i in range(5):
        fstore.insert_message(first, Role.USER, f"q{i}")
    fstore.insert_message(second, Role.USER, "other")
    fstore.compact_session(first, "summary", 2)  # archives 3, adds the summary and its hint
    (sessions_dir(root) / "bad name").mkdir()  # a stray entry is skipped, never counted
    (root / ".git").mkdir()
    (root / ".git" / "big").write_bytes(b"x" * 10_000)  # not the store's own
    fstore.stats()
    stats = fstore.stats()
    # Every file the store keeps at the root (those present), and all under sessions/.
    names = ("koda-files.json", ".gitignore", ".ids", ".index", ".summary", ".changes", ".tracks-completion", "kv.json")
    own = sum(os.path.getsize(root / n) for n in names if (root / n).exists())
    assert own > os.path.getsize(root / "koda-files.json") + os.path.getsize(root / ".ids")
    own += sum(p.stat().st_size for p in sessions_dir(root).rglob("*") if p.is_file())
    assert stats == StoreStats(2, 8, 3, own, fstore.compacted_stats())
    assert stats.compacted.message_count == 3 and stats.compacted.session_count == 1
    all_messages = fstore.load_all_messages(first) + fstore.load_all_messages(second)
    assert stats.messages == len(all_messages)
    assert stats.archived_messages == sum(m.compacted_at is not None for m in all_messages)


def _files_with_times(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, lock files aside (taking a lock may create one)."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.name != ".lock":
            out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def _preview_then_purge(store: FileStore, days: int) -> int:
    """`purge_preview(days)` changes no file and names exactly what `purge_compacted(days)` then
    removes; returns how many that was."""
    root = store.root
    before = _files_with_times(root)
    preview = store.purge_preview(days)
    assert _files_with_times(root) == before, days
    assert preview.session_ids == tuple(sorted(preview.session_ids))
    ids = sorted(os.listdir(sessions_dir(root)))
    sizes = {sid: messages_path(root, sid).stat().st_size for sid in ids}
    messages = {sid: len(store.load_all_messages(sid)) for sid in ids}
    assert store.purge_compacted(days) == preview.message_count, days
    shrunk = {sid for sid in ids if len(store.load_all_messages(sid)) < messages[sid]}
    assert preview.session_ids == tuple(sorted(shrunk)), days
    assert preview.size_bytes == sum(sizes[s] - messages_path(root, s).stat().st_size for s in ids), days
    assert store.purge_preview(days) == PurgePreview(0, 0, ())
    return preview.message_count


def test_purge_preview_is_what_purge_removes_at_every_age(fstore: FileStore, root: Path) -> None:
    now = datetime.now(timezone.utc)
    old = fstore.create_session("main", "/a")
    for summary, age in (("c-ancient", 400), ("c-old", 20), ("c-recent", 0)):
        fstore.insert_message(old, Role.USER, f"before {summary}")
        fstore.compact_session(old, summary, 0)
        if age:
            age_compaction(messages_path(root, old), summary, now - timedelta(days=age))
    other = fstore.create_session("main")
    for text in ("x", "y", "z"):
        fstore.insert_message(other, Role.USER, text)
    fstore.compact_session(other, "c-other", 1)
    age_compaction(messages_path(root, other), "c-other", now - timedelta(days=10))
    untouched = fstore.create_session("main")
    fstore.insert_message(untouched, Role.USER, "never compacted")
    fstore.reindex()  # the ages above were edited by hand
    counts = [_preview_then_purge(fstore, days) for days in (1000, 365, 15, 5, 0)]
    assert counts == [0, 1, 3, 2, 3]  # each age removes what became old enough since the last


def test_purge_preview_of_a_first_layout_store(tmp_path: Path) -> None:
    root = tmp_path / "layout1"
    shutil.copytree(LAYOUT_1, root)
    # The first layout records each archived line's own time; spread them over several ages.
    now = datetime.now(timezone.utc)
    stamps: dict[str, str] = {}
    for log in sessions_dir(root).glob("*/messages.jsonl"):
        for stamp in sorted(set(re.findall(rb'"compacted_at":"([^"]+)"', log.read_bytes()))):
            stamps.setdefault(stamp.decode(), iso_utc(now - timedelta(days=30 * (len(stamps) + 1))))
    assert len(stamps) == 3
    for log in sessions_dir(root).glob("*/messages.jsonl"):
        text = log.read_text()
        for was, new in stamps.items():
            text = text.replace(was, new)
        log.write_text(text)
    store = FileStore(root)
    first = store.purge_preview(0)
    assert first.message_count == store.compacted_stats().message_count > 0 and len(first.session_ids) == 2
    counts = [_preview_then_purge(store, days) for days in (1000, 75, 45, 0)]
    assert sum(counts) == first.message_count and all(counts[1:])
    assert json.loads((root / "koda-files.json").read_text())["layout"] == 1


def test_todo_path_is_where_set_todo_writes(fstore: FileStore, root: Path) -> None:
    sid = fstore.create_session("main")
    path = fstore.todo_path(sid)
    assert isinstance(path, Path) and path == todo_path(root, sid) and not path.exists()
    fstore.set_todo(sid, "- [ ] one\n")
    assert path.read_text() == "- [ ] one\n"
    path.write_text("- [x] one\n")  # edited by hand where todo_path says
    assert fstore.get_todo(sid) == "- [x] one\n"
    with pytest.raises(SessionNotFoundError, match="'no-such-session'"):
        fstore.todo_path("no-such-session")


# ── what `import koda_files` offers ──


def test_all_names_only_the_public_api_and_each_imports() -> None:
    names = koda_files.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert not name.startswith("_") or name == "__version__", name
        value: Any = getattr(koda_files, name)
        assert not isinstance(value, types.ModuleType), name
        exec(f"from koda_files import {name}", {})
    for name in ("FileStore", "AsyncFileStore", "Durability", "ProblemKind", "MessageNotFoundError", "StoreStats"):
        assert name in names


def test_help_lists_no_private_name() -> None:
    text = pydoc.plain(pydoc.render_doc(koda_files))
    members = text.split("\nCLASSES\n", 1)[1].split("\nVERSION\n", 1)[0]
    shown = set(re.findall(r"^    (?:class )?(\w+)(?:\(| = )", members, re.M))
    # `__getattr__` loads the heavy modules on first use; pydoc always shows a module's dunders.
    assert shown - {"__getattr__", "__all__"} <= set(koda_files.__all__)
    assert {"Durability", "MessageNotFoundError", "KodaFilesError", "StoreStats"} <= shown
