"""Damage on disk. Each kind is readable with a warning naming file and line,
nothing a person wrote is dropped by any rewrite, and one broken session never hides the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import healthy_and_to_damage, messages_path, metadata_path

from koda_files import FileStore, KodaFilesError, Role


def _two_sessions(root: Path) -> tuple[FileStore, str, str, Path]:
    store, sid, good = healthy_and_to_damage(root)
    return store, sid, good, messages_path(root, sid)


# (name, how to damage the lines, the damaged line (1-based) a warning must name, bytes that must survive)
Damage = Callable[[list[bytes]], list[bytes]]
LINE_DAMAGE: list[tuple[str, Damage, int | None, bytes | None]] = [
    ("malformed-middle", lambda ls: [ls[0], b'{"id": 99, "role": "user", oops', *ls[1:]], 2, b"oops"),
    ("missing-id", lambda ls: [ls[0], b'{"role":"user","content":"no id"}', *ls[1:]], 2, b"no id"),
    ("missing-role", lambda ls: [ls[0], b'{"id":77,"content":"no role"}', *ls[1:]], 2, b"no role"),
    ("wrong-types", lambda ls: [ls[0], b'{"id":"5","role":"user","prompt_tokens":1.5}', *ls[1:]], 2, b'"5"'),
    ("not-an-object", lambda ls: [ls[0], b"[1, 2, 3]", *ls[1:]], 2, b"[1, 2, 3]"),
    ("blank-lines", lambda ls: [ls[0], b"", b"   ", *ls[1:]], 3, None),
    ("crlf", lambda ls: [x + b"\r" for x in ls], None, None),
    ("bom", lambda ls: [b"\xef\xbb\xbf" + ls[0], *ls[1:]], None, None),
]


@pytest.mark.parametrize("name,damage,bad_line,kept", LINE_DAMAGE, ids=[d[0] for d in LINE_DAMAGE])
def test_damaged_lines_are_skipped_with_a_warning_and_kept_by_rewrites(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    damage: Damage,
    bad_line: int | None,
    kept: bytes | None,
) -> None:
    _, sid, good, path = _two_sessions(tmp_path / "root")
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(damage(lines)) + b"\n")
    fresh = FileStore(tmp_path / "root")
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        assert [m.content for m in fresh.load_all_messages(sid)] == ["one", "two", "three"]
    if bad_line is not None:
        text = caplog.text
        assert str(path) in text and f"line {bad_line}" in text, text
    # Rewrites keep what a person wrote.
    fresh.insert_message(sid, Role.USER, "four")
    assert fresh.compact_session(sid, "sum", 1) == 3
    fresh.purge_compacted(0)
    if kept is not None:
        assert kept in path.read_bytes(), "a rewrite dropped a line a person wrote"
    assert [m.content for m in fresh.load_context(sid)] == ["sum", fresh.load_context(sid)[1].content, "four"]
    # The other session is untouched and listed.
    assert {i.id for i in fresh.list_sessions(10, ".")} == {sid, good}
    assert [m.content for m in fresh.load_all_messages(good)] == ["the healthy one"]


def test_zero_filled_tail_reads_and_is_not_glued_to_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, sid, _, path = _two_sessions(tmp_path / "root")
    with path.open("ab") as f:
        f.write(b"\0" * 4096)  # what a crash can leave after a size update without the data
    fresh = FileStore(tmp_path / "root")
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        assert [m.content for m in fresh.load_all_messages(sid)] == ["one", "two", "three"]
    assert "line 4" in caplog.text and str(path) in caplog.text
    fresh.insert_message(sid, Role.USER, "four")
    assert [m.content for m in fresh.load_all_messages(sid)] == ["one", "two", "three", "four"]
    assert path.read_bytes().split(b"\n")[3] == b"\0" * 4096
    fresh.compact_session(sid, "sum", 1)
    assert b"\0" * 4096 + b"\n" in path.read_bytes()


def test_unparsable_metadata_is_reported_and_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, sid, good, _ = _two_sessions(tmp_path / "root")
    header = metadata_path(tmp_path / "root", sid)
    broken = b'{"agent_name": "main", "metadata": {"k": "half an edit'
    header.write_bytes(broken)
    fresh = FileStore(tmp_path / "root")
    with caplog.at_level(logging.WARNING, logger="koda_files"):
        assert [i.id for i in fresh.list_sessions(10, ".")] == [good]
    assert str(header) in caplog.text
    assert [m.content for m in fresh.load_all_messages(sid)] == ["one", "two", "three"]
    with pytest.raises(KodaFilesError, match=r"metadata\.json"):
        fresh.set_metadata(sid, "k", "v")
    reads: list[Callable[[], object]] = [lambda: fresh.get_metadata(sid, "k"), lambda: fresh.get_session_mode(sid)]
    for read in reads:
        with pytest.raises(KodaFilesError, match=r"metadata\.json"):  # not a silent None
            read()
    assert header.read_bytes() == broken
    fresh.insert_message(sid, Role.USER, "still writable")
    assert fresh.load_all_messages(sid)[-1].content == "still writable"
    assert [p.kind for p in fresh.check().problems] == ["bad-header"]


def test_missing_messages_file_reads_empty_and_others_stay_visible(tmp_path: Path) -> None:
    _, sid, good, path = _two_sessions(tmp_path / "root")
    path.unlink()
    fresh = FileStore(tmp_path / "root")
    assert fresh.load_all_messages(sid) == []
    infos = {i.id: i.message_count for i in fresh.list_sessions(10, ".")}
    assert infos == {sid: 0, good: 1}
    assert fresh.purge_compacted(0) == 0 and fresh.compact_session(sid, "s", 0) == 0
    assert [p.kind for p in fresh.check().problems] == ["missing-log"]
    fresh.insert_message(sid, Role.USER, "recreated")
    assert [m.content for m in fresh.load_all_messages(sid)] == ["recreated"]
    assert fresh.check().problems == ()


def test_a_last_line_saved_without_its_newline_is_a_message_to_every_reader(tmp_path: Path) -> None:
    """An editor that saves without a final newline leaves the last message readable at once,
    by a store that had the log cached, by a fresh one reading backwards, and after appends."""
    warm, sid, good, log = _two_sessions(tmp_path)
    assert [m.content for m in warm.load_all_messages(sid)] == ["one", "two", "three"]
    log.write_bytes(log.read_bytes().replace(b'"three"', b'"three, edited"').rstrip(b"\n"))

    assert [m.content for m in warm.load_all_messages(sid)] == ["one", "two", "three, edited"]
    fresh = FileStore(tmp_path)
    assert fresh.last_user_message(sid) == "three, edited"
    assert fresh.recent_user_messages(1) == ["three, edited"]

    new_id = fresh.insert_message(sid, Role.USER, "four")  # adds the missing newline first
    assert log.read_bytes().count(b"\n") == 4
    for reader in (warm, fresh, FileStore(tmp_path)):
        messages = reader.load_all_messages(sid)
        assert [m.content for m in messages] == ["one", "two", "three, edited", "four"]
        assert messages[-1].id == new_id
        assert reader.last_user_message(sid) == "four"
    # The line extended instead of ended (a hand edit again): the warm cache reads it whole.
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    assert [m.content for m in warm.load_all_messages(sid)][-1] == "four"
    with log.open("ab") as f:  # a record glued on: the two make one line that is not a message
        f.write(b'{"id":999,"role":"user","content":"glued"}\n')
    assert [m.content for m in warm.load_all_messages(sid)] == ["one", "two", "three, edited"]
    assert warm.load_all_messages(sid) == FileStore(tmp_path).load_all_messages(sid)
    assert warm.load_context(good)[0].content == "the healthy one"
