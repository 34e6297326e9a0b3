"""Power loss: every state a crash can leave, rebuilt from the recorded file-system calls and reopened.

Each workload runs once with its `os` calls recorded (tests/_crashstate.py); after each API call
the store's observable state is taken. Then the crash states of the weak and the ordered model
are rebuilt, deduplicated, sampled (seeded) and each reopened with fresh stores. In "fsync" mode
each state must show exactly the state before or after the call in flight; in both modes it must
open, hand out only fresh ids, take new inserts whole, and check clean (after repair at most)
without losing a message. KODA_FILES_STRESS=1 checks many more states.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from _crashplan import Planner, completed_calls, crash_points
from _crashstate import Recorder, Recording, files_of, materialise
from _fault_helpers import scaled
from _helpers import messages_path, session_dir

from koda_files import Durability, FileStore, Message, Role, TokenUsage
from koda_files._files import fileops as fileops

PROJECT = "/koda-project"
KEYS = ("color", "model")
BAD = re.compile(rb"BADLINE-\d+")
# States checked per workload (after deduplication), and random mixes drawn per crash point.
BUDGET = scaled(260, 5000)
SAMPLES = scaled(3, 40)
LONG_AGO = time.time() - 86400  # after a reboot leftovers are old: repair may remove them
_T = TypeVar("_T")


@dataclass(frozen=True)
class SessionView:
    """What a caller can see of one session (plus the bad lines kept in its log or quarantine)."""

    messages: tuple[Message, ...]
    meta: tuple[str | None, ...]
    todo: str | None
    kept_bad: frozenset[bytes]


View = dict[str, SessionView]


def observe(root: Path, mode: Durability) -> View:
    """The state of every session, read through a fresh store; raises if any of it cannot be read."""
    store = FileStore(root, durability=mode)
    try:
        out = {}
        for info in store.list_sessions(1 << 20, PROJECT):
            sid = info.id
            kept: set[bytes] = set()
            for name in ("messages.jsonl", "quarantine.jsonl"):
                path = session_dir(root, sid) / name
                if path.exists():
                    kept.update(BAD.findall(path.read_bytes()))
            out[sid] = SessionView(
                tuple(store.load_all_messages(sid)),
                tuple(store.get_metadata(sid, k) for k in KEYS),
                store.get_todo(sid),
                frozenset(kept),
            )
        return out
    finally:
        store.close()


def ids_of(view: View) -> list[int]:
    return [m.id for v in view.values() for m in v.messages]


class Run:
    """A workload being recorded: `step` runs one API call and takes the state after it."""

    def __init__(self, root: Path, mode: Durability, scratch: Path) -> None:
        self.root, self.mode, self.scratch = root, mode, scratch
        self.recorder = Recorder(root)
        self.views = [self._view()]

    def _view(self) -> View:
        where = self.scratch / f"view-{len(getattr(self, 'views', []))}"
        materialise(files_of(self.recorder.live), where, LONG_AGO)
        try:
            return observe(where, self.mode)
        finally:
            shutil.rmtree(where)

    def step(self, label: str, fn: Callable[[], _T]) -> _T:
        box: list[_T] = []
        self.recorder.call(label, lambda: box.append(fn()))
        self.views.append(self._view())
        return box[0]

    def store(self) -> FileStore:
        return FileStore(self.root, durability=self.mode)


# ── workloads ──


def create_and_inserts(run: Run) -> None:
    s = run.store()
    a = run.step("create A", lambda: s.create_session("main", PROJECT))
    for i in range(3):
        run.step(f"insert A{i}", partial(s.insert_message, a, Role.USER, f"hello {i}"))
    b = run.step("create B", lambda: s.create_session("main", PROJECT))
    run.step("insert B", lambda: s.insert_message(b, Role.USER, "in B"))
    run.step("insert A", lambda: s.insert_message(a, Role.ASSISTANT, "answer"))


def tool_calls_with_usage(run: Run) -> None:
    s = run.store()
    a = run.step("create", lambda: s.create_session("main", PROJECT))
    run.step("user", lambda: s.insert_message(a, Role.USER, "list files"))
    usage = TokenUsage(prompt_tokens=120, completion_tokens=30, cache_read_tokens=7, stop_reason="tool_use")
    calls = '[{"id":"c1","type":"function","function":{"name":"ls","arguments":"{}"}}]'
    call = run.step("tool call", lambda: s.insert_message(a, Role.ASSISTANT, None, calls, None, usage))
    run.step("tool result", lambda: s.insert_message(a, Role.TOOL, "a.txt", None, "c1"))
    run.step("complete", lambda: s.mark_message_complete(call))
    run.step("sub-agent", lambda: s.insert_message_with_agent(a, Role.ASSISTANT, "done", None, None, usage, "sub"))


def _session_with(run: Run, store: FileStore, n: int) -> str:
    sid = run.step("create", lambda: store.create_session("main", PROJECT))
    for i in range(n):
        run.step(f"insert {i}", partial(store.insert_message, sid, Role.USER if i % 2 else Role.ASSISTANT, f"m{i}"))
    return sid


def compaction(run: Run) -> None:
    s = run.store()
    a = _session_with(run, s, 5)
    run.step("compact", lambda: s.compact_session(a, "the summary", 2))
    run.step("insert after", lambda: s.insert_message(a, Role.USER, "after"))


def purge(run: Run) -> None:
    s = run.store()
    a = _session_with(run, s, 4)
    run.step("compact", lambda: s.compact_session(a, "the summary", 1))
    run.step("purge", lambda: s.purge_compacted(0))
    run.step("insert after", lambda: s.insert_message(a, Role.USER, "after"))


def delete(run: Run) -> None:
    s = run.store()
    a = _session_with(run, s, 2)
    b = _session_with(run, s, 3)  # holds the largest ids, which must never be handed out again
    run.step("delete B", lambda: s.delete_session(b))
    run.step("insert A", lambda: s.insert_message(a, Role.USER, "after the delete"))


def metadata_and_todo(run: Run) -> None:
    s = run.store()
    a = _session_with(run, s, 1)
    run.step("set color", lambda: s.set_metadata(a, "color", "red"))
    run.step("set todo", lambda: s.set_todo(a, "- [ ] one\n"))
    run.step("change color", lambda: s.set_metadata(a, "color", "blue"))
    run.step("change todo", lambda: s.set_todo(a, "- [x] one\n- [ ] two\n"))
    run.step("set model", lambda: s.set_metadata(a, "model", "m-2"))


def id_blocks(run: Run) -> None:
    s1, s2 = run.store(), run.store()
    a = run.step("create A", lambda: s1.create_session("main", PROJECT))
    b = run.step("create B", lambda: s2.create_session("main", PROJECT))
    for i in range(scaled(18, 40)):  # past the first block of 16 ids of each store (the second: 32)
        run.step(f"A{i}", partial(s1.insert_message, a, Role.USER, f"a{i}"))
        run.step(f"B{i}", partial(s2.insert_message, b, Role.USER, f"b{i}"))


def mixed(run: Run) -> None:
    s1, s2 = run.store(), run.store()
    a = _session_with(run, s1, 3)
    b = run.step("create B", lambda: s2.create_session("main", PROJECT))
    run.step("insert B", lambda: s2.insert_message(b, Role.USER, "b"))
    run.step("meta", lambda: s1.set_metadata(a, "color", "green"))
    run.step("compact A", lambda: s2.compact_session(a, "sum", 1))
    run.step("insert A", lambda: s1.insert_message(a, Role.USER, "a after"))
    run.step("todo", lambda: s2.set_todo(b, "x"))
    run.step("purge", lambda: s1.purge_compacted(0))
    run.step("delete B", lambda: s1.delete_session(b))
    run.step("insert A again", lambda: s2.insert_message(a, Role.USER, "last"))


def _bad_line_setup(root: Path) -> None:
    s = FileStore(root, durability="fsync")
    sid = s.create_session("main", PROJECT)
    s.insert_message(sid, Role.USER, "before the bad line")
    with messages_path(root, sid).open("ab") as f:
        f.write(b"BADLINE-1 this is not json\n")
    s.insert_message(sid, Role.USER, "after the bad line")
    s.close()


def repair(run: Run) -> None:
    s = run.store()
    run.step("repair", lambda: s.check(repair=True))
    sid = next(iter(run.views[-1]))
    run.step("insert", lambda: s.insert_message(sid, Role.USER, "after repair"))


WORKLOADS: dict[str, tuple[Callable[[Run], None], Callable[[Path], None] | None]] = {
    "create_and_inserts": (create_and_inserts, None),
    "tool_calls_with_usage": (tool_calls_with_usage, None),
    "compaction": (compaction, None),
    "purge": (purge, None),
    "delete": (delete, None),
    "metadata_and_todo": (metadata_and_todo, None),
    "id_blocks": (id_blocks, None),
    "mixed": (mixed, None),
    "repair": (repair, _bad_line_setup),
}
CASES = [(name, "fsync") for name in WORKLOADS if name != "mixed"] + [("id_blocks", "flush"), ("mixed", "flush")]


# ── the checks on one crash state ──


def _insert_everywhere(root: Path, mode: Durability, order: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Two fresh stores insert into every session, the first in `order`, the second in reverse."""
    new: dict[str, list[tuple[int, str]]] = {sid: [] for sid in order}
    for n, sids in enumerate((order, order[::-1])):
        store = FileStore(root, durability=mode)
        for sid in sids:
            text = f"after the crash, store {n}"
            new[sid].append((store.insert_message(sid, Role.USER, text), text))
        store.close()
    return new


