"""`koda-files redact` and `koda-files fork`, run through the installed entry point."""

from __future__ import annotations

from pathlib import Path

from _cli import Cli
from _helpers import messages_path

from koda_files import FileStore, Role


def make(tmp_path: Path) -> tuple[Cli, FileStore, str, int]:
    cli = Cli(tmp_path, tmp_path / "root")
    store = FileStore(cli.root)
    sid = store.create_session("main", cli.cwd)
    store.insert_message(sid, Role.USER, "token ghp_abc123XYZ please")
    mid = store.insert_message(sid, Role.ASSISTANT, "noted")
    store.mark_message_complete(mid)
    return cli, store, sid, mid - 1


def test_redact_replaces_the_content_on_disk_and_names_an_unknown_id(tmp_path: Path) -> None:
    cli, store, sid, user = make(tmp_path)
    assert cli.json("redact", str(user), "--with", "[gone]", "--yes", script=True) == {"redacted": [user]}
    assert store.load_all_messages(sid)[0].content == "[gone]"
    assert b"ghp_abc123XYZ" not in messages_path(cli.root, sid).read_bytes()
    line = cli.fails(1, "redact", "999999", "--yes")
    assert "message 999999" in line
    assert "not a message id: 'x1'" in cli.fails(2, "redact", "x1")


def test_redact_asks_and_refuses_without_yes_off_a_terminal(tmp_path: Path) -> None:
    cli, store, sid, user = make(tmp_path)
    assert "add --yes" in cli.fails(2, "redact", str(user), input="y\n")
    assert store.load_all_messages(sid)[0].content == "token ghp_abc123XYZ please"


def test_fork_copies_the_context_into_a_new_session_of_the_same_project(tmp_path: Path) -> None:
    cli, store, sid, _ = make(tmp_path)
    out = cli.json("fork", sid[:12], script=True)
    new = out["session_id"]
    assert out == {"session_id": new, "forked_from": sid, "messages": 2}
    copied = store.load_context(new)
    assert [m.content for m in copied] == ["token ghp_abc123XYZ please", "noted"]
    assert store.list_sessions(10, cli.cwd)[0].id == new  # same project, newest first
    assert "zzzz" in cli.fails(1, "fork", "zzzz")
