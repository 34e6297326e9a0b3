"""koda's `Persistence` contract, rule by rule: Public API, On disk, Semantics, damage and concurrency.

Every test here is written from the README's rules, not from the implementation, and each
would fail if the rule it names were broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import enum
import inspect
import json
import logging
import os
import re
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, cast

import orjson
import platformdirs
import pytest
from _helpers import (
    age_compaction,
    append_line,
    append_to_log,
    as_msg,
    json_lines,
    messages_path,
    metadata_path,
    no_file_system,
    parse_iso_utc,
    raw_lines,
    rewrite_json,
    sanitize_indices,
    session_dir,
    sessions_dir,
    snapshot,
    todo_path,
    tool_calls_json,
)

import koda_files
from koda_files import (
    AsyncFileStore,
    AsyncPersistence,
    CompactedStats,
    FileStore,
    InvalidSessionIdError,
    KodaFilesError,
    Message,
    Persistence,
    Role,
    SessionInfo,
    SessionNotFoundError,
    SessionUsage,
    TokenUsage,
)
from koda_files._store.rewrite import COMPACTION_HINT

# ==============================================================================================
# Public API
# ==============================================================================================

PUBLIC_NAMES = [
    "FileStore",
    "AsyncFileStore",
    "Persistence",
    "AsyncPersistence",
    "Role",
    "Message",
    "TokenUsage",
    "SessionUsage",
    "SessionInfo",
    "CompactedStats",
    "KodaFilesError",
    "SessionNotFoundError",
    "InvalidSessionIdError",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_is_exported(name: str) -> None:
    assert hasattr(koda_files, name), f"koda_files does not export {name}"


def test_role_is_a_str_enum_with_the_four_roles() -> None:
    assert issubclass(Role, enum.Enum)
    assert issubclass(Role, str)
    assert [m.name for m in Role] == ["SYSTEM", "USER", "ASSISTANT", "TOOL"]
    assert [m.value for m in Role] == ["system", "user", "assistant", "tool"]
    assert Role("assistant") is Role.ASSISTANT
    assert str.__eq__(Role.TOOL, "tool")


MESSAGE_FIELDS = [
    "id",
    "session_id",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
]
SESSION_USAGE_FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
    "api_calls",
]
SESSION_INFO_FIELDS = ["id", "agent_name", "created_at", "message_count", "total_tokens"]
COMPACTED_STATS_FIELDS = ["message_count", "session_count", "size_bytes", "oldest"]
TOKEN_USAGE_FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
    "stop_reason",
]

SAMPLE_VALUES: dict[str, Any] = {
    "id": 1,
    "session_id": "s",
    "role": Role.USER,
    "content": "c",
    "tool_calls": None,
    "tool_call_id": None,
    "agent_name": "a",
    "created_at": "2026-01-01T00:00:00.000000Z",
    "oldest": None,
    "stop_reason": "",
}


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (Message, MESSAGE_FIELDS),
        (SessionUsage, SESSION_USAGE_FIELDS),
        (SessionInfo, SESSION_INFO_FIELDS),
        (CompactedStats, COMPACTED_STATS_FIELDS),
        (TokenUsage, TOKEN_USAGE_FIELDS),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_value_types_are_frozen_dataclasses_with_the_traits_fields(cls: type, names: list[str]) -> None:
    assert dataclasses.is_dataclass(cls)
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields][: len(names)] == names
    for extra in fields[len(names) :]:
        has_default = extra.default is not dataclasses.MISSING or extra.default_factory is not dataclasses.MISSING
        assert has_default, f"extra field {cls.__name__}.{extra.name} has no default"
    instance = cls(**{n: SAMPLE_VALUES.get(n, 0) for n in names})
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, names[0], SAMPLE_VALUES.get(names[0], 0))


def test_token_usage_fields_default_to_zero_and_an_empty_stop_reason() -> None:
    u = TokenUsage()
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens) == (0, 0, 0)
    assert (u.cache_creation_tokens, u.thinking_tokens, u.stop_reason) == (0, 0, "")


def test_errors_derive_from_koda_files_error_and_the_matching_builtin() -> None:
    assert issubclass(KodaFilesError, Exception)
    assert issubclass(SessionNotFoundError, KodaFilesError)
    assert issubclass(SessionNotFoundError, LookupError)
    assert issubclass(InvalidSessionIdError, KodaFilesError)
    assert issubclass(InvalidSessionIdError, ValueError)


def test_persistence_protocols_are_runtime_checkable_and_implemented(root: Path) -> None:
    assert isinstance(FileStore(root), Persistence)
    assert isinstance(AsyncFileStore(root), AsyncPersistence)
    assert not isinstance(object(), Persistence)
    assert not isinstance(object(), AsyncPersistence)


SIGNATURES: dict[str, list[str]] = {
    "create_session": ["agent_name", "project_root"],
    "list_sessions": ["limit", "project_root"],
    "delete_session": ["session_id"],
    "insert_message": ["session_id", "role", "content", "tool_calls", "tool_call_id", "usage"],
    "insert_message_with_agent": [
        "session_id",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "usage",
        "agent_name",
    ],
    "load_context": ["session_id"],
    "load_all_messages": ["session_id"],
    "recent_user_messages": ["limit"],
    "last_assistant_message": ["session_id"],
    "last_user_message": ["session_id"],
    "has_pending_tool_calls": ["session_id"],
    "session_token_usage": ["session_id"],
    "session_usage_by_agent": ["session_id"],
    "compact_session": ["session_id", "summary", "preserve_count"],
    "compacted_stats": [],
    "purge_compacted": ["min_age_days"],
    "get_metadata": ["session_id", "key"],
    "set_metadata": ["session_id", "key", "value"],
    "get_todo": ["session_id"],
    "set_todo": ["session_id", "content"],
}


def _param_names(func: Callable[..., Any]) -> list[str]:
    """The parameters a caller may pass by position (keyword-only extras are not koda's)."""
    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind is not p.KEYWORD_ONLY]


@pytest.mark.parametrize("method", sorted(SIGNATURES))
@pytest.mark.parametrize("cls", [FileStore, AsyncFileStore, Persistence, AsyncPersistence], ids=lambda c: c.__name__)
def test_method_parameter_names_and_order(cls: type, method: str) -> None:
    func = getattr(cls, method)
    assert _param_names(func) == SIGNATURES[method]
    is_async = cls in (AsyncFileStore, AsyncPersistence)
    assert inspect.iscoroutinefunction(func) == is_async


@pytest.mark.parametrize("cls", [FileStore, AsyncFileStore, Persistence, AsyncPersistence], ids=lambda c: c.__name__)
def test_insert_message_optional_parameters_default_to_none(cls: Any) -> None:
    params = inspect.signature(cls.insert_message).parameters
    for name in ("content", "tool_calls", "tool_call_id", "usage"):
        assert params[name].default is None
    for name in ("session_id", "role"):
        assert params[name].default is inspect.Parameter.empty