def check_state(files: dict[str, bytes | None], crash: int, rec: Recording, views: list[View], mode: Durability,
                work: Path) -> None:
    """Reopen one crash state and check every promise; raises AssertionError saying which broke."""
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    materialise(files, root, LONG_AGO)
    done = completed_calls(rec, crash)
    before = observe(root, mode)
    ids = ids_of(before)
    assert len(ids) == len(set(ids)), f"an id is in the store twice: {sorted(ids)}"
    if mode == "fsync":
        allowed = views[done : done + 2]
        assert before in allowed, f"neither the state before nor after the call: {_diff(before, allowed[-1])}"
        handed = max([0, *ids] + [i for v in views[: done + 1] for i in ids_of(v)])
    else:
        ever = {(sid, m) for v in views for sid, s in v.items() for m in s.messages}
        invented = [m for sid, s in before.items() for m in s.messages if (sid, m) not in ever]
        assert not invented, f"messages never written: {invented}"
        # Rewrites are all-or-nothing in "flush" mode too: metadata and todo are values they once had.
        headers = {(sid, s.meta, s.todo) for v in views for sid, s in v.items()}
        mixed = [sid for sid, s in before.items() if (sid, s.meta, s.todo) not in headers]
        assert not mixed, f"metadata or todo of {mixed} never written as they are"
        handed = max([0, *ids])
    if not before:  # nothing survived (or nothing was there): a new session takes the inserts
        store = FileStore(root, durability=mode)
        before[store.create_session("main", PROJECT)] = SessionView((), (None,) * len(KEYS), None, frozenset())
        store.close()
    # Which session gets the first insert after the crash matters (the id counter is rebuilt
    # then): every order is tried on its own copy, the last one on `root` itself.
    orders = [sorted(before), sorted(before, reverse=True)][: len(before)]
    for n, order in enumerate(orders):
        target = root if n == len(orders) - 1 else work / f"copy-{n}"
        if target != root:
            shutil.copytree(root, target, symlinks=True)
        new = _insert_everywhere(target, mode, order)
        after = observe(target, mode)
        assert set(after) == set(before), "sessions appeared or vanished on insert"
        for sid, was in before.items():
            now = after[sid]
            old = len(was.messages)
            assert now.messages[:old] == was.messages, f"an insert changed what was there: {_diff(after, before)}"
            assert [(m.id, m.content) for m in now.messages[old:]] == new[sid], (
                f"inserts not landed whole: {_diff(after, before)}; inserted {new[sid]}"
            )
            assert (now.meta, now.todo, now.kept_bad) == (was.meta, was.todo, was.kept_bad)
        fresh = [i for got in new.values() for i, _ in got]
        assert min(fresh) > handed, f"new ids {sorted(fresh)} not above {handed}, the largest handed out"
        every = ids_of(after)
        assert len(every) == len(set(every)), f"an id repeats after inserting (order {n}): {sorted(every)}"
    store = FileStore(root, durability=mode)
    if not store.check().ok:
        store.check(repair=True)
        report = store.check()
        assert report.ok, f"still damaged after repair: {report.problems}"
    store.close()
    assert observe(root, mode) == after, f"check(repair=True) changed messages: {_diff(observe(root, mode), after)}"


