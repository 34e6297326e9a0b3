"""Big and odd data, many sessions, and a wall clock that jumps backwards.

Default sizes are small but cross the same chunk boundaries (1 MiB reads, 4 MiB log chunks);
KODA_FILES_STRESS=1 runs the full sizes (100 MB, 10,000 sessions, a million messages).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from _fault_helpers import scaled
from _helpers import messages_path, metadata_path, session_dir, sessions_dir

from koda_files import FileStore, Role
from koda_files import store as store_module
from koda_files._format import layout as layout


def test_huge_message_round_trips_and_survives_compaction(tmp_path: Path) -> None:
    size = scaled(9 << 20, 100 << 20)  # > the 1 MiB and 4 MiB read chunks
    text = ("0123456789abcdef\u00e9\n" * (size // 18 + 1))[:size]
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "before")
    big = store.insert_message(sid, Role.ASSISTANT, text)
    store.insert_message(sid, Role.USER, "after")
    fresh = FileStore(tmp_path / "root")
    assert [m.content for m in fresh.load_all_messages(sid)] == ["before", text, "after"]
    assert fresh.compact_session(sid, "summary", 1) == 2
    again = FileStore(tmp_path / "root")
    archived = [m for m in again.load_all_messages(sid) if m.id == big]
    assert archived[0].content == text and archived[0].compacted_at is not None
    assert again.purge_compacted(0) == 2
    assert [m.content for m in again.load_context(sid)][-1] == "after"


def test_every_control_character_round_trips_one_record_per_line(tmp_path: Path) -> None:
    odd = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\r\n", "\\", '"', "\U0001f600"]
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", ".")
    values = [f"a{c}b" for c in odd] + ["".join(odd)]
    for v in values:
        store.insert_message(sid, Role.TOOL, v, v, v)
    path = messages_path(tmp_path / "root", sid)
    raw = path.read_bytes()
    assert raw.count(b"\n") == len(values), "a character split a record over two lines"
    assert [json.loads(line)["content"] for line in raw.splitlines()] == values
    for m, v in zip(FileStore(tmp_path / "root").load_all_messages(sid), values, strict=True):
        assert (m.content, m.tool_calls, m.tool_call_id) == (v, v, v)


def test_many_sessions_and_messages_list_and_purge(tmp_path: Path) -> None:
    n_sessions = scaled(300, 10_000)
    per_session = scaled(40, 100)  # 12,000 messages by default, a million under stress
    root = tmp_path / "root"
    store = FileStore(root)
    sids = [store.create_session("main", ".") for _ in range(3)]
    for i in range(n_sessions - 3):  # the rest by hand, as the README documents the format
        sid = f"imported-{i:06d}"
        session_dir(root, sid).mkdir()
        header = {"agent_name": "main", "created_at": f"2020-01-01T00:00:00.{i:06d}Z", "id": sid, "metadata": {}}
        metadata_path(root, sid).write_text(json.dumps(header))
        sids.append(sid)
    # Bulk-write the logs by hand in the documented format (fast), archived and active lines mixed.
    next_id = 1
    for sid in sids:
        lines = []
        for i in range(per_session):
            rec = {"id": next_id, "role": "user", "content": f"{sid} {i}", "prompt_tokens": 1, "completion_tokens": 2}
            if i < per_session // 2:
                rec["compacted_at"] = "2000-01-01T00:00:00.000000Z"
            lines.append(json.dumps(rec))
            next_id += 1
        messages_path(root, sid).write_text("\n".join(lines) + "\n")
    fresh = FileStore(root)
    infos = fresh.list_sessions(n_sessions + 10, ".")
    assert len(infos) == n_sessions and {i.id for i in infos} == set(sids)
    assert all(i.message_count == per_session and i.total_tokens == 3 * per_session for i in infos)
    assert [i.id for i in fresh.list_sessions(5, ".")] == sids[:3][::-1] + sids[3:][::-1][:2]
    assert fresh.compacted_stats().message_count == n_sessions * (per_session // 2)
    assert fresh.purge_compacted(1) == n_sessions * (per_session // 2)
    assert fresh.compacted_stats().message_count == 0
    new_id = fresh.insert_message(sids[0], Role.USER, "after")
    assert new_id >= next_id, "an id was handed out twice after a purge"


def test_wall_clock_jumping_backwards_keeps_ids_and_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each call to the store's clock returns a time earlier than the one before.
    stamps = [f"20{99 - i:02d}-01-01T00:00:00.000000Z" for i in range(60)]
    ns = [(2_000_000_000 - i * 10_000) * 1_000_000_000 for i in range(60)]
    monkeypatch.setattr(store_module, "utc_now", lambda: stamps.pop(0))
    monkeypatch.setattr(layout, "time", SimpleNamespace(time_ns=lambda: ns.pop(0)))
    store = FileStore(tmp_path / "root")
    sids = [store.create_session("main", ".") for _ in range(3)]
    assert sids == sorted(sids) and len(set(sids)) == 3, "session ids went backwards with the clock"
    ids = []
    for i in range(12):
        ids.append(store.insert_message(sids[0], Role.USER if i % 2 == 0 else Role.ASSISTANT, f"m{i}"))
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    msgs = FileStore(tmp_path / "root").load_all_messages(sids[0])
    assert [m.content for m in msgs] == [f"m{i}" for i in range(12)], "order followed the clock"
    assert [m.created_at for m in msgs] == sorted((m.created_at or "" for m in msgs), reverse=True)
    assert store.last_user_message(sids[0]) == "m10" and store.last_assistant_message(sids[0]) == "m11"
    assert os.listdir(sessions_dir(tmp_path / "root"))
