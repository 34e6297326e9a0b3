"""Redaction (`clear_message_content`, `koda-files redact`): no copy of the old text is left anywhere."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest
from _fault_helpers import FaultPlan, count_fault_points, inject_faults
from _helpers import messages_path, session_dir, snapshot

from koda_files import FileStore, KodaFilesError, Role

SECRET = "sk-live-7f3a9c1e55"


def grep_root(root: Path, needle: str) -> list[str]:
    """Every file under the root whose bytes hold `needle` (dot-files included)."""
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if needle.encode() in path.read_bytes():
                hits.append(str(path.relative_to(root)))
    return hits


def leaky_store(root: Path) -> tuple[FileStore, str, list[int]]:
    """A session that has the secret in content, full content, thinking, a torn copy, quarantine and a temp file."""
    store = FileStore(root)
    sid = store.create_session("main", "/tmp")
    keep = store.insert_message(sid, Role.USER, "keep me")
    user = store.insert_message(sid, Role.USER, f"my key is {SECRET}")
    asst = store.insert_message(sid, Role.ASSISTANT, None, '[{"id":"c1"}]')
    store.mark_message_complete(asst)
    store.update_message_thinking_content(asst, f"the user pasted {SECRET}")
    tool = store.insert_tool_message_with_full(sid, "env: (cut)", "c1", f"HOME=/x\nKEY={SECRET}")
    log = messages_path(root, sid)
    with log.open("ab") as f:  # a torn copy of the user line, then damage repaired into quarantine
        f.write(b'{"id":%d,"role":"user","content":"my key is sk-li\n' % user)
    assert not store.check(repair=True).ok or True
    (session_dir(root, sid) / ".messages.jsonl.dead.tmp").write_text(f"{SECRET}\n")  # a crash's leftover
    assert grep_root(root, SECRET)
    assert "quarantine.jsonl" in " ".join(grep_root(root, "my key is sk-li"))
    return store, sid, [user, tool, asst, keep]


def test_redaction_leaves_no_copy_anywhere(root: Path) -> None:
    store, sid, (user, tool, asst, keep) = leaky_store(root)
    other = FileStore(root)  # a second store with the session cached, context included
    assert any(SECRET in (m.content or "") for m in other.load_context(sid))
    other.list_sessions(10, "/tmp")  # and the .index written
    store.clear_message_content([user, tool, asst], "[redacted]")
    assert grep_root(root, SECRET) == []
    assert grep_root(root, "my key is sk-li") == []
    for s in (store, other, FileStore(root)):
        msgs = {m.id: m for m in s.load_all_messages(sid)}
        assert msgs[keep].content == "keep me"
        assert msgs[user].content == msgs[tool].content == msgs[asst].content == "[redacted]"
        assert msgs[tool].full_content is None and msgs[asst].thinking_content is None
        assert msgs[asst].completed_at is not None  # the completion mark stays
        assert all(SECRET not in (m.content or "") for m in s.load_context(sid))
    assert other.list_sessions(10, "/tmp")[0].message_count == 4
    # The quarantine keeps its entries (where, when, why) without the text.
    entries = [orjson.loads(x) for x in (session_dir(root, sid) / "quarantine.jsonl").read_bytes().splitlines()]
    assert entries and all(e["text"] == "[redacted]" and "redacted_at" in e for e in entries)


def test_redaction_unknown_id_changes_nothing(root: Path) -> None:
    store, _sid, (user, *_rest) = leaky_store(root)
    before = snapshot(root)
    with pytest.raises(KodaFilesError, match="message 987654"):
        store.clear_message_content([user, 987654], "[redacted]")
    assert snapshot(root) == before
    store.clear_message_content([], "[redacted]")
    assert snapshot(root) == before


def test_redaction_is_all_or_nothing_under_injected_failures(root: Path, tmp_path: Path) -> None:
    """Across two sessions: every write, fsync and rename failing in turn leaves every file as it was."""
    store = FileStore(root)
    s1 = store.create_session("main", "/tmp")
    s2 = store.create_session("main", "/tmp")
    ids = [store.insert_message(s, Role.USER, f"{SECRET} in {s}") for s in (s1, s2)]
    store.load_context(s1)
    before = {p: b for p, b in snapshot(root).items() if "/.lock" not in p}
    total = count_fault_points(lambda: FileStore(root).clear_message_content(ids, "[r]"))
    assert total >= 4
    # Put the secret back (the counting run redacted it) and fail each point in turn.
    for fail_at in range(1, total + 1):
        for path, data in before.items():
            if isinstance(data, bytes):
                (root / path).write_bytes(data)
        fresh = FileStore(root)
        with inject_faults(FaultPlan(fail_at=fail_at, err=errno.EIO)) as plan, pytest.raises(OSError):
            fresh.clear_message_content(ids, "[r]")
        assert plan.fired
        after = {p: b for p, b in snapshot(root).items() if "/.lock" not in p}
        if plan.calls.count("rename") == 2 and plan.fired != "rename":
            # The renames are all done; only flushing a directory failed: all new, none old.
            assert grep_root(root, SECRET) == [], fail_at
            continue
        assert after == before, (fail_at, plan.fired)
        assert [m.content for m in fresh.load_all_messages(s1)] == [f"{SECRET} in {s1}"]
    FileStore(root).clear_message_content(ids, "[r]")
    assert grep_root(root, SECRET) == []
