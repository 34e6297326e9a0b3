"""Shared helpers of the contract and model tests: on-disk paths, snapshots, the sanitising model."""

from __future__ import annotations

import builtins
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from koda_files import FileStore, Message, Role

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")


# The on-disk layout the README documents, spelled once: tests check the files by these names
# rather than through the store, so that a renamed file fails the tests instead of following them.


def sessions_dir(root: Path) -> Path:
    """`<root>/sessions`, the directory holding one directory per session."""
    return root / "sessions"


def session_dir(root: Path, sid: str) -> Path:
    return sessions_dir(root) / sid


def messages_path(root: Path, sid: str) -> Path:
    return session_dir(root, sid) / "messages.jsonl"


def metadata_path(root: Path, sid: str) -> Path:
    return session_dir(root, sid) / "metadata.json"


def todo_path(root: Path, sid: str) -> Path:
    return session_dir(root, sid) / "todo.md"


def quarantine_path(root: Path, sid: str) -> Path:
    """Where `check --repair` moves the lines it cannot read."""
    return session_dir(root, sid) / "quarantine.jsonl"


def healthy_and_to_damage(root: Path) -> tuple[FileStore, str, str]:
    """(store, sid, good): a healthy session holding "the healthy one" and a session `sid` holding
    user messages "one", "two", "three", for a test to damage and then check that `good` is unharmed."""
    store = FileStore(root)
    good = store.create_session("main", ".")
    store.insert_message(good, Role.USER, "the healthy one")
    sid = store.create_session("main", ".")
    for text in ("one", "two", "three"):
        store.insert_message(sid, Role.USER, text)
    return store, sid, good


def append_to_log(root: Path, sid: str, data: bytes) -> None:
    """Append bytes to a session's `messages.jsonl` as a person or a dying writer would: no newline added."""
    with open(messages_path(root, sid), "ab") as f:
        f.write(data)


def append_line(root: Path, sid: str, record: dict[str, Any] | bytes) -> None:
    """Append one line by hand: a record serialised with orjson (or bytes as they are), then `\\n`."""
    append_to_log(root, sid, (record if isinstance(record, bytes) else orjson.dumps(record)) + b"\n")


def raw_lines(path: Path) -> list[bytes]:
    """The `\\n`-separated lines of a file (a torn last line included), without terminators."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file parsed with the standard library (each must be an object)."""
    out: list[dict[str, Any]] = []
    for line in raw_lines(path):
        obj = json.loads(line.decode("utf-8"))
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def snapshot(root: Path, *, include_dot_files: bool = True) -> dict[str, bytes | str | None]:
    """Every entry under `root`: file bytes, `"->target"` for symlinks, None for directories."""
    snap: dict[str, bytes | str | None] = {}
    if not root.exists():
        return snap
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            rel = str(p.relative_to(root))
            if not include_dot_files and any(part.startswith(".") for part in Path(rel).parts):
                continue
            if p.is_symlink():
                snap[rel] = "->" + os.readlink(p)
            elif p.is_dir():
                snap[rel] = None
            else:
                snap[rel] = p.read_bytes()
    return snap


def tool_calls_json(*call_ids: str) -> str:
    """A koda/OpenAI-style `tool_calls` value calling the given ids."""
    return json.dumps(
        [
            {
                "id": cid,
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
            }
            for cid in call_ids
        ]
    )


