"""No silent wrong roots, a safe first run, and imports and exports that change nothing they read."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import SCRIPT, Cli, env_for
from _helpers import snapshot

import koda_files
from koda_files import FileStore, KodaFilesError, Role

READING = [
    ["sessions", "--all"], ["show", "latest"], ["search", "x"], ["stats"], ["check"], ["usage", "latest"],
    ["todo", "latest"], ["purge", "--older-than", "1", "--dry-run"], ["export-sqlite", "/nonexistent/out.db"],
]


@pytest.mark.parametrize("how", ["--root", "KODA_FILES_DIR"])
def test_a_root_that_is_not_a_store_is_an_error(cli: Cli, how: str) -> None:
    typo = cli.tmp_path / "typo"
    notes = cli.tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for root in (typo, notes):
        before = snapshot(root)
        for args in READING:
            if how == "--root":
                line = cli.fails(1, "--root", str(root), *args)
            else:
                line = cli.fails(1, *args, KODA_FILES_DIR=str(root))
            assert line == f"koda-files: error: not a koda-files store: {root}", args
        assert snapshot(root) == before and not typo.exists()
    assert cli.ok("--root", str(typo), "path").strip() == str(typo)  # where it would be: fine


def test_the_default_data_dir_may_be_missing(cli: Cli) -> None:
    r = cli.run("sessions", "--all", KODA_FILES_DIR="")
    assert r.returncode == 0 and r.stderr == "no sessions in the store\n"
    assert cli.json("stats", KODA_FILES_DIR="")["sessions"] == 0
    assert not (cli.tmp_path / "data" / "koda").exists()


def test_the_api_refuses_to_make_a_store_in_a_directory_of_other_things(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "paper.txt").write_text("mine")
    store = FileStore(notes)
    with pytest.raises(KodaFilesError, match=re.escape(f"not a koda-files store: {notes}")):
        store.create_session("main", tmp_path)
    assert store.list_sessions(5, tmp_path) == [] and store.session_overviews() == []
    assert sorted(os.listdir(notes)) == ["paper.txt"]  # not even an index was left
    for fine in (tmp_path / "new", tmp_path / "empty", tmp_path / "dots"):
        fine.mkdir(exist_ok=fine.name != "new")
        if fine.name == "dots":
            (fine / ".git").mkdir()
        FileStore(fine).create_session("main", tmp_path)
    assert len(FileStore(tmp_path / "new").session_ids()) == 1


def test_the_default_data_dir_may_hold_other_things(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "xdg" / "koda"
    data.mkdir(parents=True)
    (data / "koda-own-file").write_text("koda keeps things here too")
    monkeypatch.delenv("KODA_FILES_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = FileStore()
    assert store.root == data
    store.create_session("main", tmp_path)
    assert (data / "koda-files.json").is_file()


def test_check_repair_on_a_read_only_root_says_why(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    sid = store.create_session("main", ".")
    store.insert_message(sid, Role.USER, "hello")
    with open(root / "sessions" / sid / "messages.jsonl", "ab") as f:
        f.write(b"broken\n")
    before = snapshot(root)
    if os.geteuid() == 0:
        # root ignores permission bits: a read-only bind mount, private to the command's namespace.
        ro = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" check --repair'
        command = ["unshare", "-m", "sh", "-c", ro, "sh", str(root), str(SCRIPT)]
    else:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o500 if p.is_dir() else 0o400)
        command = [str(SCRIPT), "check", "--repair"]
    try:
        r = subprocess.run(command, capture_output=True, text=True, env=env_for(tmp_path, root), timeout=60)
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o700 if p.is_dir() else 0o600)
    assert r.returncode == 1, r.stderr
    assert "problem  bad-line" in r.stdout and "not repaired: the session lock" in r.stdout, r.stdout
    assert "cannot be taken (a read-only root?)" in r.stdout
    assert snapshot(root) == before


def test_quickstart_writes_to_a_temporary_store_unless_asked(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
    env = {k: v for k, v in os.environ.items() if k != "KODA_FILES_DIR"}
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.match(r"Writing to a temporary store at (\S+) \(--real writes to your real store instead\)", r.stdout)
    assert m is not None, r.stdout
    assert Path(m.group(1)).parent == tmp_path / "tmp" and len(FileStore(m.group(1)).session_ids()) == 1
    assert not (tmp_path / "data").exists()  # the real store was never touched
    r = subprocess.run([sys.executable, str(script), "--real"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "temporary" not in r.stdout
    assert len(FileStore(tmp_path / "data" / "koda").session_ids()) == 1


def _listing(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir()}


def test_import_leaves_nothing_beside_the_database(cli: Cli, sessions: tuple[str, str]) -> None:
    out = cli.tmp_path / "dbs"
    out.mkdir()
    wal = out / "koda.db"
    cli.json("export-sqlite", str(wal))
    with open(wal, "rb") as f:
        assert f.read(20)[18:20] == b"\x02\x02"  # a WAL-mode database
    before = _listing(out)
    assert sorted(before) == ["koda.db"]
    assert len(cli.json("--root", str(cli.tmp_path / "r1"), "import-sqlite", str(wal))["imported"]) == 2
    assert _listing(out) == before  # no koda.db-wal, no koda.db-shm
    # A rollback-journal database too.
    plain = cli.tmp_path / "plain"
    plain.mkdir()
    conn = sqlite3.connect(wal)
    conn.execute("VACUUM INTO ?", (str(plain / "koda.db"),))
    conn.close()
    conn = sqlite3.connect(plain / "koda.db")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = _listing(plain)
    cli.json("--root", str(cli.tmp_path / "r2"), "import-sqlite", str(plain / "koda.db"))
    assert _listing(plain) == before
    # koda running meanwhile (a -wal with committed rows not yet in the main file): they are read.
    koda = sqlite3.connect(wal, isolation_level=None)
    koda.execute("PRAGMA wal_autocheckpoint=0")
    koda.execute("INSERT INTO sessions (id, agent_name) VALUES ('live-one', 'main')")
    before = _listing(out)
    assert "koda.db-wal" in before
    imported = cli.json("--root", str(cli.tmp_path / "r3"), "import-sqlite", str(wal))["imported"]
    assert "live-one" in imported and _listing(out) == before
    koda.close()


def test_export_and_import_count_metadata_the_same_way(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    FileStore(cli.root).set_metadata(a, "model", "m1")
    db = cli.tmp_path / "k.db"
    out = cli.json("export-sqlite", str(db))
    back = cli.json("--root", str(cli.tmp_path / "other"), "import-sqlite", str(db))
    assert (out["metadata"], out["todos"]) == (back["metadata"], back["todos"]) == (1, 1)
    assert "1 metadata key)" in cli.ok("export-sqlite", str(cli.tmp_path / "k2.db"))


def test_read_commands_never_create_a_root(cli: Cli) -> None:
    assert koda_files.__version__
    cli.run("sessions", "--all", "--root", str(cli.tmp_path / "nothing"))
    assert not (cli.tmp_path / "nothing").exists()
