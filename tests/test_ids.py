"""Message ids: unique across the root, increasing per session, never handed out twice.

They come from `<root>/.ids`, reserved a block at a time; the file is derived (rebuilt from the
largest id in any session when lost or damaged), and a forked process never reuses its parent's
block.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from _helpers import messages_path

from koda_files import FileStore, Role


def _all_ids(store: FileStore, sessions: list[str]) -> list[int]:
    return [m.id for sid in sessions for m in store.load_all_messages(sid)]


def test_ids_are_unique_across_stores_and_sessions(tmp_path: Path) -> None:
    a, b = FileStore(tmp_path), FileStore(tmp_path)
    s1, s2 = a.create_session("main", "/p"), b.create_session("main", "/p")
    for i in range(40):  # interleave two stores (two id blocks) over two sessions
        (a if i % 2 else b).insert_message(s1 if i % 3 else s2, Role.USER, f"m{i}")
    ids = _all_ids(FileStore(tmp_path), [s1, s2])
    assert len(ids) == len(set(ids)) == 40
    for sid in (s1, s2):
        own = [m.id for m in FileStore(tmp_path).load_all_messages(sid)]
        assert own == sorted(own) and len(own) == len(set(own))


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lost_or_damaged_counter_is_rebuilt_above_every_id_on_disk(tmp_path: Path, damage: str) -> None:
    store = FileStore(tmp_path)
    sid = store.create_session("main", "/p")
    other = store.create_session("main", "/p")  # empty: nothing in it bounds the next id
    for i in range(10):
        store.insert_message(sid, Role.USER, f"m{i}")
    # Compaction puts the summary (the largest ids) before the tail: the largest id is not last.
    store.compact_session(sid, "summary", 3)
    largest = max(_all_ids(store, [sid]))
    counter = tmp_path / ".ids"
    if damage == "deleted":
        counter.unlink()
    else:
        counter.write_bytes(b"not a number\n")
    reopened = FileStore(tmp_path)
    assert reopened.insert_message(other, Role.USER, "elsewhere") > largest
    assert reopened.insert_message(sid, Role.USER, "after") > largest


def test_a_counter_set_back_is_rebuilt_once_a_session_shows_it(tmp_path: Path) -> None:
    """A `.ids` set back below the ids of the session written to is noticed and rebuilt.

    (A counter set back but still above that session's ids cannot be told from a good one
    without reading every session; the README says to delete `.ids`, never to edit it.)
    """
    store = FileStore(tmp_path)
    early, late = store.create_session("main", "/p"), store.create_session("main", "/p")
    for i in range(5):
        store.insert_message(early, Role.USER, f"early {i}")
    (tmp_path / ".ids").write_bytes(b"00000000000000000003\n")  # older than `early` itself
    for i in range(5):
        store.insert_message(late, Role.USER, f"late {i}")  # this store's block: ids above 5
    reopened = FileStore(tmp_path)
    new_id = reopened.insert_message(early, Role.USER, "back to the early session")
    ids = _all_ids(FileStore(tmp_path), [early, late])
    assert len(ids) == len(set(ids)), f"id {new_id} handed out twice"


def _child_inserts(root: str, sid: str, out: multiprocessing.Queue[int]) -> None:
    store = _shared[0]  # the parent's store object, inherited through fork
    out.put(store.insert_message(sid, Role.USER, "from the child"))


_shared: list[FileStore] = []


def test_a_forked_child_never_reuses_the_parents_block(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    s1, s2 = store.create_session("main", "/p"), store.create_session("main", "/p")
    store.insert_message(s1, Role.USER, "parent reserves a block")
    _shared[:] = [store]
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_child_inserts, args=(str(tmp_path), s2, out))
    child.start()
    child_id = out.get(timeout=30)
    child.join(timeout=30)
    parent_id = store.insert_message(s1, Role.USER, "parent again")
    assert child.exitcode == 0
    assert child_id != parent_id
    ids = _all_ids(FileStore(tmp_path), [s1, s2])
    assert len(ids) == len(set(ids)) == 3


@pytest.mark.parametrize("where", ["other-session", "same-session"])
def test_a_rebuilt_counter_counts_a_record_that_lacks_only_its_newline(tmp_path: Path, where: str) -> None:
    """A last record missing only its newline is a message to every part of the store.

    The rebuild must count its id: the next append into its session adds the newline, and it
    would otherwise become a second message with an id handed out again.
    """
    store = FileStore(tmp_path)
    torn, other = store.create_session("main", "/p"), store.create_session("main", "/p")
    store.insert_message(torn, Role.USER, "complete")
    last = store.insert_message(torn, Role.ASSISTANT, "the newline of this record is lost")
    store.close()
    log = messages_path(tmp_path, torn)
    log.write_bytes(log.read_bytes()[:-1])
    (tmp_path / ".ids").unlink()  # lost, as after a crash that lost its creation

    reopened = FileStore(tmp_path)
    assert [m.id for m in reopened.load_all_messages(torn)][-1] == last  # a message already
    new_id = reopened.insert_message(other if where == "other-session" else torn, Role.USER, "next")
    assert new_id > last
    again = FileStore(tmp_path)
    again.insert_message(torn, Role.USER, "and the torn session goes on")
    ids = _all_ids(FileStore(tmp_path), [torn, other])
    assert len(ids) == len(set(ids)) == 4
    assert FileStore(tmp_path).check(repair=True).ok
