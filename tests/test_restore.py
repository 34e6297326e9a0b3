"""`reserve_ids` and `restore_session`: the public way for an import tool to bring history in."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from _helpers import messages_path, metadata_path, session_dir, todo_path

from koda_files import FileStore, Role


def _header(sid: str, **extra: Any) -> dict[str, Any]:
    return {"agent_name": "main", "created_at": "2026-01-02T03:04:05.000000Z", "id": sid, "metadata": {}, **extra}


def _records(first: int) -> list[dict[str, Any]]:
    return [
        {"id": first, "role": "user", "content": "old question", "created_at": "2026-01-02T03:04:06.000000Z"},
        {"id": first + 1, "role": "assistant", "content": "old answer", "created_at": "2026-01-02T03:04:07.000000Z"},
        {"id": first + 1, "completed_at": "2026-01-02T03:04:08.000000Z"},  # an annotation
    ]


def test_restored_session_reads_as_written_and_new_ids_come_after_the_reserved_ones(root: Path) -> None:
    store = FileStore(root)
    first = store.reserve_ids(500, 2)
    assert first >= 500
    store.restore_session(_header("imported-1", title="from koda"), _records(first), files={"todo.md": b"- [ ] x\n"})
    messages = FileStore(root).load_all_messages("imported-1")
    assert [(m.id, m.role, m.content) for m in messages] == [
        (first, Role.USER, "old question"),
        (first + 1, Role.ASSISTANT, "old answer"),
    ]
    assert messages[1].completed_at == "2026-01-02T03:04:08.000000Z"
    assert store.get_session_title("imported-1") == "from koda"
    assert todo_path(root, "imported-1").read_bytes() == b"- [ ] x\n"
    new = store.insert_message("imported-1", Role.USER, "next")
    assert new > first + 1  # a reserved id is never handed out again
    other = FileStore(root).insert_message(store.create_session("main"), Role.USER, "elsewhere")
    assert other not in (first, first + 1)


def test_a_record_that_is_not_a_message_raises_naming_it_and_writes_nothing(root: Path) -> None:
    store = FileStore(root)
    records = [*_records(1), {"id": 9, "role": "robot"}]
    with pytest.raises(ValueError, match=r"session 'bad-1': record 3 is not a message"):
        store.restore_session(_header("bad-1"), records)
    assert not session_dir(root, "bad-1").exists()
    assert not root.exists()  # checked before anything, the root included, was made


def test_an_existing_session_is_kept_unless_replace(root: Path) -> None:
    store = FileStore(root)
    store.restore_session(_header("twice"), _records(1))
    before = messages_path(root, "twice").read_bytes()
    with pytest.raises(FileExistsError) as caught:
        store.restore_session(_header("twice", title="new"), _records(10))
    assert caught.value.errno == errno.EEXIST and "twice" in str(caught.value)
    assert messages_path(root, "twice").read_bytes() == before
    assert store.load_context("twice")[0].id == 1  # the cache is warm on the old session
    store.restore_session(_header("twice", title="new"), _records(10), replace=True)
    assert [m.id for m in store.load_context("twice")] == [10, 11]  # the warm cache sees the swap
    assert '"title": "new"' in metadata_path(root, "twice").read_text()


def test_reserve_ids_refuses_a_bad_count(root: Path) -> None:
    store = FileStore(root)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="count"):
            store.reserve_ids(1, bad)
    with pytest.raises(TypeError):
        store.reserve_ids("1", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["../escaped.txt", "sub/file", ".lock", "messages.jsonl", "metadata.json", "", "a" * 200]
)
def test_restore_refuses_a_file_name_that_is_not_a_plain_file_beside_the_log(root: Path, name: str) -> None:
    store = FileStore(root)
    with pytest.raises(ValueError, match=r"session 'named-1': .* is not a file restore_session may write"):
        store.restore_session(_header("named-1"), _records(1), files={name: b"x"})
    assert not root.exists()  # nothing written, not even beside the root
    assert not (root.parent / "escaped.txt").exists()


def test_creating_many_sessions_or_sweeping_them_keeps_the_parsed_log_of_the_one_in_use(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main")
    for i in range(30):
        store.insert_message(sid, Role.USER, f"m{i}")
    store.load_context(sid)
    handle = store._root.acquire(sid)
    store._root.release(handle)
    log_before = handle.log
    for _ in range(80):  # more than the store keeps handles for
        other = store.create_session("sub-agent")
        FileStore(root).insert_message(other, Role.USER, "x")
        FileStore(root).compact_session(other, "s", 0)
    store.restore_session(_header("imported-2"), _records(store.reserve_ids(10_000, 2)))
    assert store.purge_compacted(0) == 80  # whole-store sweeps visit every session
    assert store.check().ok
    handle = store._root.acquire(sid)
    store._root.release(handle)
    assert handle.log is log_before and handle.is_parsed()  # still cached: no re-parse on the next turn