@pytest.mark.parametrize("cls", [FileStore, AsyncFileStore], ids=lambda c: c.__name__)
def test_constructor_takes_root_then_keyword_only_durability_and_tracks_completion(cls: type) -> None:
    params = inspect.signature(cls).parameters
    assert list(params) == ["root", "durability", "tracks_completion"]
    assert params["tracks_completion"].default is False
    assert params["tracks_completion"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["root"].default is None
    assert params["root"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params["durability"].default == "flush"
    assert params["durability"].kind is inspect.Parameter.KEYWORD_ONLY


def _spy_fsync(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("fsync", "fdatasync"):
        original = getattr(os, name, None)
        if original is None:
            continue

        def spy(fd: int, _name: str = name, _orig: Callable[[int], None] = original) -> None:
            calls.append(_name)
            _orig(fd)

        monkeypatch.setattr(os, name, spy)
        for modname, mod in list(sys.modules.items()):
            ours = modname == "koda_files" or modname.startswith("koda_files.")
            if ours and getattr(mod, name, None) is original:
                monkeypatch.setattr(mod, name, spy)
    return calls


def test_fsync_durability_syncs_every_write(monkeypatch: pytest.MonkeyPatch, root: Path, tmp_path: Path) -> None:
    store = FileStore(root, durability="fsync")
    calls = _spy_fsync(monkeypatch)
    writes: list[tuple[str, Callable[[str], object]]] = [
        ("insert_message", lambda sid: store.insert_message(sid, Role.USER, "x")),
        (
            "insert_message_with_agent",
            lambda sid: store.insert_message_with_agent(sid, Role.USER, "y", None, None, None, "a"),
        ),
        ("set_metadata", lambda sid: store.set_metadata(sid, "k", "v")),
        ("set_todo", lambda sid: store.set_todo(sid, "t")),
        ("compact_session", lambda sid: store.compact_session(sid, "s", 0)),
        ("purge_compacted", lambda sid: store.purge_compacted(0)),
        ("delete_session", lambda sid: store.delete_session(sid)),
    ]
    calls.clear()
    sid = store.create_session("koda", tmp_path)
    assert calls, "create_session did not fsync in durability='fsync'"
    for name, write in writes:
        calls.clear()
        write(sid)
        assert calls, f"{name} did not fsync in durability='fsync'"


def test_unknown_durability_is_rejected(root: Path) -> None:
    with pytest.raises(ValueError, match="bogus"):
        FileStore(root, durability=cast(Any, "bogus"))


@pytest.mark.parametrize("role", [Role.USER, "user", Role.TOOL, "tool", Role.SYSTEM, "system"])
def test_role_accepts_enum_or_string(store: FileStore, root: Path, tmp_path: Path, role: Role | str) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, role, "x", None, "c1" if role == "tool" else None)
    store.insert_message_with_agent(sid, role, "y", None, None, None, "sub")
    msgs = store.load_all_messages(sid)
    assert [m.role for m in msgs] == [Role(role), Role(role)]
    assert all(isinstance(m.role, Role) for m in msgs)
    assert [line["role"] for line in json_lines(messages_path(root, sid))] == [Role(role).value] * 2


BAD_ROLES: list[object] = ["USER", "admin", "", " user", None, 3, b"user", "Role.USER"]


def _role_named(bad: object, text: str) -> bool:
    if isinstance(bad, str) and bad.strip():
        return bad in text
    return repr(bad) in text


@pytest.mark.parametrize("bad", BAD_ROLES, ids=repr)
@pytest.mark.parametrize("with_agent", [False, True])
def test_bad_role_raises_value_error_naming_it_and_writes_nothing(
    store: FileStore, root: Path, tmp_path: Path, bad: object, with_agent: bool
) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "before")
    before = snapshot(root, include_dot_files=False)
    with pytest.raises(ValueError) as excinfo:
        if with_agent:
            store.insert_message_with_agent(sid, bad, "x", None, None, None, "sub")  # type: ignore[arg-type]
        else:
            store.insert_message(sid, bad, "x")  # type: ignore[arg-type]
    assert _role_named(bad, str(excinfo.value)), str(excinfo.value)
    assert snapshot(root, include_dot_files=False) == before
    assert [m.content for m in store.load_all_messages(sid)] == ["before"]


def test_default_root_is_koda_files_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv("KODA_FILES_DIR", str(target))
    sid = FileStore().create_session("koda", tmp_path)
    assert session_dir(target, sid).is_dir()
    sid2 = FileStore(None).create_session("koda", tmp_path)
    assert session_dir(target, sid2).is_dir()


def _patch_user_data_dir(monkeypatch: pytest.MonkeyPatch, target: Path) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fake_user_data_dir(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return str(target)

    monkeypatch.setattr(platformdirs, "user_data_dir", fake_user_data_dir)
    for modname, mod in list(sys.modules.items()):
        ours = modname == "koda_files" or modname.startswith("koda_files.")
        if ours and getattr(mod, "user_data_dir", None) is not None:
            monkeypatch.setattr(mod, "user_data_dir", fake_user_data_dir)
    return calls


def test_default_root_falls_back_to_platformdirs_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KODA_FILES_DIR", raising=False)
    target = tmp_path / "platformdirs-data"
    calls = _patch_user_data_dir(monkeypatch, target)
    sid = FileStore().create_session("koda", tmp_path)
    assert session_dir(target, sid).is_dir()
    assert calls, "platformdirs.user_data_dir was not consulted"
    args, kwargs = calls[0]
    assert (args[:1] == ("koda",)) or kwargs.get("appname") == "koda"


def test_async_store_uses_the_same_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "from-env-async"
    monkeypatch.setenv("KODA_FILES_DIR", str(target))
    sid = asyncio.run(AsyncFileStore().create_session("koda", tmp_path))
    assert session_dir(target, sid).is_dir()


def test_root_may_be_str_or_pathlike(tmp_path: Path) -> None:
    a = tmp_path / "str-root"
    b = tmp_path / "path-root"
    sa = FileStore(str(a)).create_session("koda", tmp_path)
    sb = FileStore(b).create_session("koda", tmp_path)
    assert session_dir(a, sa).is_dir()
    assert session_dir(b, sb).is_dir()


# ==============================================================================================
# On disk
# ==============================================================================================


def test_session_directory_layout(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "hi")
    sdir = session_dir(root, sid)
    assert messages_path(root, sid).is_file()
    assert metadata_path(root, sid).is_file()
    assert not todo_path(root, sid).exists(), "todo.md exists before a todo was set"
    store.set_metadata(sid, "k", "v")
    store.compact_session(sid, "summary", 0)
    store.set_todo(sid, "- [ ] one")
    assert todo_path(root, sid).is_file()
    visible = sorted(p.name for p in sdir.iterdir() if not p.name.startswith("."))
    assert visible == ["messages.jsonl", "metadata.json", "todo.md"], (
        "lock and temporary files must be dot-files; found " + repr(visible)
    )
    visible_in_sessions = sorted(p.name for p in sessions_dir(root).iterdir() if not p.name.startswith("."))
    assert visible_in_sessions == [sid]


def test_layout_version_marker_at_root(store: FileStore, root: Path, tmp_path: Path) -> None:
    store.create_session("koda", tmp_path)
    # The README names the marker: <root>/koda-files.json, {"format": "koda-files", "layout": 1}.
    marker = root / "koda-files.json"
    assert marker.is_file(), f"no layout version marker at {root}: {sorted(p.name for p in root.iterdir())}"
    obj = json.loads(marker.read_text(encoding="utf-8"))
    assert obj.get("format") == "koda-files"
    assert isinstance(obj.get("layout"), int) and obj["layout"] >= 1


MODES: tuple[Literal["flush", "fsync"], ...] = ("flush", "fsync")


def _exercise_every_writer(store: FileStore, tmp_path: Path) -> str:
    sid = store.create_session("koda", tmp_path / "proj")
    store.insert_message(sid, Role.USER, "secret")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "ok", None, None, TokenUsage(1, 2), "sub")
    store.set_metadata(sid, "model", "m")
    store.set_todo(sid, "- [ ] x")
    store.compact_session(sid, "sum", 1)
    store.purge_compacted(0)
    other = store.create_session("koda", tmp_path / "proj")
    store.delete_session(other)
    return sid


def test_directories_0700_and_files_0600_even_with_umask_zero(root: Path, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        for durability in MODES:
            s = FileStore(root, durability=durability)
            _exercise_every_writer(s, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    seen_files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            mode = stat.S_IMODE((Path(dirpath) / d).stat().st_mode)
            assert mode == 0o700, f"{Path(dirpath) / d} has mode {oct(mode)}"
        for f in filenames:
            mode = stat.S_IMODE((Path(dirpath) / f).lstat().st_mode)
            assert mode == 0o600, f"{Path(dirpath) / f} has mode {oct(mode)}"
            seen_files += 1
    assert seen_files >= 4


def test_permissions_with_a_permissive_umask_on_an_existing_root(tmp_path: Path) -> None:
    root = tmp_path / "existing"
    root.mkdir(mode=0o755)
    old = os.umask(0o002)
    try:
        _exercise_every_writer(FileStore(root), tmp_path)
    finally:
        os.umask(old)
    for dirpath, dirnames, filenames in os.walk(sessions_dir(root)):
        for d in dirnames:
            assert stat.S_IMODE((Path(dirpath) / d).stat().st_mode) == 0o700
        for f in filenames:
            assert stat.S_IMODE((Path(dirpath) / f).lstat().st_mode) == 0o600
    assert stat.S_IMODE(sessions_dir(root).stat().st_mode) == 0o700


# "Field names are the `Message` field names plus agent_name, created_at, compacted_at": the
# extras `Message` has gained (stop_reason, ...) are among its field names.
ALLOWED_LINE_KEYS = {f.name for f in dataclasses.fields(Message)} | {"agent_name", "created_at", "compacted_at"}
TOKEN_FIELDS = [
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
]


def test_messages_jsonl_is_one_orjson_object_per_line(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    calls = '[ {"id": "c1",  "type": "function"} ]'  # odd spacing: must be kept as given
    ids = [
        store.insert_message(sid, Role.SYSTEM, "you are koda"),
        store.insert_message(sid, "user", 'line one\nline two "q" \\ é 😀'),
        store.insert_message(sid, Role.ASSISTANT, None, calls, None, TokenUsage(10, 20, 3, 4, 5, "tool_use")),
        store.insert_message_with_agent(sid, Role.TOOL, "result", None, "c1", None, "sub"),
        store.insert_message(sid, Role.ASSISTANT, "done", None, None, TokenUsage()),
    ]
    path = messages_path(root, sid)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    data.decode("utf-8")  # all UTF-8
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(ids)
    for line in lines:
        assert orjson.dumps(orjson.loads(line)) == line, "line not written by orjson (compact, raw UTF-8)"
    objs = [json.loads(line) for line in lines]
    for obj in objs:
        assert isinstance(obj, dict)
        assert set(obj) <= ALLOWED_LINE_KEYS, set(obj) - ALLOWED_LINE_KEYS
        assert "compacted_at" not in obj or obj["compacted_at"] is None
        parse_iso_utc(obj["created_at"])
        if "session_id" in obj:
            assert obj["session_id"] == sid
    assert [o["id"] for o in objs] == ids
    assert [o["role"] for o in objs] == ["system", "user", "assistant", "tool", "assistant"]
    assert objs[1]["content"] == 'line one\nline two "q" \\ é 😀'
    assert objs[2]["tool_calls"] == calls
    assert objs[2].get("content") is None
    assert [objs[2][k] for k in TOKEN_FIELDS] == [10, 20, 3, 4, 5]
    assert [objs[4][k] for k in TOKEN_FIELDS] == [0, 0, 0, 0, 0]
    for k in TOKEN_FIELDS:
        assert objs[0].get(k) is None
    assert objs[3]["tool_call_id"] == "c1"
    assert objs[3]["agent_name"] == "sub"
    assert objs[1].get("agent_name") is None


def _pretty_sorted_variants(obj: Any) -> list[str]:
    out = []
    for indent in (2, 4, 1, "\t"):
        for ensure_ascii in (False, True):
            out.append(json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=ensure_ascii) + "\n")
    return out


def _string_values(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _string_values(v)] + [str(k) for k in obj]
    if isinstance(obj, list):
        return [s for v in obj for s in _string_values(v)]
    return []


def test_metadata_json_is_pretty_sorted_with_final_newline(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("agent-x", tmp_path / "proj")
    store.set_metadata(sid, "zeta", "last")
    store.set_metadata(sid, "alpha", "first\nwith newline é")
    store.set_metadata(sid, "Mid", "m")
    text = metadata_path(root, sid).read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    obj = json.loads(text)
    assert text in _pretty_sorted_variants(obj), "metadata.json is not pretty-printed with sorted keys:\n" + text
    assert len(text.splitlines()) > 4, "not pretty-printed"
    values = _string_values(obj)
    for expected in (
        sid,
        "agent-x",
        os.path.abspath(tmp_path / "proj"),
        "zeta",
        "last",
        "first\nwith newline é",
    ):
        assert expected in values, f"{expected!r} missing from metadata.json"
    created = [v for v in values if re.match(r"^\d{4}-\d\d-\d\dT", v)]
    assert created, "no creation time in metadata.json"
    parse_iso_utc(created[0])


def test_metadata_json_change_is_one_line_in_a_diff(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    for k in ("a", "b", "c", "d"):
        store.set_metadata(sid, k, f"value-{k}")
    before = metadata_path(root, sid).read_text(encoding="utf-8").splitlines()
    store.set_metadata(sid, "c", "changed")
    after = metadata_path(root, sid).read_text(encoding="utf-8").splitlines()
    diff = [d for d in difflib.ndiff(before, after) if d[:1] in "+-"]
    assert len(diff) == 2, "\n".join(diff)
    assert diff[0].startswith("-") and "value-c" in diff[0]
    assert diff[1].startswith("+") and "changed" in diff[1]


TODO_TEXTS = [
    "- [ ] write tests\n- [x] read the spec\n",
    "no final newline",
    "crlf\r\nline\r\n",
    "",
    "  leading and trailing spaces  \n\n\n",
    "unicode é 😀 \u2028 tab\t",
]


@pytest.mark.parametrize("text", TODO_TEXTS, ids=range(len(TODO_TEXTS)))
def test_todo_md_is_the_todo_byte_for_byte(store: FileStore, root: Path, tmp_path: Path, text: str) -> None:
    sid = store.create_session("koda", tmp_path)
    store.set_todo(sid, text)
    assert todo_path(root, sid).read_bytes() == text.encode("utf-8")
    assert store.get_todo(sid) == text
    assert store.get_metadata(sid, "todo") == text


def test_todo_edited_in_place_by_hand(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.set_todo(sid, "- [ ] aaaa\n")
    assert store.get_todo(sid) == "- [ ] aaaa\n"
    # same size, rewritten in place immediately: a cache keyed on size/mtime would miss it
    with open(todo_path(root, sid), "r+b") as fh:
        fh.write(b"- [x] bbbb\n")
    assert store.get_todo(sid) == "- [x] bbbb\n"
    with open(todo_path(root, sid), "ab") as fh:
        fh.write(b"- [ ] appended by a person\n")
    assert store.get_todo(sid) == "- [x] bbbb\n- [ ] appended by a person\n"
    assert store.get_metadata(sid, "todo") == "- [x] bbbb\n- [ ] appended by a person\n"


def test_todo_replaced_by_rename_by_hand(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.set_todo(sid, "old\n")
    assert store.get_todo(sid) == "old\n"
    tmp = session_dir(root, sid) / "todo.md.swp"
    tmp.write_bytes(b"new\n")
    os.replace(tmp, todo_path(root, sid))
    assert store.get_todo(sid) == "new\n"


def test_todo_deleted_by_hand_reads_as_none(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.set_todo(sid, "x")
    assert store.get_todo(sid) == "x"
    todo_path(root, sid).unlink()
    assert store.get_todo(sid) is None
    assert store.get_metadata(sid, "todo") is None
    store.set_todo(sid, "again")
    assert todo_path(root, sid).read_bytes() == b"again"


def test_todo_created_by_hand_is_read(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    assert store.get_todo(sid) is None
    todo_path(root, sid).write_bytes("- [ ] by hand é\n".encode())
    assert store.get_todo(sid) == "- [ ] by hand é\n"


def test_new_session_ids_are_unique_canonical_uuids(store: FileStore, tmp_path: Path) -> None:
    sids = [store.create_session("koda", tmp_path) for _ in range(30)]
    assert len(set(sids)) == len(sids)
    for sid in sids:
        assert str(uuid.UUID(sid)) == sid


def test_session_ids_sort_by_age_as_the_readme_promises(store: FileStore, root: Path, tmp_path: Path) -> None:
    # README: "UUIDv7 ids, so `ls` sorts by age" -- also for sessions made within one millisecond.
    sids = [store.create_session("koda", tmp_path) for _ in range(40)]
    assert all(uuid.UUID(sid).version == 7 for sid in sids)
    assert sorted(sids) == sids
    assert sorted(p.name for p in sessions_dir(root).iterdir() if not p.name.startswith(".")) == sids


VALID_IDS = [
    "abc.DEF_1-2",
    "a",
    "0",
    "Z" * 128,
    "session-2024.01.01",
    "a..b",
    "9_-.",
]
INVALID_IDS: list[object] = [
    "../x",
    "",
    "a/b",
    ".hidden",
    "a" * 129,
    "a\x00b",
    "..",
    ".",
    "-dash",
    "_under",
    "a b",
    "abc\n",
    "\nabc",
    "a\\b",
    "é",
    "/abs",
    "a:b",
    None,
    123,
    b"abc",
]


def _invalid_id_calls() -> dict[str, Callable[[FileStore, Any], object]]:
    return {
        "delete_session": lambda s, i: s.delete_session(i),
        "insert_message": lambda s, i: s.insert_message(i, Role.USER, "x"),
        "insert_message_with_agent": lambda s, i: s.insert_message_with_agent(i, Role.USER, "x", None, None, None, "a"),
        "load_context": lambda s, i: s.load_context(i),
        "load_all_messages": lambda s, i: s.load_all_messages(i),
        "last_assistant_message": lambda s, i: s.last_assistant_message(i),
        "last_user_message": lambda s, i: s.last_user_message(i),
        "has_pending_tool_calls": lambda s, i: s.has_pending_tool_calls(i),
        "session_token_usage": lambda s, i: s.session_token_usage(i),
        "session_usage_by_agent": lambda s, i: s.session_usage_by_agent(i),
        "compact_session": lambda s, i: s.compact_session(i, "sum", 0),
        "get_metadata": lambda s, i: s.get_metadata(i, "k"),
        "set_metadata": lambda s, i: s.set_metadata(i, "k", "v"),
        "get_todo": lambda s, i: s.get_todo(i),
        "set_todo": lambda s, i: s.set_todo(i, "t"),
    }


INVALID_ID_CALLS = _invalid_id_calls()


@pytest.mark.parametrize("method", sorted(INVALID_ID_CALLS))
def test_invalid_session_ids_raise_before_touching_the_file_system(
    fstore: FileStore, root: Path, tmp_path: Path, method: str
) -> None:
    sid = fstore.create_session("koda", tmp_path)
    fstore.insert_message(sid, Role.USER, "x")
    (tmp_path / "x").mkdir()  # a sibling that "../x" would reach from sessions/
    before = snapshot(tmp_path)
    call = INVALID_ID_CALLS[method]
    for bad in INVALID_IDS:
        with no_file_system() as touched, pytest.raises(InvalidSessionIdError) as excinfo:
            call(fstore, bad)
        assert touched == [], f"{method}({bad!r}) touched the file system: {touched}"
        assert repr(bad) in str(excinfo.value), f"the error does not name the id: {excinfo.value}"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("sid", VALID_IDS)
def test_imported_style_ids_are_accepted(fstore: FileStore, root: Path, sid: str) -> None:
    assert fstore.load_context(sid) == []
    assert fstore.load_all_messages(sid) == []
    assert fstore.last_assistant_message(sid) == ""
    assert fstore.last_user_message(sid) == ""
    assert fstore.has_pending_tool_calls(sid) is False
    assert fstore.session_token_usage(sid) == SessionUsage()
    assert fstore.session_usage_by_agent(sid) == []
    assert fstore.get_metadata(sid, "k") is None
    assert fstore.get_todo(sid) is None
    assert fstore.delete_session(sid) is False
    with pytest.raises(SessionNotFoundError):
        fstore.insert_message(sid, Role.USER, "x")
    with pytest.raises(SessionNotFoundError):
        fstore.set_metadata(sid, "k", "v")
    with pytest.raises(SessionNotFoundError):
        fstore.set_todo(sid, "t")
    assert not session_dir(root, sid).exists()


def _write_imported_session(root: Path, sid: str, lines: list[dict[str, Any]], created_at: str) -> None:
    """A session written by hand (or by an importer) following the README's format."""
    session_dir(root, sid).mkdir(parents=True)
    header = {"agent_name": "imported", "created_at": created_at, "id": sid, "metadata": {"origin": "sqlite"}}
    metadata_path(root, sid).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(messages_path(root, sid), "wb") as fh:
        for line in lines:
            fh.write(orjson.dumps(line) + b"\n")


def test_hand_written_imported_session_is_read(fstore: FileStore, root: Path, tmp_path: Path) -> None:
    own = fstore.create_session("koda", tmp_path / "proj")
    sid = "imported.Session_1"
    _write_imported_session(
        root,
        sid,
        [
            {
                "id": 900001,
                "role": "user",
                "content": "old question",
                "created_at": "2020-01-01T00:00:00.000000Z",
            },
            {
                "id": 900002,
                "role": "assistant",
                "content": "old answer",
                "prompt_tokens": 7,
                "completion_tokens": 8,
                "created_at": "2020-01-01T00:00:01.000000Z",
            },
        ],
        "2020-01-01T00:00:00.000000Z",
    )
    msgs = fstore.load_all_messages(sid)
    assert [(m.id, m.role, m.content, m.session_id) for m in msgs] == [
        (900001, Role.USER, "old question", sid),
        (900002, Role.ASSISTANT, "old answer", sid),
    ]
    assert msgs[0].prompt_tokens is None and msgs[1].prompt_tokens == 7
    assert fstore.get_metadata(sid, "origin") == "sqlite"
    listed = fstore.list_sessions(10, tmp_path / "proj")
    assert [i.id for i in listed] == [own, sid]
    assert listed[1].message_count == 2 and listed[1].total_tokens == 15
    assert listed[1].agent_name == "imported"
    new_id = fstore.insert_message(sid, Role.USER, "new question")
    assert new_id > 900002
    assert fstore.last_user_message(sid) == "new question"


# ==============================================================================================
# Semantics: sessions
# ==============================================================================================


def test_create_session_records_agent_and_absolute_project_root(
    store: FileStore, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sid = store.create_session("my-agent", "proj/sub/..")
    expected_root = os.path.abspath("proj/sub/..")
    assert expected_root == str(tmp_path / "proj")
    assert expected_root in _string_values(json.loads(metadata_path(root, sid).read_text(encoding="utf-8")))
    [info] = store.list_sessions(10, tmp_path / "proj")
    assert info.id == sid and info.agent_name == "my-agent"
    assert info.message_count == 0 and info.total_tokens == 0
    parse_iso_utc(info.created_at)
    assert store.list_sessions(10, tmp_path / "other") == []


def test_create_session_keeps_symlinks_in_the_project_root(store: FileStore, root: Path, tmp_path: Path) -> None:
    real = tmp_path / "real-proj"
    real.mkdir()
    link = tmp_path / "link-proj"
    os.symlink(real, link)
    sid = store.create_session("koda", link)
    # os.path.abspath, not realpath: the link's own path is recorded and matched
    assert str(link) in _string_values(json.loads(metadata_path(root, sid).read_text(encoding="utf-8")))
    assert str(real) not in _string_values(json.loads(metadata_path(root, sid).read_text(encoding="utf-8")))
    assert [i.id for i in store.list_sessions(5, link)] == [sid]
    assert store.list_sessions(5, real) == []


def test_create_session_accepts_pathlike(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path / "p")
    assert [i.id for i in store.list_sessions(5, str(tmp_path / "p"))] == [sid]


def _drop_project_root(root: Path, sid: str, *, how: str) -> None:
    def edit(obj: dict[str, Any]) -> None:
        holder = obj
        if "project_root" not in holder:
            for value in obj.values():
                if isinstance(value, dict) and "project_root" in value:
                    holder = value
        assert "project_root" in holder, f"no project_root in metadata.json: {obj}"
        if how == "remove":
            del holder["project_root"]
        else:
            holder["project_root"] = None

    rewrite_json(metadata_path(root, sid), edit)


def test_list_sessions_filters_by_normalised_root_and_includes_rootless(
    store: FileStore, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proj").mkdir()
    a = store.create_session("koda", "proj")
    other = store.create_session("koda", tmp_path / "elsewhere")
    b = store.create_session("koda", tmp_path / "proj")
    imported_removed = store.create_session("koda", tmp_path / "elsewhere")
    imported_null = store.create_session("koda", tmp_path / "elsewhere")
    _drop_project_root(root, imported_removed, how="remove")
    _drop_project_root(root, imported_null, how="null")
    for query in ("proj", "proj/../proj", str(tmp_path / "proj"), tmp_path / "proj", "./proj/"):
        got = [i.id for i in store.list_sessions(10, query)]
        assert got == [imported_null, imported_removed, b, a], query
    assert [i.id for i in store.list_sessions(10, tmp_path / "elsewhere")] == [
        imported_null,
        imported_removed,
        other,
    ]
    assert [i.id for i in store.list_sessions(10, tmp_path / "nowhere")] == [imported_null, imported_removed]


def test_list_sessions_newest_first_with_limit(store: FileStore, tmp_path: Path) -> None:
    sids = [store.create_session("koda", tmp_path) for _ in range(12)]
    listed = store.list_sessions(100, tmp_path)
    assert [i.id for i in listed] == sids[::-1]
    stamps = [parse_iso_utc(i.created_at) for i in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert [i.id for i in store.list_sessions(3, tmp_path)] == sids[::-1][:3]
    assert store.list_sessions(0, tmp_path) == []


def test_list_sessions_ties_on_created_at_put_the_later_created_first(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    sids = [store.create_session("koda", tmp_path) for _ in range(4)]
    same = "2030-01-01T00:00:00.000000Z"

    def set_created(obj: dict[str, Any]) -> None:
        holder = obj if "created_at" in obj else next(v for v in obj.values() if isinstance(v, dict))
        holder["created_at"] = same

    for sid in sids:  # a person (or an importer) gave them all one creation time
        rewrite_json(metadata_path(root, sid), set_created)
    listed = store.list_sessions(10, tmp_path)
    assert [i.created_at for i in listed] == [same] * 4
    assert [i.id for i in listed] == sids[::-1]


def test_list_sessions_negative_limit_raises(store: FileStore, tmp_path: Path) -> None:
    store.create_session("koda", tmp_path)
    with pytest.raises(ValueError):
        store.list_sessions(-1, tmp_path)


def test_list_sessions_counts_archived_messages_and_tokens(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q1")
    store.insert_message(sid, Role.ASSISTANT, "a1", None, None, TokenUsage(100, 10, 1000, 1000, 1000))
    store.insert_message(sid, Role.USER, "q2")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "a2", None, None, TokenUsage(200, 20, 5, 5, 5), "sub")
    assert store.compact_session(sid, "summary", 1) == 3
    [info] = store.list_sessions(10, tmp_path)
    assert info.message_count == 6  # 3 archived + summary + hint + 1 preserved
    assert info.total_tokens == 330
    store.purge_compacted(0)
    [info] = store.list_sessions(10, tmp_path)
    assert info.message_count == 3
    assert info.total_tokens == 220


def test_list_sessions_skips_an_unreadable_session_with_a_warning(
    store: FileStore, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good1 = store.create_session("koda", tmp_path)
    bad = store.create_session("koda", tmp_path)
    good2 = store.create_session("koda", tmp_path)
    metadata_path(root, bad).write_text("{ this is not json", encoding="utf-8")
    empty_dir = sessions_dir(root) / "emptydir"
    empty_dir.mkdir()
    caplog.set_level(logging.WARNING, logger="koda_files")
    got = [i.id for i in store.list_sessions(10, tmp_path)]
    assert got == [good2, good1]
    warnings = [r for r in caplog.records if r.name.startswith("koda_files") and r.levelno >= logging.WARNING]
    assert any(bad in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]


def test_delete_session_removes_only_its_directory_and_says_whether_it_existed(
    store: FileStore, root: Path, tmp_path: Path,
) -> None:
    keep = store.create_session("koda", tmp_path)
    store.insert_message(keep, Role.USER, "keep me")
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "bye")
    store.set_todo(sid, "t")
    store.set_metadata(sid, "k", "v")
    keep_before = snapshot(session_dir(root, keep), include_dot_files=False)
    assert store.delete_session(sid) is True
    assert not session_dir(root, sid).exists()
    assert store.delete_session(sid) is False
    assert store.delete_session("never-existed") is False
    assert store.load_all_messages(sid) == []
    assert [i.id for i in store.list_sessions(10, tmp_path)] == [keep]
    assert snapshot(session_dir(root, keep), include_dot_files=False) == keep_before
    assert store.recent_user_messages(10) == ["keep me"]
    with pytest.raises(SessionNotFoundError):
        store.insert_message(sid, Role.USER, "x")
    assert not session_dir(root, sid).exists()


def test_delete_session_does_not_follow_a_symlink_inside_the_session(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "x")
    os.symlink(outside, session_dir(root, sid) / "link-to-outside")
    os.symlink(outside / "precious.txt", session_dir(root, sid) / "file-link")
    assert store.delete_session(sid) is True
    assert not session_dir(root, sid).exists()
    assert (outside / "precious.txt").read_text() == "keep"


def test_delete_session_does_not_follow_a_symlinked_session_dir(store: FileStore, root: Path, tmp_path: Path) -> None:
    store.create_session("koda", tmp_path)  # the root and sessions/ exist
    outside = tmp_path / "outside-session"
    outside.mkdir()
    (outside / "messages.jsonl").write_bytes(b'{"id":1,"role":"user","content":"x"}\n')
    (outside / "metadata.json").write_text('{\n  "agent_name": "x",\n  "id": "linked"\n}\n')
    os.symlink(outside, sessions_dir(root) / "linked")
    store.delete_session("linked")
    assert (outside / "messages.jsonl").read_bytes() == b'{"id":1,"role":"user","content":"x"}\n'
    assert (outside / "metadata.json").exists()


# ==============================================================================================
# Semantics: inserting
# ==============================================================================================


def test_insert_ids_unique_across_sessions_and_increasing_within(store: FileStore, tmp_path: Path) -> None:
    s1 = store.create_session("koda", tmp_path)
    s2 = store.create_session("koda", tmp_path)
    ids: dict[str, list[int]] = {s1: [], s2: []}
    for i in range(10):
        sid = s1 if i % 3 else s2
        new = store.insert_message(sid, Role.USER, f"m{i}")
        assert isinstance(new, int) and not isinstance(new, bool)
        ids[sid].append(new)
    every = ids[s1] + ids[s2]
    assert len(set(every)) == len(every)
    for sid in (s1, s2):
        assert ids[sid] == sorted(ids[sid]) and len(set(ids[sid])) == len(ids[sid])
        assert [m.id for m in store.load_all_messages(sid)] == ids[sid]


def test_insert_ids_unique_across_stores_on_one_root(root: Path, tmp_path: Path) -> None:
    a = FileStore(root)
    b = FileStore(root)
    s1 = a.create_session("koda", tmp_path)
    s2 = b.create_session("koda", tmp_path)
    seen: list[int] = []
    for i in range(10):
        seen.append((a if i % 2 else b).insert_message(s1 if i % 3 else s2, Role.USER, str(i)))
    assert len(set(seen)) == len(seen)
    for sid in (s1, s2):
        got = [m.id for m in a.load_all_messages(sid)]
        assert got == sorted(got)


def test_insert_ids_never_reused_after_purge_delete_or_reopen(root: Path, tmp_path: Path) -> None:
    store = FileStore(root)
    handed: list[int] = []
    s1 = store.create_session("koda", tmp_path)
    handed += [store.insert_message(s1, Role.USER, f"a{i}") for i in range(4)]
    assert store.compact_session(s1, "sum", 0) == 4
    handed += [m.id for m in store.load_all_messages(s1)[4:]]  # summary and hint
    assert store.purge_compacted(0) == 4
    store = FileStore(root)
    s2 = store.create_session("koda", tmp_path)
    handed += [store.insert_message(s2, Role.USER, f"b{i}") for i in range(3)]
    assert store.delete_session(s2)
    for _ in range(2):
        store = FileStore(root)  # a fresh process would only see the files
        s3 = store.create_session("koda", tmp_path)
        new = store.insert_message(s3, Role.USER, "c")
        assert new not in handed, f"id {new} handed out twice"
        handed.append(new)
        assert store.delete_session(s3)
    newer = FileStore(root).insert_message(s1, Role.USER, "d")
    assert newer not in handed
    assert newer > max(m.id for m in FileStore(root).load_all_messages(s1)[:-1])
    assert len(set(handed)) == len(handed)


@pytest.mark.parametrize("with_agent", [False, True])
def test_insert_into_missing_session_raises_and_creates_nothing(
    store: FileStore, root: Path, tmp_path: Path, with_agent: bool
) -> None:
    existing = store.create_session("koda", tmp_path)
    before = snapshot(root, include_dot_files=False)
    missing = str(uuid.uuid4())
    with pytest.raises(SessionNotFoundError) as excinfo:
        if with_agent:
            store.insert_message_with_agent(missing, Role.USER, "x", None, None, None, "sub")
        else:
            store.insert_message(missing, Role.USER, "x")
    assert missing in str(excinfo.value)
    assert not session_dir(root, missing).exists()
    assert snapshot(root, include_dot_files=False) == before
    assert store.load_all_messages(existing) == []


def test_insert_after_another_store_deleted_the_session(root: Path, tmp_path: Path) -> None:
    a = FileStore(root)
    b = FileStore(root)
    sid = a.create_session("koda", tmp_path)
    b.insert_message(sid, Role.USER, "one")  # b may now hold the log open
    b.set_todo(sid, "t")
    assert a.delete_session(sid) is True
    with pytest.raises(SessionNotFoundError):
        b.insert_message(sid, Role.USER, "two")
    with pytest.raises(SessionNotFoundError):
        b.set_todo(sid, "t2")
    with pytest.raises(SessionNotFoundError):
        b.set_metadata(sid, "k", "v")
    assert not session_dir(root, sid).exists()
    assert b.load_all_messages(sid) == []
    assert b.get_todo(sid) is None


def test_every_store_sees_the_others_writes_at_once(root: Path, tmp_path: Path) -> None:
    a = FileStore(root)
    b = FileStore(root)
    sid = a.create_session("koda", tmp_path)
    for i in range(5):
        writer, reader = (a, b) if i % 2 else (b, a)
        writer.insert_message(sid, Role.USER, f"m{i}")
        assert [m.content for m in reader.load_all_messages(sid)] == [f"m{j}" for j in range(i + 1)]
        assert reader.last_user_message(sid) == f"m{i}"
        writer.set_metadata(sid, "turn", str(i))
        assert reader.get_metadata(sid, "turn") == str(i)
    assert b.compact_session(sid, "sum", 1) == 4
    assert [m.content for m in a.load_context(sid)][::2] == ["sum", "m4"]
    assert a.compacted_stats().message_count == 4
    assert a.purge_compacted(0) == 4
    assert b.compacted_stats().message_count == 0


def test_messages_jsonl_replaced_by_hand_between_appends(fstore: FileStore, root: Path, tmp_path: Path) -> None:
    sid = fstore.create_session("koda", tmp_path)
    fstore.insert_message(sid, Role.USER, "m1")
    fstore.insert_message(sid, Role.ASSISTANT, "m2")
    assert [m.content for m in fstore.load_all_messages(sid)] == ["m1", "m2"]
    path = messages_path(root, sid)
    # an editor saves a new file over the old one (new inode), fixing a typo and adding a note
    lines = raw_lines(path)
    tmp = path.with_name("messages.jsonl.edit")
    tmp.write_bytes(lines[0].replace(b'"m1"', b'"M1"') + b"\n# a note a person added\n" + lines[1] + b"\n")
    os.replace(tmp, path)
    assert [m.content for m in fstore.load_all_messages(sid)] == ["M1", "m2"]
    fstore.insert_message(sid, Role.USER, "m3")
    assert [m.content for m in fstore.load_all_messages(sid)] == ["M1", "m2", "m3"]
    assert [m.content for m in FileStore(root).load_all_messages(sid)] == ["M1", "m2", "m3"]
    assert b"# a note a person added" in raw_lines(path)
    ids = [m.id for m in fstore.load_all_messages(sid)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_messages_jsonl_edited_in_place_after_an_append(fstore: FileStore, root: Path, tmp_path: Path) -> None:
    """A person fixes a line in place (same size, same inode) after the store appended.

    A same-size edit is seen through the file's mtime, so it must land on a later tick of the
    file system's clock than the append (as any edit by a person does; see README, Guarantees).
    """
    sid = fstore.create_session("koda", tmp_path)
    fstore.insert_message(sid, Role.USER, "m1")
    fstore.insert_message(sid, Role.ASSISTANT, "m2")
    assert [m.content for m in fstore.load_all_messages(sid)] == ["m1", "m2"]
    fstore.insert_message(sid, Role.USER, "m3")  # the store's own append, not read back yet
    time.sleep(0.1)
    path = messages_path(root, sid)
    data = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.write(data.replace(b'"m1"', b'"X1"'))
    assert [m.content for m in FileStore(root).load_all_messages(sid)] == ["X1", "m2", "m3"]
    assert [m.content for m in fstore.load_all_messages(sid)] == ["X1", "m2", "m3"], "stale read"
    assert [m.content for m in fstore.load_context(sid)] == ["X1", "m2", "m3"]
    fstore.insert_message(sid, Role.USER, "m4")
    assert [m.content for m in fstore.load_all_messages(sid)] == ["X1", "m2", "m3", "m4"]


def test_usage_none_stores_null_token_fields_and_token_usage_all_five(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.ASSISTANT, "none")
    store.insert_message(sid, Role.ASSISTANT, "zeros", None, None, TokenUsage())
    store.insert_message(sid, Role.ASSISTANT, "full", None, None, TokenUsage(1, 2, 3, 4, 5, "end_turn"))
    none, zeros, full = store.load_all_messages(sid)
    assert [getattr(none, k) for k in TOKEN_FIELDS] == [None] * 5
    assert [getattr(zeros, k) for k in TOKEN_FIELDS] == [0] * 5
    assert [getattr(full, k) for k in TOKEN_FIELDS] == [1, 2, 3, 4, 5]


def test_agent_name_is_stored_as_given(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.ASSISTANT, "main agent")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "sub", None, None, None, "reviewer")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "explicit none", None, None, None, None)
    objs = json_lines(messages_path(root, sid))
    assert [o.get("agent_name") for o in objs] == [None, "reviewer", None]
    msgs = store.load_all_messages(sid)
    assert [m.agent_name for m in msgs] == [None, "reviewer", None]
    assert all(m.session_id == sid for m in msgs)


# ==============================================================================================
# Semantics: reading
# ==============================================================================================


def _ctx(store: FileStore, sid: str) -> list[tuple[str, str | None]]:
    return [(m.role.value, m.content) for m in store.load_context(sid)]


def test_load_context_drops_unanswered_tool_call(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "go")
    store.insert_message(sid, Role.ASSISTANT, "calling", tool_calls_json("c9"))  # never answered
    store.insert_message(sid, Role.USER, "next")
    assert _ctx(store, sid) == [("user", "go"), ("user", "next")]
    assert len(store.load_all_messages(sid)) == 3


def test_load_context_partially_answered_calls_drop_the_whole_turn(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "go")
    store.insert_message(sid, Role.ASSISTANT, "calling", tool_calls_json("c1", "c2"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")  # c2 is never answered
    store.insert_message(sid, Role.ASSISTANT, "after")
    # c2 is unanswered, so the assistant turn goes, and with it every result it owns: r1 would
    # otherwise answer a call the model never made (koda's one pass over the ids keeps it).
    assert _ctx(store, sid) == [("user", "go"), ("assistant", "after")]


def test_load_context_drops_orphan_tool_result(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "go")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c1"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")
    store.insert_message(sid, Role.TOOL, "orphan", None, "zz")
    store.insert_message(sid, Role.ASSISTANT, "done")
    assert _ctx(store, sid) == [("user", "go"), ("assistant", None), ("tool", "r1"), ("assistant", "done")]


def test_load_context_drops_blank_assistant_without_tool_calls(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, None)  # neither content nor tool calls
    store.insert_message(sid, Role.ASSISTANT, "")  # empty
    store.insert_message(sid, Role.ASSISTANT, " \n\t ")  # whitespace only
    store.insert_message(sid, Role.ASSISTANT, "\u00a0\u2028")  # unicode whitespace only
    store.insert_message(sid, Role.ASSISTANT, "  real  ")
    store.insert_message(sid, Role.USER, "   ")  # not an assistant: kept
    store.insert_message(sid, Role.SYSTEM, None)  # not an assistant: kept
    assert _ctx(store, sid) == [("user", "q"), ("assistant", "  real  "), ("user", "   "), ("system", None)]
    assert len(store.load_all_messages(sid)) == 8


def test_load_context_keeps_blank_assistant_with_answered_tool_calls(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.ASSISTANT, "   ", tool_calls_json("c1"))
    store.insert_message(sid, Role.TOOL, "r", None, "c1")
    assert _ctx(store, sid) == [("assistant", "   "), ("tool", "r")]


def test_load_context_drops_a_blank_assistant_with_an_unanswered_call(store: FileStore, tmp_path: Path) -> None:
    # Blank content and an unanswered call: the turn goes with the result of its answered call c1.
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, "", tool_calls_json("c1", "lost"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")
    store.insert_message(sid, Role.ASSISTANT, "ok", tool_calls_json("c3"))
    store.insert_message(sid, Role.TOOL, "r3", None, "c3")
    assert _ctx(store, sid) == [("user", "q"), ("assistant", "ok"), ("tool", "r3")]


def test_load_context_matches_the_reference_sanitiser(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    rows: list[tuple[Role, str | None, str | None, str | None]] = [
        (Role.SYSTEM, "sys", None, None),
        (Role.USER, "u", None, None),
        (Role.ASSISTANT, None, tool_calls_json("a", "b"), None),
        (Role.TOOL, "ra", None, "a"),
        (Role.TOOL, "rb", None, "b"),
        (Role.ASSISTANT, " ", tool_calls_json("c"), None),
        (Role.TOOL, "rd", None, "d"),
        (Role.TOOL, "no id", None, None),  # answers nothing
        (Role.USER, None, tool_calls_json("e"), None),  # only assistant calls count
        (Role.ASSISTANT, "x", None, "f"),  # only tool results count
        (Role.ASSISTANT, "\n", None, None),
        (Role.ASSISTANT, "fine", None, None),
    ]
    for role, content, calls, call_id in rows:
        store.insert_message(sid, role, content, calls, call_id)
    everything = store.load_all_messages(sid)
    expected = [everything[i] for i in sanitize_indices([as_msg(m) for m in everything])]
    assert store.load_context(sid) == expected
    assert [m.content for m in expected] == ["sys", "u", None, "ra", "rb", None, "x", "fine"]


def test_load_all_messages_includes_archived_unsanitised(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("never"))
    store.insert_message(sid, Role.ASSISTANT, "  ")
    store.insert_message(sid, Role.TOOL, "orphan", None, "nobody")
    store.insert_message(sid, Role.USER, "tail")
    assert store.compact_session(sid, "S", 1) == 4
    got = store.load_all_messages(sid)
    assert [(m.role.value, m.content) for m in got[:4]] == [
        ("user", "q"),
        ("assistant", None),
        ("assistant", "  "),
        ("tool", "orphan"),
    ]
    assert all(m.compacted_at is not None for m in got[:4])
    assert all(m.compacted_at is None for m in got[4:])
    assert [m.content for m in got][4] == "S"
    assert got[-1].content == "tail"


def test_recent_user_messages_across_sessions_newest_first(store: FileStore, tmp_path: Path) -> None:
    s1 = store.create_session("koda", tmp_path / "a")
    s2 = store.create_session("koda", tmp_path / "b")
    store.insert_message(s1, Role.USER, "one")
    store.insert_message(s2, Role.USER, "two")
    store.insert_message(s1, Role.ASSISTANT, "not a user message")
    store.insert_message(s1, Role.USER, "")
    store.insert_message(s1, Role.USER, None)
    store.insert_message(s2, Role.USER, " ")
    store.insert_message(s1, Role.USER, "three")
    store.insert_message(s2, Role.SYSTEM, "sys")
    assert store.recent_user_messages(10) == ["three", " ", "two", "one"]
    assert store.recent_user_messages(2) == ["three", " "]
    assert store.recent_user_messages(0) == []
    with pytest.raises(ValueError):
        store.recent_user_messages(-1)
    store.compact_session(s1, "sum", 0)  # archived messages still count
    assert store.recent_user_messages(10) == ["three", " ", "two", "one"]
    store.delete_session(s2)
    assert store.recent_user_messages(10) == ["three", "one"]


def test_last_assistant_and_user_message_skip_null_content_but_not_empty(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    assert store.last_assistant_message(sid) == ""
    assert store.last_user_message(sid) == ""
    store.insert_message(sid, Role.USER, "u1")
    store.insert_message(sid, Role.ASSISTANT, "a1")
    store.insert_message(sid, Role.USER, None)
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c"))
    store.insert_message(sid, Role.TOOL, "r", None, "c")
    assert store.last_assistant_message(sid) == "a1"
    assert store.last_user_message(sid) == "u1"
    store.insert_message(sid, Role.ASSISTANT, "")  # non-null: it counts
    store.insert_message(sid, Role.USER, "")
    assert store.last_assistant_message(sid) == ""
    assert store.last_user_message(sid) == ""
    store.insert_message(sid, Role.USER, "u2")
    assert store.last_user_message(sid) == "u2"


def test_last_messages_follow_conversation_order_after_compaction(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "u1")
    store.insert_message(sid, Role.ASSISTANT, "a1")
    store.insert_message(sid, Role.USER, "u2")
    store.insert_message(sid, Role.ASSISTANT, "a2 (preserved)")
    assert store.compact_session(sid, "summary", 1) == 3
    # conversation order: u1 a1 u2 | summary hint a2 -- the hint is not the last assistant message
    assert store.last_assistant_message(sid) == "a2 (preserved)"
    assert store.last_user_message(sid) == "u2"  # archived messages count


def test_has_pending_tool_calls_only_for_an_unanswered_assistant_call(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    assert store.has_pending_tool_calls(sid) is False
    store.insert_message(sid, Role.USER, "q")
    assert store.has_pending_tool_calls(sid) is False
    store.insert_message(sid, Role.ASSISTANT, "calling", tool_calls_json("c1"))
    assert store.has_pending_tool_calls(sid) is True
    store.insert_message(sid, Role.TOOL, "r", None, "c1")
    assert store.has_pending_tool_calls(sid) is False
    store.insert_message(sid, Role.USER, "q2", tool_calls_json("c9"))  # not an assistant
    assert store.has_pending_tool_calls(sid) is False
    store.insert_message(sid, Role.ASSISTANT, "plain")
    assert store.has_pending_tool_calls(sid) is False


def test_has_pending_tool_calls_looks_at_the_last_active_message(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c1"))
    assert store.compact_session(sid, "sum", 1) == 1
    # conversation order: q | summary, hint, assistant-with-calls: the last active one is pending
    assert store.has_pending_tool_calls(sid) is True
    assert store.compact_session(sid, "sum2", 0) == 3
    assert store.has_pending_tool_calls(sid) is False  # the last active message is now the hint


def test_session_token_usage_sums_every_message_with_usage_archived_included(
    store: FileStore, root: Path, tmp_path: Path,
) -> None:
    sid = store.create_session("koda", tmp_path)
    assert store.session_token_usage(sid) == SessionUsage()
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, "a", None, None, TokenUsage(10, 1, 2, 3, 4))
    store.insert_message_with_agent(sid, Role.ASSISTANT, "b", None, None, TokenUsage(20, 2, 0, 0, 1), "sub")
    store.insert_message(sid, Role.ASSISTANT, "c", None, None, TokenUsage())  # zero, but non-null
    assert store.session_token_usage(sid) == SessionUsage(30, 3, 2, 3, 5, 3)
    store.compact_session(sid, "sum", 0)  # archived messages still count
    assert store.session_token_usage(sid) == SessionUsage(30, 3, 2, 3, 5, 3)


def test_session_token_usage_counts_messages_with_prompt_or_completion(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    # lines written by hand / an importer
    append_line(root, sid, {"id": 800001, "role": "assistant", "content": "x", "cache_read_tokens": 50})
    append_line(root, sid, {"id": 800002, "role": "assistant", "content": "y", "completion_tokens": 7})
    append_line(root, sid, {"id": 800003, "role": "assistant", "content": "z", "prompt_tokens": 3})
    usage = store.session_token_usage(sid)
    assert usage == SessionUsage(3, 7, 0, 0, 0, 2)


def test_session_usage_by_agent_groups_by_agent_and_leaves_out_messages_without_usage(
    store: FileStore, tmp_path: Path,
) -> None:
    sid = store.create_session("koda", tmp_path)
    assert store.session_usage_by_agent(sid) == []
    store.insert_message(sid, Role.ASSISTANT, "m1", None, None, TokenUsage(5, 5, 1, 0, 0))
    store.insert_message_with_agent(sid, Role.ASSISTANT, "m2", None, None, TokenUsage(1, 1), "main")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "z", None, None, TokenUsage(30, 0), "zeta")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "a", None, None, TokenUsage(10, 2), "alpha")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "b", None, None, TokenUsage(0, 12, 0, 0, 9), "beta")
    store.insert_message_with_agent(sid, Role.ASSISTANT, "no usage", None, None, None, "ghost")
    assert store.session_usage_by_agent(sid) == [
        ("zeta", SessionUsage(30, 0, 0, 0, 0, 1)),
        ("alpha", SessionUsage(10, 2, 0, 0, 0, 1)),
        ("beta", SessionUsage(0, 12, 0, 0, 9, 1)),
        ("main", SessionUsage(6, 6, 1, 0, 0, 2)),
    ]


# ==============================================================================================
# Semantics: compaction and purge
# ==============================================================================================


def test_compact_session_puts_summary_and_hint_before_the_preserved_tail(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    sid = store.create_session("koda", tmp_path)
    for i in range(3):
        store.insert_message(sid, Role.USER, f"u{i}")
        store.insert_message(sid, Role.ASSISTANT, f"a{i}", None, None, TokenUsage(1, 1))
    before_ids = [m.id for m in store.load_all_messages(sid)]
    assert store.compact_session(sid, "THE SUMMARY", 2) == 4
    ctx = store.load_context(sid)
    assert (ctx[0].role, ctx[0].content) == (Role.SYSTEM, "THE SUMMARY")
    assert ctx[1].role is Role.ASSISTANT
    assert ctx[1].content is not None and "compacted" in ctx[1].content.lower()
    assert [m.content for m in ctx[2:]] == ["u2", "a2"]
    assert [m.id for m in ctx[2:]] == before_ids[4:]
    for m in ctx[:2]:
        assert m.tool_calls is None and m.tool_call_id is None
        assert [getattr(m, k) for k in TOKEN_FIELDS] == [None] * 5
        assert m.id not in before_ids
    assert ctx[0].id < ctx[1].id
    everything = store.load_all_messages(sid)
    assert [m.content for m in everything] == [
        "u0",
        "a0",
        "u1",
        "a1",
        "THE SUMMARY",
        ctx[1].content,
        "u2",
        "a2",
    ]
    assert [m.compacted_at is not None for m in everything] == [True] * 4 + [False] * 4
    objs = json_lines(messages_path(root, sid))
    assert [o.get("content") for o in objs] == [m.content for m in everything]
    # Archived lines are never rewritten: the summary line records the compaction and its time.
    for o in objs:
        assert o.get("compacted_at") is None
    parse_iso_utc(objs[4]["compaction"])
    assert all(m.compacted_at == objs[4]["compaction"] for m in everything[:4])
    assert store.session_token_usage(sid).api_calls == 3


def test_compact_session_second_round_archives_the_first_summary(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    for i in range(4):
        store.insert_message(sid, Role.USER, f"m{i}")
    assert store.compact_session(sid, "S1", 1) == 3
    store.insert_message(sid, Role.USER, "m4")
    assert store.compact_session(sid, "S2", 1) == 3  # S1, hint1, m3
    ctx = [m.content for m in store.load_context(sid)]
    assert ctx[0] == "S2" and ctx[2:] == ["m4"]
    contents = [m.content for m in store.load_all_messages(sid)]
    assert contents[:3] == ["m0", "m1", "m2"]
    assert contents[3] == "S1" and contents[5] == "m3"
    assert contents[6] == "S2" and contents[8] == "m4"


@pytest.mark.parametrize("preserve", [0, 1])
def test_compact_session_archive_everything(store: FileStore, tmp_path: Path, preserve: int) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "a")
    store.insert_message(sid, Role.USER, "b")
    assert store.compact_session(sid, "sum", preserve) == 2 - preserve
    ctx = store.load_context(sid)
    assert [m.role for m in ctx[:2]] == [Role.SYSTEM, Role.ASSISTANT]
    assert [m.content for m in ctx[2:]] == ["b"][:preserve]


@pytest.mark.parametrize("preserve", [3, 4, 100])
def test_compact_session_nothing_to_archive_changes_nothing(
    store: FileStore, root: Path, tmp_path: Path, preserve: int
) -> None:
    sid = store.create_session("koda", tmp_path)
    empty = store.create_session("koda", tmp_path)
    for c in ("a", "b", "c"):
        store.insert_message(sid, Role.USER, c)
    before = snapshot(root, include_dot_files=False)
    assert store.compact_session(sid, "sum", preserve) == 0
    assert store.compact_session(empty, "sum", 0) == 0
    assert snapshot(root, include_dot_files=False) == before


def test_compact_session_negative_count_raises_and_changes_nothing(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "a")
    before = snapshot(root, include_dot_files=False)
    with pytest.raises(ValueError):
        store.compact_session(sid, "sum", -1)
    assert snapshot(root, include_dot_files=False) == before


def test_compact_missing_session_creates_nothing(store: FileStore, root: Path, tmp_path: Path) -> None:
    store.create_session("koda", tmp_path)
    missing = str(uuid.uuid4())
    try:
        result = store.compact_session(missing, "sum", 0)
    except SessionNotFoundError:
        result = 0
    assert result == 0
    assert not session_dir(root, missing).exists()


def test_compaction_boundary_keeps_the_call_group_whole(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "q")
    store.insert_message(sid, Role.ASSISTANT, None, tool_calls_json("c1"))
    store.insert_message(sid, Role.TOOL, "r1", None, "c1")
    store.insert_message(sid, Role.ASSISTANT, "done")
    # The tail of 2 would start at r1, inside its call's group: the group is kept whole.
    assert store.compact_session(sid, "sum", 2) == 1
    assert [m.content for m in store.load_context(sid)][2:] == [None, "r1", "done"]
    assert [m.content for m in store.load_all_messages(sid)] == ["q", "sum", COMPACTION_HINT, None, "r1", "done"]


def test_compacted_stats_counts_archived_messages_their_utf8_bytes_and_sessions(
    store: FileStore, tmp_path: Path,
) -> None:
    assert store.compacted_stats() == CompactedStats(0, 0, 0, None)
    s1 = store.create_session("koda", tmp_path)
    s2 = store.create_session("koda", tmp_path)
    s3 = store.create_session("koda", tmp_path)
    calls = tool_calls_json("c1")
    store.insert_message(s1, Role.USER, "héllo")  # 6 bytes
    store.insert_message(s1, Role.ASSISTANT, "😀", calls)  # 4 bytes + tool_calls
    store.insert_message(s1, Role.TOOL, None, None, "c1")  # 0 bytes
    store.insert_message(s1, Role.USER, "kept")
    store.insert_message(s2, Role.USER, "abc")  # 3 bytes
    store.insert_message(s2, Role.USER, "kept")
    store.insert_message(s3, Role.USER, "never archived")
    assert store.compact_session(s1, "s1 summary", 1) == 3
    assert store.compact_session(s2, "s2 summary", 1) == 1
    stats = store.compacted_stats()
    assert stats.message_count == 4
    assert stats.session_count == 2
    assert stats.size_bytes == 6 + 4 + len(calls.encode()) + 0 + 3
    archived = [m for s in (s1, s2) for m in store.load_all_messages(s) if m.compacted_at is not None]
    stamps = [m.compacted_at for m in archived if m.compacted_at is not None]
    assert stats.oldest == min(stamps, key=parse_iso_utc)
    assert stats.oldest is not None
    parse_iso_utc(stats.oldest)


def test_purge_compacted_by_age(store: FileStore, root: Path, tmp_path: Path) -> None:
    """A message's `compacted_at` is the time of the first compaction after it; purge goes by that."""
    s1 = store.create_session("koda", tmp_path)
    s2 = store.create_session("koda", tmp_path)
    for content, summary in (("ancient", "c1"), ("old", "c2"), ("recent", "c3")):
        store.insert_message(s1, Role.USER, content)
        store.compact_session(s1, summary, 0)
    store.insert_message(s1, Role.USER, "kept")
    for c in ("s2-recent", "s2-kept"):
        store.insert_message(s2, Role.USER, c)
    assert store.compact_session(s2, "sum2", 1) == 1
    now = datetime.now(timezone.utc)
    age_compaction(messages_path(root, s1), "c1", datetime(2000, 1, 1, tzinfo=timezone.utc))
    age_compaction(messages_path(root, s1), "c2", now - timedelta(days=3))
    assert store.compacted_stats().oldest == "2000-01-01T00:00:00.000000Z"
    lines1 = raw_lines(messages_path(root, s1))
    lines2 = raw_lines(messages_path(root, s2))
    assert store.purge_compacted(30) == 1  # "ancient", archived in 2000
    assert [m.content for m in store.load_all_messages(s1)][:2] == ["c1", COMPACTION_HINT]
    assert store.purge_compacted(5) == 0  # c1's summary and hint were archived by c2, 3 days ago
    assert store.purge_compacted(2) == 3  # c1, its hint, "old"
    assert [m.content for m in store.load_all_messages(s1)][:1] == ["c2"]
    assert store.compacted_stats().message_count == 4  # c2, its hint, "recent"; "s2-recent"
    assert store.purge_compacted(0) == 4
    assert store.compacted_stats() == CompactedStats(0, 0, 0, None)
    # What is kept is copied byte for byte: the file is cut before the last compaction line.
    assert raw_lines(messages_path(root, s1)) == lines1[-3:]
    assert raw_lines(messages_path(root, s2)) == lines2[-3:]
    assert [m.content for m in store.load_context(s1)][::2] == ["c3", "kept"]
    assert store.purge_compacted(0) == 0


def test_purge_compacted_negative_raises_and_changes_nothing(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "a")
    store.compact_session(sid, "s", 0)
    before = snapshot(root, include_dot_files=False)
    with pytest.raises(ValueError):
        store.purge_compacted(-1)
    assert snapshot(root, include_dot_files=False) == before


def test_purge_nothing_archived_changes_nothing(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "a")
    before = snapshot(root, include_dot_files=False)
    assert store.purge_compacted(0) == 0
    assert snapshot(root, include_dot_files=False) == before


# ==============================================================================================
# Semantics: metadata and todo
# ==============================================================================================


def test_set_metadata_inserts_or_replaces_one_key_of_one_session(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    other = store.create_session("koda", tmp_path)
    assert store.get_metadata(sid, "model") is None
    store.set_metadata(sid, "model", "a")
    store.set_metadata(sid, "effort", "high")
    store.set_metadata(sid, "model", "b")
    store.set_metadata(sid, "empty", "")
    store.set_metadata(sid, 'weird key "é"\n', "v\x00\u2028")
    assert store.get_metadata(sid, "model") == "b"
    assert store.get_metadata(sid, "effort") == "high"
    assert store.get_metadata(sid, "empty") == ""
    assert store.get_metadata(sid, 'weird key "é"\n') == "v\x00\u2028"
    assert store.get_metadata(other, "model") is None
    assert FileStore(root).get_metadata(sid, "model") == "b"


def test_todo_key_is_the_todo(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.set_metadata(sid, "todo", "- [ ] via metadata")
    assert todo_path(root, sid).read_bytes() == b"- [ ] via metadata"
    assert store.get_todo(sid) == "- [ ] via metadata"
    assert "- [ ] via metadata" not in metadata_path(root, sid).read_text(encoding="utf-8")
    store.set_todo(sid, "- [x] via todo")
    assert store.get_metadata(sid, "todo") == "- [x] via todo"
    assert "via" not in metadata_path(root, sid).read_text(encoding="utf-8")


@pytest.mark.parametrize("op", ["set_metadata", "set_todo", "set_metadata_todo"])
def test_writes_to_missing_session_raise(store: FileStore, root: Path, tmp_path: Path, op: str) -> None:
    store.create_session("koda", tmp_path)
    before = snapshot(root, include_dot_files=False)
    missing = str(uuid.uuid4())
    with pytest.raises(SessionNotFoundError) as excinfo:
        if op == "set_metadata":
            store.set_metadata(missing, "k", "v")
        elif op == "set_todo":
            store.set_todo(missing, "t")
        else:
            store.set_metadata(missing, "todo", "t")
    assert missing in str(excinfo.value)
    assert snapshot(root, include_dot_files=False) == before


def test_reads_of_missing_sessions_return_empty_answers(store: FileStore, root: Path, tmp_path: Path) -> None:
    store.create_session("koda", tmp_path)
    before = snapshot(root, include_dot_files=False)
    missing = str(uuid.uuid4())
    assert store.load_context(missing) == []
    assert store.load_all_messages(missing) == []
    assert store.last_assistant_message(missing) == ""
    assert store.last_user_message(missing) == ""
    assert store.has_pending_tool_calls(missing) is False
    assert store.session_token_usage(missing) == SessionUsage(0, 0, 0, 0, 0, 0)
    assert store.session_usage_by_agent(missing) == []
    assert store.get_metadata(missing, "k") is None
    assert store.get_metadata(missing, "todo") is None
    assert store.get_todo(missing) is None
    assert store.delete_session(missing) is False
    assert snapshot(root, include_dot_files=False) == before


def test_reads_on_a_never_used_root_return_empty_answers(tmp_path: Path) -> None:
    fresh = FileStore(tmp_path / "fresh")
    assert fresh.list_sessions(10, tmp_path) == []
    assert fresh.recent_user_messages(10) == []
    assert fresh.compacted_stats() == CompactedStats(0, 0, 0, None)
    assert fresh.purge_compacted(0) == 0
    assert fresh.load_all_messages("abc") == []


# ==============================================================================================
# Bad input writes nothing
# ==============================================================================================


def _bad_input_calls(sid: str) -> dict[str, Callable[[Any], object]]:
    # The store is typed Any here: these calls break the annotations on purpose.
    return {
        "content-int": lambda s: s.insert_message(sid, Role.USER, 123),
        "content-bytes": lambda s: s.insert_message(sid, Role.USER, b"x"),
        "content-list": lambda s: s.insert_message(sid, Role.USER, ["x"]),
        "tool_calls-list": lambda s: s.insert_message(
            sid,
            Role.ASSISTANT,
            "x",
            [{"id": "c1"}],
        ),
        "tool_calls-dict": lambda s: s.insert_message(
            sid,
            Role.ASSISTANT,
            "x",
            {"id": "c1"},
        ),
        "tool_calls-bytes": lambda s: s.insert_message(sid, Role.ASSISTANT, "x", b"[]"),
        "content-surrogate": lambda s: s.insert_message(sid, Role.USER, "bad \ud800 text"),
        "content-pair-of-surrogates": lambda s: s.insert_message(sid, Role.USER, "\ud83d\ude00"),
        "tool_calls-surrogate": lambda s: s.insert_message(sid, Role.ASSISTANT, "x", "[\udfff]"),
        "tool_call_id-surrogate": lambda s: s.insert_message(sid, Role.TOOL, "x", None, "\ud800"),
        "agent_name-surrogate": lambda s: s.insert_message_with_agent(sid, Role.USER, "x", None, None, None, "\ud800"),
        "content-surrogate-with-agent": lambda s: s.insert_message_with_agent(
            sid, Role.USER, "\ud800", None, None, None, "a"
        ),
        "summary-surrogate": lambda s: s.compact_session(sid, "\ud800", 0),
        "summary-int": lambda s: s.compact_session(sid, 5, 0),
        "metadata-value-surrogate": lambda s: s.set_metadata(sid, "k", "\ud800"),
        "metadata-key-surrogate": lambda s: s.set_metadata(sid, "\ud800", "v"),
        "metadata-value-int": lambda s: s.set_metadata(sid, "k", 5),
        "todo-surrogate": lambda s: s.set_todo(sid, "\ud800"),
        "todo-via-metadata-surrogate": lambda s: s.set_metadata(sid, "todo", "\ud800"),
        "todo-int": lambda s: s.set_todo(sid, 5),
        "agent-surrogate-create": lambda s: s.create_session("\ud800", "/tmp/p"),
        "negative-list-limit": lambda s: s.list_sessions(-5, "/tmp/p"),
        "negative-recent-limit": lambda s: s.recent_user_messages(-5),
        "negative-preserve": lambda s: s.compact_session(sid, "s", -2),
        "negative-purge": lambda s: s.purge_compacted(-3),
    }


BAD_INPUT_NAMES = sorted(_bad_input_calls("x"))


@pytest.mark.parametrize("case", BAD_INPUT_NAMES)
def test_bad_input_raises_and_writes_nothing(fstore: FileStore, root: Path, tmp_path: Path, case: str) -> None:
    sid = fstore.create_session("koda", tmp_path)
    fstore.insert_message(sid, Role.USER, "one")
    fstore.insert_message(sid, Role.USER, "two")
    fstore.set_todo(sid, "todo")
    fstore.set_metadata(sid, "k", "old")
    before = snapshot(root, include_dot_files=False)
    with pytest.raises((TypeError, ValueError)):
        _bad_input_calls(sid)[case](fstore)
    assert snapshot(root, include_dot_files=False) == before
    assert [m.content for m in fstore.load_all_messages(sid)] == ["one", "two"]


# ==============================================================================================
# Round trips
# ==============================================================================================

ROUND_TRIP_TEXTS = [
    "",
    " ",
    "line one\nline two\n",
    "\r\n\r",
    "quotes \" and ' and `",
    "back\\slash \\n \\u0000 \\\\",
    "emoji 😀👍🏽 and é and 中文 and \U0010ffff",
    "NUL \x00 in the middle\x00",
    "controls \x01\x07\x1b\x7f\x9f",
    "separators \u2028 and \u2029 and \ufeff BOM",
    '{"looks": "like json"}\n{"another": 1}',
    "tab\tand vertical\x0bspace",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS, ids=range(len(ROUND_TRIP_TEXTS)))
def test_strings_round_trip_exactly(store: FileStore, root: Path, tmp_path: Path, text: str) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message_with_agent(sid, Role.ASSISTANT, text, text, text, None, text)
    store.set_metadata(sid, "k", text)
    store.set_todo(sid, text)
    [m] = store.load_all_messages(sid)
    assert (m.content, m.tool_calls, m.tool_call_id, m.agent_name) == (text, text, text, text)
    assert m.content is not None and m.content.encode("utf-8") == text.encode("utf-8")
    assert store.get_metadata(sid, "k") == text
    assert store.get_todo(sid) == text
    reopened = FileStore(root)
    assert reopened.load_all_messages(sid) == [m]


def test_megabytes_round_trip(fstore: FileStore, root: Path, tmp_path: Path) -> None:
    sid = fstore.create_session("koda", tmp_path)
    big = ("0123456789abcdef" * 65536) + "é😀\n\x00" + ("x" * 1_000_000)
    fstore.insert_message(sid, Role.TOOL, big, None, "c1")
    fstore.insert_message(sid, Role.USER, "after")
    [m, after] = FileStore(root).load_all_messages(sid)
    assert m.content == big
    assert after.content == "after"
    assert len(raw_lines(messages_path(root, sid))) == 2


def test_token_counts_round_trip_large_ints(store: FileStore, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    big = 2**53 + 1
    store.insert_message(sid, Role.ASSISTANT, "x", None, None, TokenUsage(big, 2**62, 0, 1, 2))
    [m] = store.load_all_messages(sid)
    assert (m.prompt_tokens, m.completion_tokens) == (big, 2**62)


# ==============================================================================================
# Damage: malformed and torn lines
# ==============================================================================================


def _warnings_about(caplog: pytest.LogCaptureFixture, path_fragment: str, line_no: int) -> list[str]:
    out = []
    for r in caplog.records:
        if not r.name.startswith("koda_files") or r.levelno < logging.WARNING:
            continue
        msg = r.getMessage()
        if path_fragment in msg and re.search(rf"(?i)(line\D{{0,3}}{line_no}\b|:{line_no}\b)", msg):
            out.append(msg)
    return out


GARBAGE = b"this is {not json, edited by hand"


def test_malformed_middle_line_is_skipped_warned_and_kept(
    store: FileStore, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="koda_files")
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "m1")
    append_line(root, sid, GARBAGE)
    store.insert_message(sid, Role.ASSISTANT, "m2")
    store.insert_message(sid, Role.USER, "m3")
    caplog.clear()
    assert [m.content for m in store.load_all_messages(sid)] == ["m1", "m2", "m3"]
    assert _warnings_about(caplog, f"{sid}", 2), [r.getMessage() for r in caplog.records]
    assert any("messages.jsonl" in w for w in _warnings_about(caplog, sid, 2))
    assert [m.content for m in store.load_context(sid)] == ["m1", "m2", "m3"]
    assert store.last_user_message(sid) == "m3"
    [info] = store.list_sessions(5, tmp_path)
    assert info.message_count == 3
    assert store.compact_session(sid, "sum", 1) == 2
    assert GARBAGE in raw_lines(messages_path(root, sid))
    assert store.purge_compacted(0) == 2
    assert GARBAGE in raw_lines(messages_path(root, sid))
    assert [m.content for m in store.load_all_messages(sid)][::2] == ["sum", "m3"]
    store.insert_message(sid, Role.USER, "m4")
    assert GARBAGE in raw_lines(messages_path(root, sid))
    assert [m.content for m in store.load_context(sid)][2:] == ["m3", "m4"]


TORN = b'{"id": 99999, "role": "user", "content": "half writ'


def test_torn_last_line_is_skipped_and_not_glued_to_the_next_append(
    store: FileStore, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="koda_files")
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "m1")
    append_to_log(root, sid, TORN)  # a writer died mid-line: no newline
    caplog.clear()
    assert [m.content for m in store.load_all_messages(sid)] == ["m1"]
    assert _warnings_about(caplog, sid, 2), [r.getMessage() for r in caplog.records]
    assert store.last_user_message(sid) == "m1"
    store.insert_message(sid, Role.USER, "m2")
    lines = raw_lines(messages_path(root, sid))
    assert TORN in lines, "the torn tail was altered or glued to the appended line"
    assert [m.content for m in store.load_all_messages(sid)] == ["m1", "m2"]
    assert messages_path(root, sid).read_bytes().endswith(b"\n")
    reopened = FileStore(root)
    assert [m.content for m in reopened.load_all_messages(sid)] == ["m1", "m2"]
    assert reopened.compact_session(sid, "sum", 1) == 1
    assert TORN in raw_lines(messages_path(root, sid))
    assert reopened.purge_compacted(0) == 1
    assert TORN in raw_lines(messages_path(root, sid))
    assert [m.content for m in reopened.load_context(sid)][::2] == ["sum", "m2"]


def test_invalid_utf8_line_is_skipped(store: FileStore, root: Path, tmp_path: Path) -> None:
    sid = store.create_session("koda", tmp_path)
    store.insert_message(sid, Role.USER, "m1")
    bad = b'{"id": 777777, "role": "user", "content": "\xff\xfe"}'
    append_line(root, sid, bad)
    store.insert_message(sid, Role.USER, "m2")
    assert [m.content for m in store.load_all_messages(sid)] == ["m1", "m2"]
    store.compact_session(sid, "s", 0)
    assert bad in raw_lines(messages_path(root, sid))


# ==============================================================================================
# Concurrency
# ==============================================================================================


def test_several_stores_in_threads_appending_to_one_session_lose_nothing(root: Path, tmp_path: Path) -> None:
    sid = FileStore(root).create_session("koda", tmp_path)
    n_threads, per_thread = 4, 25
    errors: list[BaseException] = []
    returned: list[list[int]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            s = FileStore(root)
            barrier.wait()
            for i in range(per_thread):
                returned[t].append(s.insert_message(sid, Role.USER, f"t{t}-{i}" + "x" * (i * 37)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    msgs = FileStore(root).load_all_messages(sid)
    assert len(msgs) == n_threads * per_thread
    ids = [m.id for m in msgs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids not strictly increasing in file order"
    assert sorted(ids) == sorted(i for r in returned for i in r)
    for t in range(n_threads):
        mine = [m.content for m in msgs if m.content is not None and m.content.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{i}" + "x" * (i * 37) for i in range(per_thread)]
    for line in raw_lines(messages_path(root, sid)):
        json.loads(line)


def test_compaction_racing_with_appends_loses_nothing(root: Path, tmp_path: Path) -> None:
    sid = FileStore(root).create_session("koda", tmp_path)
    appended: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def appender() -> None:
        try:
            s = FileStore(root)
            for i in range(60):
                content = f"msg-{i}"
                s.insert_message(sid, Role.USER, content)
                appended.append(content)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def compactor() -> None:
        try:
            s = FileStore(root)
            while not done.is_set():
                s.compact_session(sid, "sum", 3)
                if len(appended) % 2:
                    s.purge_compacted(0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=appender), threading.Thread(target=compactor)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    store = FileStore(root)
    contents = [m.content for m in store.load_all_messages(sid)]
    present = set(contents)
    tail = [c for c in contents if c is not None and c.startswith("msg-")]
    assert tail == sorted(tail, key=lambda c: int(c.split("-")[1])), "appends reordered"
    # The last three appends can never have been archived (preserve_count=3), so never purged.
    for c in appended[-3:]:
        assert c in present
    assert [m.content for m in store.load_context(sid)][-3:] == appended[-3:]
    for line in raw_lines(messages_path(root, sid)):
        json.loads(line)


@pytest.mark.parametrize("layout", [99, "one"])
def test_a_root_from_a_newer_or_unknown_layout_is_refused_before_any_read_or_write(
    root: Path, tmp_path: Path, layout: object
) -> None:
    sid = FileStore(root).create_session("koda", tmp_path)
    marker = root / "koda-files.json"
    marker.write_text(json.dumps({"format": "koda-files", "layout": layout}))
    before = snapshot(root)
    calls: list[Callable[[FileStore], object]] = [
        lambda s: s.load_all_messages(sid),
        lambda s: s.insert_message(sid, Role.USER, "x"),
        lambda s: s.list_sessions(10, tmp_path),
        lambda s: s.create_session("koda", tmp_path),
    ]
    for call in calls:
        with pytest.raises(KodaFilesError, match=r"koda-files\.json"):
            call(FileStore(root))
    assert snapshot(root) == before
