"""Real concurrent writers (processes and threads), rewrites racing appends,
readers during rewrites, two stores in one thread, a killed lock holder and lock hand-over latency.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

from _fault_helpers import Child, fork_child, scaled, send
from _helpers import messages_path, session_dir

from koda_files import FileStore, KodaFilesError, Role

PROCS = 4
THREADS = 3
PER_WRITER = scaled(150, 3000)


def _writer_body(root: Path, sid: str, proc: int, threads: int, n: int) -> None:
    store = FileStore(root)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(n):
                store.insert_message(sid, Role.USER, f"p{proc}-t{t}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def _child_writer(root: Path, sid: str, proc: int, threads: int, n: int, _fd: int) -> None:
    _writer_body(root, sid, proc, threads, n)


def _check_writers(path: Path, store: FileStore, sid: str, procs: int, threads: int, n: int) -> None:
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    records = [json.loads(line) for line in lines]  # every line parses: nothing interleaved
    assert len(records) == procs * threads * n
    ids = [r["id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids not increasing in file order"
    seen: dict[tuple[str, str], list[int]] = {}
    for r in records:
        p, t, i = r["content"].split("-")
        seen.setdefault((p, t), []).append(int(i))
    assert len(seen) == procs * threads
    for writer, order in seen.items():
        assert order == list(range(n)), f"writer {writer} lost, doubled or reordered lines"
    assert [m.content for m in store.load_all_messages(sid)] == [r["content"] for r in records]


def test_processes_and_threads_append_to_one_session(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    children = [fork_child(partial(_child_writer, root, sid, p, THREADS, PER_WRITER)) for p in range(PROCS)]
    _writer_body(root, sid, PROCS, THREADS, PER_WRITER)  # the parent writes too
    for c in children:
        c.finish()
    _check_writers(messages_path(root, sid), store, sid, PROCS + 1, THREADS, PER_WRITER)


def test_many_threads_of_one_process_keep_ids_in_file_order(tmp_path: Path) -> None:
    # flock does not exclude the threads of one process: the mutex's thread lock must.
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    _writer_body(root, sid, 0, 8, scaled(300, 3000))
    _check_writers(messages_path(root, sid), store, sid, 1, 8, scaled(300, 3000))


def test_compaction_racing_appends_keeps_every_message_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    stop = tmp_path / "stop"

    def compactor_body(wfd: int) -> None:
        s = FileStore(root)
        n = 0
        while not stop.exists():
            n += 1 if s.compact_session(sid, "summary", 3) else 0
        send(wfd, str(n))

    compactor = fork_child(compactor_body)
    writers = [fork_child(partial(_child_writer, root, sid, p, 2, PER_WRITER)) for p in range(3)]
    for w in writers:
        w.finish()
    stop.touch()
    compactions = int(compactor.finish().split()[-1])
    assert compactions > 0, "the compactor never raced the writers"

    msgs = store.load_all_messages(sid)
    ours = [m.content or "" for m in msgs if m.role is Role.USER]
    assert len(ours) == 3 * 2 * PER_WRITER and all(c == 1 for c in Counter(ours).values())
    for p in range(3):
        for t in range(2):
            order = [int(c.split("-")[2]) for c in ours if c.startswith(f"p{p}-t{t}-")]
            assert order == list(range(PER_WRITER)), "a writer's messages were lost or reordered"
    assert len([m for m in msgs if m.role is Role.SYSTEM]) == compactions
    ids = [m.id for m in msgs]
    assert len(set(ids)) == len(ids)


def test_purge_accounting_is_exact_under_racing_appends(tmp_path: Path) -> None:
    # Exact bookkeeping: written + 2 per compaction == present + purged.
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    stop = tmp_path / "stop"

    def compactor_body(wfd: int) -> None:
        s = FileStore(root)
        made = purged = 0
        while not stop.exists():
            made += 2 if s.compact_session(sid, "summary", 3) else 0
            purged += s.purge_compacted(0)
        send(wfd, f"{made} {purged}")

    compactor = fork_child(compactor_body)
    writers = [fork_child(partial(_child_writer, root, sid, p, 2, PER_WRITER)) for p in range(3)]
    for w in writers:
        w.finish()
    stop.touch()
    made, purged = (int(x) for x in compactor.finish().split()[-2:])
    present = len(store.load_all_messages(sid))
    assert made > 0 and purged > 0, "the compactor never raced the writers"
    assert 3 * 2 * PER_WRITER + made == present + purged


def test_readers_during_rewrites_never_fail_or_see_partial_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    base = [store.insert_message(sid, Role.USER, f"base {i} " + "y" * 200) for i in range(scaled(800, 8000))]
    store.set_metadata(sid, "k", "v0")
    store.set_todo(sid, "todo 0\n" * 1000)
    stop = tmp_path / "stop"

    def rewriter(wfd: int) -> None:
        s = FileStore(root)
        i = 0
        while not stop.exists():
            i += 1
            s.compact_session(sid, f"summary {i}", 5)
            s.set_metadata(sid, "k", f"v{i}")
            s.set_todo(sid, f"todo {i}\n" * 1000)
        send(wfd, str(i))

    child = fork_child(rewriter)
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        r = FileStore(root)
        try:
            deadline = time.monotonic() + scaled(1, 10)
            while time.monotonic() < deadline:
                msgs = r.load_all_messages(sid)
                ids = {m.id for m in msgs}
                assert set(base) <= ids, "a reader saw a partial messages.jsonl"
                value = r.get_metadata(sid, "k")
                assert value is not None and value.startswith("v")
                todo = r.get_todo(sid)
                assert todo is not None and len(set(todo.splitlines())) == 1 and len(todo.splitlines()) == 1000
                assert r.list_sessions(10, ".")[0].message_count >= len(base)
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.touch()
    rewrites = int(child.finish().split()[-1])
    assert not errors, errors[0]
    assert rewrites > 3 and reads[0] > 3


def test_two_stores_in_one_thread_on_one_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a, b = FileStore(root), FileStore(root)
    sid = a.create_session("main", ".")
    ids = []
    for i in range(200):
        ids.append((a if i % 3 else b).insert_message(sid, Role.USER, f"m{i}"))
        if i == 100:
            b.compact_session(sid, "sum", 10)
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert [m.id for m in a.load_all_messages(sid)] == [m.id for m in b.load_all_messages(sid)]
    contents = [m.content for m in a.load_all_messages(sid) if m.role is Role.USER]
    assert contents == [f"m{i}" for i in range(200)]
    a.set_metadata(sid, "x", "1")
    assert b.get_metadata(sid, "x") == "1"
    assert b.delete_session(sid) is True
    assert a.load_all_messages(sid) == []
    try:
        a.insert_message(sid, Role.USER, "gone")
        raise AssertionError("insert into a deleted session succeeded")
    except KodaFilesError:
        pass


def _hold_lock(root: Path, sid: str, seconds: float) -> Child:
    """A child that takes the session's lock, says "held", holds it, then reports its release time."""

    def body(wfd: int) -> None:
        store = FileStore(root)
        with store._root.session(sid) as s, s.locked():
            send(wfd, "held")
            if seconds < 0:
                time.sleep(3600)  # until killed
            time.sleep(seconds)
            released = time.monotonic()  # (CLOCK_MONOTONIC is system-wide on Linux)
        send(wfd, f"released {released!r}")

    child = fork_child(body)
    child.read_until(b"held\n")
    return child