def _diff(got: View, want: View) -> str:
    parts = []
    for sid in sorted(set(got) | set(want)):
        a, b = got.get(sid), want.get(sid)
        if a != b:
            ga = None if a is None else [(m.id, m.content, m.compacted_at is not None) for m in a.messages]
            gb = None if b is None else [(m.id, m.content, m.compacted_at is not None) for m in b.messages]
            parts.append(f"{sid[-6:]}: got {ga} {a and (a.meta, a.todo, set(a.kept_bad))} "
                         f"want {gb} {b and (b.meta, b.todo, set(b.kept_bad))}")
    return "; ".join(parts)


def crash_states(rec: Recording, seed: int) -> list[tuple[dict[str, bytes | None], int, str]]:
    """The distinct (tree, calls done) crash states, a seeded sample of at most BUDGET of them."""
    planner = Planner(rec)
    rng = random.Random(seed)
    seen: dict[tuple[int, bytes], tuple[dict[str, bytes | None], int, str]] = {}
    for crash in crash_points(rec):
        for plan in planner.plans(crash, rng, SAMPLES):
            files = planner.build(plan)
            digest = hashlib.blake2b(repr(sorted(files.items())).encode()).digest()
            key = (completed_calls(rec, crash), digest)
            if key not in seen:
                seen[key] = (files, crash, f"{plan.model}: {plan.note} at op {crash}")
    states = list(seen.values())
    return states if len(states) <= BUDGET else rng.sample(states, BUDGET)


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_every_crash_state_reopens_as_before_or_after(tmp_path: Path, name: str, mode: Durability) -> None:
    workload, setup = WORKLOADS[name]
    root = tmp_path / "root"
    root.mkdir()  # the root directory itself is given: durable before the store ever runs
    if setup is not None:
        setup(root)
    run = Run(root, mode, tmp_path)
    workload(run)
    rec = run.recorder.rec
    states = crash_states(rec, seed=sum(name.encode()))
    failures: dict[str, list[str]] = {}
    for files, crash, how in states:
        calls = [c.label for c in rec.calls if c.start <= crash < c.end] or ["(between calls)"]
        try:
            check_state(files, crash, rec, run.views, mode, tmp_path / "state")
        except Exception as exc:  # every broken promise is collected, grouped by its kind
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            kind = f"{type(exc).__name__}: {first.split(':')[0]}"
            failures.setdefault(kind, []).append(f"{how} (in flight: {calls[0]}): {first[:400]}")
    summary = "\n".join(f"{len(v)} x {k}\n    e.g. {v[0]}" for k, v in failures.items())
    assert not failures, f"{sum(map(len, failures.values()))} of {len(states)} crash states broken:\n{summary}"