def parse_iso_utc(value: str) -> datetime:
    """Parse an ISO 8601 UTC timestamp (`Z` or `+00:00`); fail on anything else."""
    assert ISO_UTC.match(value), f"not an ISO 8601 UTC timestamp: {value!r}"
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    # Python 3.10's fromisoformat takes at most 6 fractional digits.
    m = re.match(r"^(.*\.\d{6})\d*(\+00:00)$", text)
    if m:
        text = m.group(1) + m.group(2)
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def iso_utc(moment: datetime) -> str:
    """The timestamp format of the spec's example, `2026-11-27T11:09:22.123456Z`."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rewrite_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit a JSON file by hand, the way a person with an editor would (sorted, indented)."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(obj, dict)
    edit(obj)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def age_compaction(path: Path, summary: str, when: datetime) -> None:
    """Hand-edit the time of the compaction whose summary is `summary`; other lines keep their bytes."""
    out = []
    for line in raw_lines(path):
        obj = json.loads(line)
        if obj.get("compaction") and obj.get("content") == summary:
            obj["compaction"] = iso_utc(when)
            line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        out.append(line + b"\n")
    path.write_bytes(b"".join(out))


_FS_FUNCS_OS = (
    "open",
    "stat",
    "lstat",
    "listdir",
    "scandir",
    "mkdir",
    "makedirs",
    "rename",
    "replace",
    "unlink",
    "remove",
    "rmdir",
    "chmod",
    "access",
    "readlink",
    "utime",
    "link",
    "symlink",
)


@contextmanager
def no_file_system() -> Iterator[list[str]]:
    """While active, any file-system call through `os`, `open` or `io.open` is recorded and fails."""
    touched: list[str] = []

    def guard(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            touched.append(f"{name}{args!r}")
            raise AssertionError(f"file system touched: {name}{args!r}")

        return refuse

    with pytest.MonkeyPatch.context() as mp:
        for fname in _FS_FUNCS_OS:
            if hasattr(os, fname):
                mp.setattr(os, fname, guard(f"os.{fname}"))
        mp.setattr(builtins, "open", guard("open"))
        mp.setattr(io, "open", guard("io.open"))
        yield touched


# ----------------------------------------------------------------------------------------------
# The reference model of load_context (used by the contract and model tests). Written apart from
# koda_files._session.sanitize, straight from the rule in the README, without any incremental state.


@dataclass(frozen=True)
class Msg:
    """The parts of a message that sanitising looks at."""

    role: Role
    content: str | None
    tool_calls: str | None
    tool_call_id: str | None
    completed: bool = False


def read_calls(tool_calls: str | None) -> tuple[list[str], bool]:
    """(ids named, readable): blank, `[]` and `null` make no calls; else a non-empty array of
    objects with distinct string ids, or unreadable."""
    if tool_calls is None or not tool_calls.strip():
        return [], True
    try:
        calls = json.loads(tool_calls)
    except ValueError:
        return [], False
    if calls is None or calls == []:
        return [], True
    if not isinstance(calls, list):
        return [], False
    ids = [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)]
    return ids, len(ids) == len(calls) and len(set(ids)) == len(ids)


def call_ids(tool_calls: str | None) -> list[str]:
    return read_calls(tool_calls)[0]


def result_owner(msgs: Sequence[Msg], i: int) -> int | None:
    """The latest assistant message before result `i` that calls its id, or None."""
    cid = msgs[i].tool_call_id
    for j in range(i - 1, -1, -1):
        if msgs[j].role is Role.ASSISTANT and cid in call_ids(msgs[j].tool_calls):
            return j
    return None


def sanitize_indices(msgs: Sequence[Msg], tracking: bool = False) -> list[int]:
    """Indices of the messages `load_context` keeps, in order (the README's rule)."""
    owners = {i: result_owner(msgs, i) for i, m in enumerate(msgs) if m.role is Role.TOOL}

    def results(a: int, cid: str) -> list[int]:
        return [i for i, o in owners.items() if o == a and msgs[i].tool_call_id == cid]

    def keep_assistant(a: int) -> bool:
        m = msgs[a]
        if tracking and not m.completed:
            return False
        ids, readable = read_calls(m.tool_calls)
        if readable and not ids:
            return bool((m.content or "").strip())
        return readable and all(results(a, cid) for cid in ids)

    keep: list[int] = []
    for i, m in enumerate(msgs):
        if m.role is Role.ASSISTANT:
            ok = keep_assistant(i)
        elif m.role is Role.TOOL:
            owner = owners[i]
            ok = owner is not None and keep_assistant(owner) and results(owner, m.tool_call_id or "")[-1] == i
        else:
            ok = True
        if ok:
            keep.append(i)
    return keep


def as_msg(m: Message) -> Msg:
    return Msg(Role(m.role), m.content, m.tool_calls, m.tool_call_id, m.completed_at is not None)