def test_killed_lock_holder_frees_the_lock_and_never_two_writers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    holder = _hold_lock(root, sid, -1)
    done = threading.Event()
    got: list[int] = []

    def writer() -> None:
        got.append(store.insert_message(sid, Role.USER, "waited"))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.2), "a second writer got in while the lock was held"
    assert store.load_all_messages(sid) == []
    holder.kill()
    holder.wait()
    assert done.wait(5), "the lock of a killed holder was not freed"
    t.join()
    assert [m.id for m in store.load_all_messages(sid)] == got


def test_blocked_append_gets_the_lock_within_milliseconds_of_release(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "warm up")
    latencies = []
    for _ in range(5):
        holder = _hold_lock(root, sid, 0.15)  # long enough for the waiter to back off fully
        finished: list[float] = []

        def writer(finished: list[float] = finished) -> None:
            store.insert_message(sid, Role.USER, "waited")
            finished.append(time.monotonic())

        t = threading.Thread(target=writer)
        t.start()
        out = holder.finish()
        t.join()
        released = float(out.split(b"released ")[1])
        latencies.append(finished[0] - released)
    assert statistics.median(latencies) < 0.008, f"hand-over latencies {latencies}"
    assert os.path.exists(session_dir(root, sid) / ".lock")


def test_a_writer_is_not_starved_by_back_to_back_compactions(tmp_path: Path) -> None:
    """Waiters poll for the lock; a rewriter that comes straight back for it must leave it free
    long enough for them. Counted in compactions, not seconds: while one insert waits, another
    process compacting in a loop finishes at most a couple of compactions (the one running, and
    perhaps one more), not dozens."""
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    for i in range(2000):
        store.insert_message(sid, Role.USER, f"m{i} " + "x" * 200)
    counter = tmp_path / "compactions"
    counter.write_bytes(b"0")
    stop = tmp_path / "stop"

    def compactor_body(wfd: int) -> None:
        s = FileStore(root)
        n = 0
        while not stop.exists():
            s.compact_session(sid, "summary", 3)
            n += 1
            tmp = counter.with_name("compactions.tmp")
            tmp.write_bytes(str(n).encode())
            os.replace(tmp, counter)  # readers never see a half-written count
        send(wfd, str(n))

    compactor = fork_child(compactor_body)
    while counter.read_bytes() == b"0":
        time.sleep(0.001)
    worst = 0
    for i in range(60):
        before = int(counter.read_bytes())
        store.insert_message(sid, Role.USER, f"w{i}")
        worst = max(worst, int(counter.read_bytes()) - before)
    stop.touch()
    compactor.finish()
    assert worst <= 3, f"one insert waited while {worst} compactions went by"
