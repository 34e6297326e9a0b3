"""I/O errors, SQLite style. Every write, fsync, rename and mkdir the store makes
(the functions of `koda_files._files.fileops`) fails with ENOSPC or EIO at the Nth call, N = 1, 2, 3 ...
until the operation completes without reaching the fault. Each time: the error reaches the
caller, the state on disk is exactly the old or exactly the new one, a success is never claimed
for a change that is not there, and with the fault gone the same store works again.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _fault_helpers import FaultPlan, copy_root, inject_faults, leftovers, run_in_child, stray_entries
from _helpers import messages_path, session_dir, sessions_dir

from koda_files import Durability, FileStore, KodaFilesError, Role


@dataclass
class Op:
    name: str
    run: Callable[[FileStore, str], object]


OPS = [
    Op("insert", lambda s, sid: s.insert_message(sid, Role.USER, "new message")),
    Op("create_session", lambda s, sid: s.create_session("sub", "/p")),
    Op("compact", lambda s, sid: s.compact_session(sid, "summary", 2)),
    Op("purge", lambda s, sid: s.purge_compacted(0)),
    Op("set_metadata", lambda s, sid: s.set_metadata(sid, "model", "new")),
    Op("set_todo", lambda s, sid: s.set_todo(sid, "- [x] new")),
    Op("delete_session", lambda s, sid: s.delete_session(sid)),
]


def _state(root: Path, known: set[str]) -> object:
    """Everything a user sees, with the ids and times of sessions made by the operation masked."""
    reader = FileStore(root)
    out = []
    for name in sorted(os.listdir(sessions_dir(root))):
        if name.startswith("."):
            continue
        msgs = [(m.id, m.role, m.content, m.compacted_at is not None) for m in reader.load_all_messages(name)]
        out.append(
            (
                name if name in known else "new",
                msgs if name in known else [],
                reader.get_metadata(name, "model"),
                reader.get_todo(name),
            )
        )
    reader.close()
    return sorted(out, key=lambda x: str(x[0]))


def _template(root: Path, durability: Durability) -> tuple[str, set[str]]:
    store = FileStore(root, durability=durability)
    other = store.create_session("main", ".")
    store.insert_message(other, Role.USER, "other session")
    sid = store.create_session("main", ".")
    for i in range(8):
        store.insert_message(sid, Role.USER, f"m{i}")
    store.compact_session(sid, "first summary", 3)
    store.insert_message(sid, Role.USER, "after compaction")
    store.set_metadata(sid, "model", "old")
    store.set_todo(sid, "- [ ] old")
    return sid, {sid, other}


def _semantic(state: object) -> object:
    # Compaction allocates ids for its summary: compare those runs without the new ids.
    return [(n, [(r, c, a) for _, r, c, a in msgs], meta, todo) for n, msgs, meta, todo in state]  # type: ignore[attr-defined]


@pytest.mark.parametrize("durability", ["flush", "fsync"])
@pytest.mark.parametrize("op", OPS, ids=[o.name for o in OPS])
def test_nth_call_io_error_leaves_old_or_new_state(tmp_path: Path, op: Op, durability: Durability) -> None:
    template = tmp_path / "template"
    sid, known = _template(template, durability)
    old = _state(template, known)
    scratch = copy_root(template, tmp_path / "scratch")
    store = FileStore(scratch, durability=durability)
    plan = FaultPlan(fail_at=0, err=errno.EIO)
    with inject_faults(plan):
        op.run(store, sid)
    calls = len(plan.calls)
    new = _state(scratch, known)
    assert new != old and calls > 0
    shutil.rmtree(scratch)

    for err in (errno.ENOSPC, errno.EIO):
        for n in range(1, calls + 2):
            root = copy_root(template, tmp_path / f"n{n}-{err}")
            store = FileStore(root, durability=durability)
            store.load_all_messages(sid)  # warm caches, as a long-running process has them
            plan = FaultPlan(fail_at=n, err=err)
            raised: BaseException | None = None
            with inject_faults(plan):
                try:
                    result = op.run(store, sid)
                except BaseException as exc:
                    raised = exc
            got = _state(root, known)
            where = f"{op.name}: {errno.errorcode[err]} at call {n} ({plan.fired})"
            if plan.fired is None or raised is None:
                # No fault reached, or one in a best-effort write of derived data (an index) that
                # the store may absorb: then the operation must really have been done.
                assert raised is None and (plan.fired is not None or n > calls), where
                assert got == new or _semantic(got) == _semantic(new), f"{where}: success claimed"
                continue
            assert isinstance(raised, OSError) and raised.errno == err, f"{where}: {raised!r}"
            assert got in (old, new) or _semantic(got) == _semantic(new), f"{where}: partial state"
            if op.name == "insert":
                assert got == old, f"{where}: a failed append stayed visible (a retry would double it)"
            assert stray_entries(root, template) == [], where
            assert [p for p in leftovers(root) if "/.deleted-" not in p] == [], where
            # The fault is gone: the same store object carries on, all earlier data intact.
            after = op.run(store, sid)
            if op.name == "insert":
                assert isinstance(after, int) and store.load_all_messages(sid)[-1].id == after
            if session_dir(root, sid).exists():
                store.insert_message(sid, Role.USER, "later")
                assert store.load_all_messages(sid)[-1].content == "later"
                kept = [m.content for m in store.load_all_messages(sid)]
                assert {"m0", "m7", "after compaction"} <= set(kept) or op.name == "purge"
            assert store.check(repair=True).ok
            assert store.check().problems == ()
            store.close()
            shutil.rmtree(root)
        del result


def test_failed_append_is_cut_back_and_never_acknowledged(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root", durability="fsync")
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "kept")
    path = messages_path(tmp_path / "root", sid)
    returned = 0
    for n in range(1, 6):  # fail each write / fsync an append makes in turn
        plan = FaultPlan(fail_at=n, err=errno.EIO)
        with inject_faults(plan), pytest.raises(OSError):
            for _ in range(n):
                store.insert_message(sid, Role.USER, "acked")
                returned += 1
        assert plan.fired in ("write_all", "sync", "write_at"), plan.fired
        data = path.read_bytes()
        assert data.endswith(b"\n") and data.count(b'"acked"') == returned, f"failed {plan.fired} left bytes"
    store.insert_message(sid, Role.USER, "next")
    assert [m.content for m in store.load_all_messages(sid)] == ["kept"] + ["acked"] * returned + ["next"]


def _read_only_probe(root: Path, sid: str) -> list[str]:
    store = FileStore(root)
    assert [m.content for m in store.load_all_messages(sid)] == ["hello"]
    assert [i.id for i in store.list_sessions(5, ".")] == [sid]
    assert store.get_todo(sid) == "todo" and store.recent_user_messages(5) == ["hello"]
    errors = []
    for write in (
        lambda: store.insert_message(sid, Role.USER, "no"),
        lambda: store.set_todo(sid, "no"),
        lambda: store.set_metadata(sid, "k", "no"),
        lambda: store.create_session("main", "."),
        lambda: store.compact_session(sid, "s", 0),
    ):
        try:
            write()
        except (OSError, KodaFilesError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            errors.append("NO ERROR")
    return errors


def test_read_only_root_serves_reads_and_fails_writes_clearly(tmp_path: Path) -> None:
    base = tmp_path
    if os.geteuid() == 0:  # the unprivileged user below must be able to reach the root
        base = Path(tempfile.mkdtemp(prefix="koda-ro-"))
        base.chmod(0o755)
    try:
        _read_only_root(base / "root")
    finally:
        if base != tmp_path:
            shutil.rmtree(base)


def _read_only_root(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    store.set_todo(sid, "todo")
    before = sorted(str(p) for p in root.rglob("*"))
    if os.geteuid() == 0:
        # root ignores permission bits: hand the tree to an unprivileged user and drop to it.
        nobody = 65534
        for p in [root, *root.rglob("*")]:
            os.chown(p, nobody, nobody, follow_symlinks=False)

        def probe() -> list[str]:
            os.setgid(nobody)
            os.setuid(nobody)
            _make_read_only(root)
            return _read_only_probe(root, sid)

        errors: list[str] = run_in_child(probe)
    else:
        _make_read_only(root)
        try:
            errors = _read_only_probe(root, sid)
        finally:
            for p in [root, *root.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o700)
    assert all(e.startswith(("PermissionError", "OSError", "KodaFilesError")) for e in errors), errors
    assert all(str(root) in e for e in errors), errors  # the error names what could not be written
    assert sorted(str(p) for p in root.rglob("*")) == before


def _make_read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o500 if p.is_dir() else 0o400)
