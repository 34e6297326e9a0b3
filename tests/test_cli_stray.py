"""Entries under `sessions/` that are not sessions never make a `koda-files` command fail.

A directory whose name is not a session id, a plain file, a symbolic link and a directory with a
valid id but no `metadata.json` sit beside two real sessions; every command runs through the
installed entry point, succeeds, and names each stray entry at most once on stderr.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from _cli import Cli
from _helpers import session_dir, sessions_dir

from koda_files import FileStore

HEADERLESS = "0190f0e0-0000-7000-8000-000000000000"  # a valid id, but no metadata.json
STRAY = ("bad name", "notes.txt", "link")  # not sessions: the store skips them


def _add_strays(cli: Cli) -> None:
    top = sessions_dir(cli.root)
    (top / "bad name").mkdir()
    (top / "notes.txt").write_text("my notes\n")
    elsewhere = cli.tmp_path / "elsewhere-dir"
    elsewhere.mkdir()
    (top / "link").symlink_to(elsewhere)
    (top / HEADERLESS).mkdir()


def _stray_noted_at_most_once(stderr: str, root: Path) -> None:
    for name in STRAY:
        path = str(sessions_dir(root) / name)
        assert stderr.count(f"{path}:") <= 1, stderr


Args = Callable[[str, str, FileStore, Path], list[str]]

# Every command, with arguments for the two sessions (a: compacted with a todo, b: elsewhere).
COMMANDS: dict[str, Args] = {
    "path": lambda a, b, s, tmp: ["path"],
    "sessions": lambda a, b, s, tmp: ["sessions", "--all"],
    "sessions --json": lambda a, b, s, tmp: ["--json", "sessions", "--all", "--sort", "created"],
    "search": lambda a, b, s, tmp: ["search", "other project"],
    "show": lambda a, b, s, tmp: ["show", a[:-2], "--all"],
    "show latest": lambda a, b, s, tmp: ["show", "latest"],
    "show --raw": lambda a, b, s, tmp: ["show", a, "--raw"],
    "show --markdown": lambda a, b, s, tmp: ["show", a, "--markdown"],
    "usage": lambda a, b, s, tmp: ["usage", a],
    "todo": lambda a, b, s, tmp: ["todo", a],
    "todo --set": lambda a, b, s, tmp: ["todo", b, "--set", "- [ ] more"],
    "compact": lambda a, b, s, tmp: ["compact", b, "--summary", "short", "--keep", "0"],
    "stats": lambda a, b, s, tmp: ["stats"],
    "purge --dry-run": lambda a, b, s, tmp: ["purge", "--older-than", "0", "--dry-run"],
    "purge": lambda a, b, s, tmp: ["purge", "--older-than", "0", "--yes"],
    "export-sqlite": lambda a, b, s, tmp: ["export-sqlite", str(tmp / "out.db")],
    "import-sqlite": lambda a, b, s, tmp: ["import-sqlite", str(_koda_db(tmp)), "--replace"],
    "redact": lambda a, b, s, tmp: ["redact", str(s.load_all_messages(b)[0].id), "--yes"],
    "fork": lambda a, b, s, tmp: ["fork", a],
    "delete": lambda a, b, s, tmp: ["delete", b, "--yes"],
    "delete the headerless": lambda a, b, s, tmp: ["delete", HEADERLESS[:8], "--yes"],
}


def _koda_db(tmp: Path) -> Path:
    """A koda database of one session, exported from a clean store."""
    db = tmp / "koda.db"
    if not db.exists():
        from koda_files import export_sqlite

        store = FileStore(tmp / "clean")
        store.create_session("main", tmp)
        export_sqlite(store, db)
    return db


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_succeeds_beside_stray_entries(cli: Cli, sessions: tuple[str, str], name: str) -> None:
    a, b = sessions
    _add_strays(cli)
    args = COMMANDS[name](a, b, FileStore(cli.root), cli.tmp_path)
    r = cli.run(*args, script=True)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "error" not in r.stderr, r.stderr
    _stray_noted_at_most_once(r.stderr, cli.root)
    for name_ in STRAY:  # still there: no command removes what is not the store's
        assert (sessions_dir(cli.root) / name_).is_symlink() or (sessions_dir(cli.root) / name_).exists()


def test_listings_show_only_the_real_sessions(cli: Cli, sessions: tuple[str, str]) -> None:
    _add_strays(cli)
    assert sorted(r["id"] for r in cli.json("sessions", "--all")) == sorted(sessions)
    stats = cli.json("stats")
    assert stats["messages"] == sum(len(FileStore(cli.root).load_all_messages(s)) for s in sessions)


def test_export_leaves_out_only_the_session_without_metadata(cli: Cli, sessions: tuple[str, str]) -> None:
    _add_strays(cli)
    out = cli.tmp_path / "out.db"
    r = cli.run("export-sqlite", str(out), script=True)
    assert r.returncode == 0, r.stderr
    noted = [line for line in r.stderr.splitlines() if line.startswith("koda-files: not exported")]
    assert len(noted) == 1 and HEADERLESS in noted[0] and "metadata.json" in noted[0], r.stderr
    with sqlite3.connect(out) as conn:
        assert sorted(row[0] for row in conn.execute("SELECT id FROM sessions")) == sorted(sessions)
    data = cli.json("export-sqlite", str(cli.tmp_path / "again.db"))
    assert data["sessions"] == 2 and [f["session_id"] for f in data["failed"]] == [HEADERLESS]


def test_check_lists_stray_entries_as_ignored_and_passes(cli: Cli, sessions: tuple[str, str]) -> None:
    _add_strays(cli)
    session_dir(cli.root, HEADERLESS).rmdir()  # only entries that are not sessions at all
    r = cli.run("check", script=True)
    assert r.returncode == 0, r.stdout
    for name in STRAY:
        assert f"ignored  not-a-session {sessions_dir(cli.root) / name}" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1] == "checked 2 sessions: ok"
    data = cli.json("check", "--repair")
    assert data["ok"] is True and {p["kind"] for p in data["problems"]} == {"not-a-session"}
    assert (sessions_dir(cli.root) / "notes.txt").exists()  # --repair leaves what is not the store's


def test_check_reports_a_session_directory_without_metadata_as_damage(cli: Cli, sessions: tuple[str, str]) -> None:
    _add_strays(cli)
    r = cli.run("check", script=True)
    assert r.returncode == 1
    assert f"problem  bad-header    {session_dir(cli.root, HEADERLESS) / 'metadata.json'}" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1] == "checked 3 sessions: problems found"
