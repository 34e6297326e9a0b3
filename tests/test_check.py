"""`FileStore.check(repair=False)`: the report, and repair by quarantine and cleanup."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from _fault_helpers import fork_child, scaled
from _helpers import healthy_and_to_damage, messages_path, metadata_path, quarantine_path, sessions_dir

from koda_files import CheckReport, FileStore, Role


def _damaged(root: Path) -> tuple[FileStore, str, str, bytes]:
    store, sid, good = healthy_and_to_damage(root)
    path = messages_path(root, sid)
    lines = path.read_bytes().split(b"\n")[:-1]
    crlf_good = lines[2] + b"\r"
    damaged = b"\n".join([lines[0], b"{not json", lines[1], b'{"id":5}', b"\xff\xfe binary", crlf_good]) + b"\n"
    damaged += b"\0\0\0\0"  # torn, zero-filled tail
    path.write_bytes(damaged)
    return store, sid, good, damaged


def _kinds(report: CheckReport) -> list[tuple[str, int | None, bool]]:
    return [(p.kind, p.line, p.repaired) for p in report.problems]


def test_check_reports_each_problem_with_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, sid, good, _ = _damaged(root)
    sessions = sessions_dir(root)
    (sessions / sid / ".messages.jsonl.abc123.tmp").write_bytes(b"half")
    (sessions / ".new-0000").mkdir()
    (sessions / ".deleted-x-1234").mkdir()
    (sessions / "stray-file").write_text("x")
    (sessions / "bad name").mkdir()
    third = store.create_session("main", ".")
    metadata_path(root, third).write_text("{oops")
    fourth = store.create_session("main", ".")
    messages_path(root, fourth).unlink()
    before = {p: p.read_bytes() for p in sessions.rglob("*") if p.is_file() and p.name != ".lock"}

    report = store.check()
    assert report.sessions == 4 and not report.ok
    got = {(p.kind, p.session_id, p.line) for p in report.problems}
    assert {
        ("bad-line", sid, 2),
        ("bad-line", sid, 4),
        ("bad-line", sid, 5),
        ("torn-tail", sid, 7),
        ("temp-file", sid, None),
        ("temp-file", None, None),
        ("bad-header", third, None),
        ("missing-log", fourth, None),
        ("not-a-session", "stray-file", None),
        ("not-a-session", None, None),
    } <= got
    assert len([p for p in report.problems if p.kind == "temp-file"]) == 3
    assert all(p.path.startswith(str(root)) for p in report.problems)
    assert all(p.session_id != good for p in report.problems)
    # Checking changes nothing.
    assert {p: p.read_bytes() for p in sessions.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_repair_quarantines_bad_lines_and_keeps_good_ones_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store, sid, _, damaged = _damaged(root)
    path = messages_path(root, sid)
    raw = damaged.split(b"\n")
    report = store.check(repair=True)
    assert report.ok and _kinds(report) == [
        ("bad-line", 2, True), ("bad-line", 4, True), ("bad-line", 5, True), ("torn-tail", 7, True),
    ]
    assert path.read_bytes() == raw[0] + b"\n" + raw[2] + b"\n" + raw[5] + b"\n", "a good line was touched"
    quarantined = [json.loads(x) for x in quarantine_path(root, sid).read_bytes().splitlines()]
    assert [q["line"] for q in quarantined] == [2, 4, 5, 7]
    assert quarantined[0]["text"] == "{not json" and quarantined[1]["text"] == '{"id":5}'
    assert base64.b64decode(quarantined[2]["base64"]) == b"\xff\xfe binary"
    assert quarantined[3]["text"] == "\0\0\0\0"
    assert store.check().problems == ()
    assert [m.content for m in store.load_all_messages(sid)] == ["one", "two", "three"]
    # The quarantine is appended to, never replaced.
    with path.open("ab") as f:
        f.write(b"another bad line\n")
    store.check(repair=True)
    assert len(quarantine_path(root, sid).read_bytes().splitlines()) == 5
    store.insert_message(sid, Role.USER, "four")
    assert [m.content for m in store.load_all_messages(sid)][-1] == "four"


def test_repair_adds_the_newline_a_whole_last_record_lacks(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "one")
    path = messages_path(tmp_path / "root", sid)
    path.write_bytes(path.read_bytes() + b'{"id":50,"role":"user","content":"typed by hand"}')
    assert _kinds(store.check()) == [("torn-tail", 2, False)]
    assert _kinds(store.check(repair=True)) == [("torn-tail", 2, True)]
    assert [m.content for m in store.load_all_messages(sid)] == ["one", "typed by hand"]
    assert not quarantine_path(tmp_path / "root", sid).exists()


def test_repair_cleans_crash_leftovers_but_not_recent_staging(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    sid = store.create_session("main", ".")
    sessions = sessions_dir(tmp_path / "root")
    tmp_file = sessions / sid / ".todo.md.0123.tmp"
    tmp_file.write_text("partial")
    old_new, recent_new, deleted = sessions / ".new-old", sessions / ".new-recent", sessions / ".deleted-x"
    for d in (old_new, recent_new, deleted):
        d.mkdir()
        (d / "metadata.json").write_text("{}")
    past = time.time() - 3600
    os.utime(old_new, (past, past))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (deleted / "link").symlink_to(outside)
    report = store.check(repair=True)
    by_path = {p.path: p.repaired for p in report.problems}
    assert by_path == {str(tmp_file): True, str(old_new): True, str(deleted): True, str(recent_new): False}
    assert not tmp_file.exists() and not old_new.exists() and not deleted.exists() and recent_new.exists()
    assert (outside / "keep").read_text() == "keep"


def test_repair_under_racing_appends_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    path = messages_path(root, sid)
    n = scaled(300, 3000)

    def writer(_fd: int) -> None:
        s = FileStore(root)
        for i in range(n):
            s.insert_message(sid, Role.USER, f"w{i}")

    child = fork_child(writer)
    bad = 0
    for _ in range(scaled(20, 200)):
        with store._root.session(sid) as s, s.locked():  # a hand edit, done politely under the lock
            with path.open("ab") as f:
                f.write(b"junk\n")
            bad += 1
        store.check(repair=True)
    child.finish()
    store.check(repair=True)
    contents = [m.content for m in store.load_all_messages(sid)]
    assert contents == [f"w{i}" for i in range(n)], "repair lost or reordered an append"
    assert len(quarantine_path(root, sid).read_bytes().splitlines()) == bad
