"""Hostile ids, planted symlinks, odd metadata keys and invalid values.

Nothing may be read from, written to or deleted outside the root, and invalid input is refused
before a byte is written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import session_dir, snapshot

from koda_files import FileStore, InvalidSessionIdError, KodaFilesError, Role, SessionNotFoundError, TokenUsage
from koda_files._files import fileops as fileops

HOSTILE_IDS = [
    "../x", "../../etc/passwd", "/etc/passwd", "/", "a/b", "a\\b", "..\\x", "C:\\x", "a\0b", "\0",
    "", ".", "..", ".lock", ".new-x", "-rf", " x", "x ", "a" * 129, "é", "x\n", 7, None,
]
RESERVED_OK = ["CON", "nul", "aux.txt", "COM1", "a" * 128]  # valid ids (on POSIX), but not sessions

METHODS: list[Callable[[FileStore, object], object]] = [
    lambda s, i: s.insert_message(i, Role.USER, "x"),  # type: ignore[arg-type]
    lambda s, i: s.load_all_messages(i),  # type: ignore[arg-type]
    lambda s, i: s.load_context(i),  # type: ignore[arg-type]
    lambda s, i: s.delete_session(i),  # type: ignore[arg-type]
    lambda s, i: s.set_metadata(i, "k", "v"),  # type: ignore[arg-type]
    lambda s, i: s.get_metadata(i, "k"),  # type: ignore[arg-type]
    lambda s, i: s.set_todo(i, "t"),  # type: ignore[arg-type]
    lambda s, i: s.get_todo(i),  # type: ignore[arg-type]
    lambda s, i: s.compact_session(i, "s", 0),  # type: ignore[arg-type]
    lambda s, i: s.session_token_usage(i),  # type: ignore[arg-type]
    lambda s, i: s.last_user_message(i),  # type: ignore[arg-type]
    lambda s, i: s.has_pending_tool_calls(i),  # type: ignore[arg-type]
]


def _world(tmp_path: Path) -> tuple[FileStore, str, Path]:
    """A store under tmp/inner/root with a canary tree beside it that must never change."""
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "victim" / "messages.jsonl").write_bytes(b'{"id":1,"role":"user","content":"LEAKED"}\n')
    (outside / "victim" / "metadata.json").write_bytes(b'{"id":"victim","metadata":{}}\n')
    store = FileStore(tmp_path / "inner" / "root")
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    return store, sid, outside


def test_hostile_session_ids_touch_nothing(tmp_path: Path) -> None:
    store, _, _ = _world(tmp_path)
    before = snapshot(tmp_path)
    for bad in HOSTILE_IDS:
        for method in METHODS:
            with pytest.raises(InvalidSessionIdError):
                method(store, bad)
    for name in RESERVED_OK:
        for method in METHODS:
            with contextlib.suppress(SessionNotFoundError):
                method(store, name)
    assert snapshot(tmp_path) == before, "a hostile id created, changed or deleted something"


def test_symlink_planted_as_session_directory(tmp_path: Path) -> None:
    store, sid, outside = _world(tmp_path)
    link = session_dir(store.root, "victim")
    link.symlink_to(outside / "victim")
    before = snapshot(outside)
    assert store.load_all_messages("victim") == []
    assert "LEAKED" not in store.recent_user_messages(10)
    assert [i.id for i in store.list_sessions(10, ".")] == [sid]
    for write in (
        lambda: store.insert_message("victim", Role.USER, "x"),
        lambda: store.set_metadata("victim", "k", "v"),
        lambda: store.set_todo("victim", "t"),
    ):
        with pytest.raises(SessionNotFoundError):
            write()
    assert store.delete_session("victim") is False
    store.purge_compacted(0)
    report = store.check(repair=True)
    assert [(p.kind, p.repaired) for p in report.problems] == [("not-a-session", False)]
    assert snapshot(outside) == before and link.is_symlink()


@pytest.mark.parametrize("name", ["messages.jsonl", "metadata.json", "todo.md", ".lock"])
def test_symlink_planted_as_a_session_file(tmp_path: Path, name: str) -> None:
    store, sid, outside = _world(tmp_path)
    target = outside / "victim" / ("messages.jsonl" if name != "todo.md" else "todo.md")
    target.write_bytes(target.read_bytes() if target.exists() else b"outside todo")
    path = session_dir(store.root, sid) / name
    if path.exists():
        path.unlink()
    path.symlink_to(target)
    before = snapshot(outside)
    fresh = FileStore(store.root)
    ops: list[Callable[[], object]] = [
        lambda: fresh.load_all_messages(sid),
        lambda: fresh.insert_message(sid, Role.USER, "x"),
        lambda: fresh.get_todo(sid),
        lambda: fresh.set_todo(sid, "t"),
        lambda: fresh.get_metadata(sid, "k"),
        lambda: fresh.set_metadata(sid, "k", "v"),
        lambda: fresh.compact_session(sid, "s", 0),
        lambda: fresh.purge_compacted(0),
        lambda: fresh.recent_user_messages(10),
        lambda: fresh.list_sessions(10, "."),
        lambda: fresh.check(repair=True),
    ]
    for op in ops:
        try:
            result = op()
        except (OSError, KodaFilesError):
            continue
        assert "LEAKED" not in repr(result) and "outside todo" not in repr(result), (name, result)
    assert snapshot(outside) == before, f"written through a symlink planted as {name}"
    if name == ".lock":  # a session whose lock is a planted link refuses every write, delete too
        with pytest.raises(OSError):
            fresh.delete_session(sid)
    else:
        assert fresh.delete_session(sid) is True
    assert snapshot(outside) == before, "delete followed a symlink"


def test_symlink_planted_at_the_temp_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, sid, outside = _world(tmp_path)
    session = session_dir(store.root, sid)
    planted = ".todo.md.guessed.tmp"
    (session / planted).symlink_to(outside / "secret.txt")
    monkeypatch.setattr(fileops, "temp_name", lambda target: f".{target}.guessed.tmp")
    before = snapshot(outside)
    with pytest.raises(FileExistsError):
        store.set_todo(sid, "overwrite?")
    assert snapshot(outside) == before and store.get_todo(sid) is None
    assert (session / planted).is_symlink()


def test_metadata_keys_of_any_string(tmp_path: Path) -> None:
    store, sid, outside = _world(tmp_path)
    before = snapshot(outside)
    keys = ["../x", "/etc/passwd", "", "\0", "a\nb", "k" * 100_000, "\u2028", "🔑", "todo.md", "metadata"]
    for i, key in enumerate(keys):
        store.set_metadata(sid, key, f"v{i}")
    fresh = FileStore(store.root)
    for i, key in enumerate(keys):
        assert fresh.get_metadata(sid, key) == f"v{i}"
    names = sorted(os.listdir(session_dir(store.root, sid)))
    assert [n for n in names if not n.startswith(".")] == ["messages.jsonl", "metadata.json"]
    assert snapshot(outside) == before


BAD_TEXT = "bad \ud800 surrogate"


@pytest.mark.parametrize(
    "call",
    [
        lambda s, sid: s.insert_message(sid, Role.USER, BAD_TEXT),
        lambda s, sid: s.insert_message(sid, Role.ASSISTANT, "x", BAD_TEXT),
        lambda s, sid: s.insert_message(sid, Role.TOOL, "x", None, BAD_TEXT),
        lambda s, sid: s.insert_message_with_agent(sid, Role.USER, "x", None, None, None, BAD_TEXT),
        lambda s, sid: s.set_metadata(sid, BAD_TEXT, "v"),
        lambda s, sid: s.set_metadata(sid, "k", BAD_TEXT),
        lambda s, sid: s.set_todo(sid, BAD_TEXT),
        lambda s, sid: s.compact_session(sid, BAD_TEXT, 0),
        lambda s, sid: s.create_session(BAD_TEXT, "."),
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(2**63)),
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(0, -(2**63) - 1)),
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(1.5)),  # type: ignore[arg-type]
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(0, float("nan"))),  # type: ignore[arg-type]
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(0, 0, None)),  # type: ignore[arg-type]
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(True)),
        lambda s, sid: s.insert_message(sid, Role.USER, "x", usage=TokenUsage(0, 0, 0, "5")),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_are_rejected_before_a_byte_is_written(
    tmp_path: Path, call: Callable[[FileStore, str], object]
) -> None:
    store, sid, _ = _world(tmp_path)
    before = snapshot(store.root)
    with pytest.raises((ValueError, TypeError)):
        call(store, sid)
    assert snapshot(store.root) == before
    assert [m.content for m in store.load_all_messages(sid)] == ["hello"]
    big = store.insert_message(sid, Role.USER, "ok", usage=TokenUsage(2**63 - 1, -(2**63)))
    m = FileStore(store.root).load_all_messages(sid)[-1]
    assert m.id == big and m.prompt_tokens == 2**63 - 1 and m.completion_tokens == -(2**63)
    assert type(m.prompt_tokens) is int