def test_recorder_follows_every_change_and_states_lose_what_was_not_synced(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    recorder = Recorder(root)

    def work() -> None:
        fileops.make_dir(root / "d")
        fileops.atomic_write(root / "d" / "f", [b"one\n"])
        fileops.link(root / "d" / "f", root / "d" / "g")
        fd, _ = fileops.open_append(root / "d" / "f")
        fileops.write_all(fd, b"two\n")
        os.close(fd)
        fileops.unlink(root / "d" / "g")

    recorder.call("work", work)  # asserts the model equals the disk afterwards
    assert {"mkdir", "chmod", "open", "write", "fdatasync", "replace", "fsync", "link", "unlink"} <= {
        op.call for op in recorder.rec.ops
    }
    planner = Planner(recorder.rec)
    trees = [planner.build(p) for p in planner.plans(len(recorder.rec.ops), random.Random(0), 0)]
    assert {"d": None, "d/f": b"one\ntwo\n"} in trees  # everything kept
    assert {"d": None, "d/f": b"one\ntwo"} in trees  # the append torn before its newline
    assert {"d": None, "d/f": b"one\ntwo\n", "d/g": b"one\ntwo\n"} in trees  # the unlink lost; one inode
    assert {} in trees  # the root was never synced: "d" itself may be lost
