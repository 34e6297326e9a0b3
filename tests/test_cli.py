"""The `koda-files` command, run as a real subprocess through its entry points."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from _cli import COMMANDS, SCRIPT, Cli, run_on_terminal
from _helpers import append_to_log, session_dir, snapshot, todo_path

from koda_files import FileStore, Role


def test_help_of_every_command_has_an_example(cli: Cli) -> None:
    top = cli.ok("--help")
    for command in COMMANDS:
        assert command in top
        text = cli.ok(command, "--help")
        assert "example" in text and f"koda-files {command}" in text, command


def test_the_readme_documents_every_command_with_an_example() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Command line") : readme.index("## Import from and export")]
    examples = section[section.index("```sh") : section.index("```", section.index("```sh") + 5)]
    for command in COMMANDS:
        assert f"| `koda-files {command}" in section, command
        assert f"\nkoda-files {command} " in examples or f"\nkoda-files {command}\n" in examples, command


def test_version_and_path_through_the_installed_script(cli: Cli) -> None:
    assert SCRIPT.exists()
    assert cli.ok("--version", script=True).strip() == "koda-files 0.1.0"
    assert cli.ok("path", script=True).strip() == str(cli.root)
    assert cli.json("path", script=True) == {"root": str(cli.root)}
    other = cli.tmp_path / "other"
    assert cli.ok("--root", str(other), "path").strip() == str(other)
    assert cli.ok("path", "--root", str(other)).strip() == str(other)  # global options after the command too


def test_sessions_lists_newest_first_with_all_limit_and_project_filters(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    rows = cli.json("sessions")
    assert [r["id"] for r in rows] == [a]
    row = rows[0]
    assert (row["agent_name"], row["message_count"], row["total_tokens"]) == ("main", 7, 165)
    assert row["title"] == "Which files?"
    assert [r["id"] for r in cli.json("sessions", "--all")] == [b, a]  # newest first
    assert [r["id"] for r in cli.json("sessions", "--all", "--limit", "1")] == [b]
    assert [r["id"] for r in cli.json("sessions", "--project", str(cli.tmp_path / "elsewhere"))] == [b]
    table = cli.ok("sessions", "--all", script=True)
    assert "ID" in table and a in table and b in table and "Which files?" in table
    assert "\x1b[" not in table  # not a terminal: no colour


def test_sessions_show_the_title_and_mode(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    assert [(r["title"], r["mode"]) for r in cli.json("sessions")] == [("Which files?", None)]
    store = FileStore(cli.root)
    store.set_session_title(a, "Count the files\x1b[2J")
    store.set_session_mode(a, "auto-edit")
    store.set_session_mode(b, "plan")
    rows = cli.json("sessions")
    assert [(r["id"], r["title"], r["mode"]) for r in rows] == [(a, "Count the files\x1b[2J", "auto-edit")]
    every = {r["id"]: (r["title"], r["mode"]) for r in cli.json("sessions", "--all")}
    assert every == {a: ("Count the files\x1b[2J", "auto-edit"), b: ("other project", "plan")}
    table = cli.ok("sessions", "--all", script=True)
    assert "Count the files\\x1b[2J" in table and "Which files?" not in table  # escaped, never sent raw
    assert "other project" in table  # no title set: the first user message


def test_show_hides_archived_messages_unless_all_and_accepts_a_unique_prefix(
    cli: Cli, sessions: tuple[str, str],
) -> None:
    a, b = sessions
    text = cli.ok("show", a)
    assert "── summary" in text and "They asked about files." in text and "compaction note" in text
    assert "Twenty files." in text and "Which files?" not in text  # archived ones hidden
    assert "1 more" not in text
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    unique = a[: shared + 1]  # ids made in one millisecond share 13+ characters
    full = cli.ok("show", unique, "--all")  # a unique prefix works
    assert "Which files?" in full and "archived" in full
    assert '→ read_file(path="a.py")  [c1]' in full
    assert "… 14 more lines" in full  # tool output kept short
    raw = cli.ok("show", a, "--raw", "--all").splitlines()
    assert [json.loads(line)["id"] for line in raw] == [m.id for m in FileStore(cli.root).load_all_messages(a)]
    active_raw = cli.ok("show", a, "--raw").splitlines()
    assert all("compacted_at" not in json.loads(line) for line in active_raw) and len(active_raw) == 3
    messages = cli.json("show", a, "--all")
    assert len(messages) == 7 and messages[0]["role"] == "system" and messages[0]["compacted_at"]
    assert cli.ok("show", a, script=True) == text


def test_session_prefixes_unknown_and_ambiguous(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    common = next((a[:i] for i in range(len(a), 0, -1) if b.startswith(a[:i])), "")
    assert common  # UUIDv7 ids made together share their time prefix
    line = cli.fails(1, "show", common)
    assert "ambiguous" in line and a in line and b in line
    assert "no session matches 'zzz'" in cli.fails(1, "usage", "zzz")
    assert "invalid session id" in cli.fails(1, "show", "../etc")
    assert cli.json("usage", a[: len(common) + 1])["session_id"] == a


def test_usage_totals_tokens_and_splits_them_by_agent(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    data = cli.json("usage", a)
    assert data["total"]["prompt_tokens"] == 150 and data["total"]["api_calls"] == 2
    assert [(r["agent"], r["prompt_tokens"]) for r in data["by_agent"]] == [("main", 100), ("sub", 50)]
    text = cli.ok("usage", a, script=True)
    assert "total" in text and "sub" in text and "150" in text


def test_todo_prints_and_sets_from_an_option_a_file_or_stdin(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    assert cli.ok("todo", a) == "- [ ] tests\n"
    assert cli.json("todo", b) == {"session_id": b, "todo": None}
    cli.ok("todo", b, "--set", "- [ ] one")
    assert FileStore(cli.root).get_todo(b) == "- [ ] one\n"  # a text file ends in a newline
    source = cli.tmp_path / "todo.txt"
    source.write_text("- [x] from a file\n", encoding="utf-8")
    cli.ok("todo", b, "--set-file", str(source), script=True)
    assert FileStore(cli.root).get_todo(b) == "- [x] from a file\n"
    cli.ok("todo", b, "--set-file", "-", input="from stdin\n")
    assert FileStore(cli.root).get_todo(b) == "from stdin\n"
    assert cli.run("todo", a, "--set", "x", "--edit").returncode == 2


def test_todo_edit_runs_the_editor_on_todo_md(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    editor = cli.tmp_path / "editor.py"
    editor.write_text(
        "import sys\np = sys.argv[1]\ntext = open(p).read()\n"
        "open(p, 'w').write(text + '- [ ] added by the editor\\n')\n"
    )
    cli.ok("todo", a, "--edit", EDITOR=f"{sys.executable} {editor}", VISUAL="")
    assert FileStore(cli.root).get_todo(a) == "- [ ] tests\n- [ ] added by the editor\n"
    cli.ok("todo", b, "--edit", VISUAL=f"{sys.executable} {editor}")  # a session without todo.md yet
    path = todo_path(cli.root, b)
    assert path.read_text() == "- [ ] added by the editor\n" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert "exited with status 3" in cli.fails(1, "todo", a, "--edit", EDITOR=f"{sys.executable} -c 'exit(3)'")


def test_compact_archives_all_but_keep_and_requires_a_summary(cli: Cli, sessions: tuple[str, str]) -> None:
    _, b = sessions
    store = FileStore(cli.root)
    for i in range(5):
        store.insert_message(b, Role.USER, f"m{i}")
    assert cli.json("compact", b, "--summary", "short", "--keep", "2") == {"session_id": b, "archived": 4}
    context = store.load_context(b)
    assert [m.content for m in context][:1] == ["short"] and len(context) == 4
    assert cli.ok("compact", b, "--summary", "again", "--keep", "10", script=True).strip() == "nothing to compact"
    assert cli.run("compact", b).returncode == 2  # --summary is required
    assert cli.run("compact", b, "--summary", "x", "--keep", "-1").returncode == 2


def test_delete_needs_yes_off_a_terminal_and_removes_the_session_directory(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    assert "--yes" in cli.fails(2, "delete", b)  # stdin is not a terminal: never deletes unasked
    assert session_dir(cli.root, b).is_dir()
    assert cli.json("delete", b, "--yes") == {"session_id": b, "deleted": True}
    assert not session_dir(cli.root, b).exists()
    cli.ok("delete", a[:12], "--yes", script=True)
    assert not session_dir(cli.root, a).exists()
    cli.fails(1, "delete", a, "--yes")


def test_stats_counts_sessions_messages_and_archived_messages(cli: Cli, sessions: tuple[str, str]) -> None:
    data = cli.json("stats")
    assert (data["sessions"], data["messages"], data["archived_messages"]) == (2, 8, 4)
    assert data["bytes_on_disk"] > 0
    assert data["compacted"]["message_count"] == 4 and data["compacted"]["session_count"] == 1
    assert "sessions" in cli.ok("stats", script=True)


def test_purge_dry_run_and_unconfirmed_purge_change_nothing(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    before = snapshot(cli.root)
    dry = cli.json("purge", "--older-than", "0", "--dry-run")
    assert (dry["messages"], dry["sessions"], dry["deleted"]) == (4, [a], None) and dry["bytes"] > 0
    assert "would delete 4 archived messages" in cli.ok("purge", "--older-than", "0", "--dry-run", script=True)
    assert cli.json("purge", "--older-than", "30", "--yes")["messages"] == 0  # none that old
    assert "--yes" in cli.fails(2, "purge", "--older-than", "0")
    assert snapshot(cli.root) == before  # nothing changed
    assert cli.json("purge", "--older-than", "0", "--yes")["deleted"] == 4
    assert len(FileStore(cli.root).load_all_messages(a)) == 3
    assert cli.run("purge").returncode == 2


def test_check_exits_1_naming_the_session_with_a_bad_line(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    data = cli.json("check")
    assert data["ok"] is True and data["sessions"] == 2 and data["problems"] == []
    assert "ok" in cli.ok("check", script=True)
    append_to_log(cli.root, a, b"this is not json\n")
    r = cli.run("--json", "check")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False and any(p["session_id"] == a for p in report["problems"])


def test_export_and_import_sqlite(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    db = cli.tmp_path / "koda.db"
    out = cli.json("export-sqlite", str(db))
    assert (out["sessions"], out["messages"], out["todos"]) == (2, 8, 1)
    assert "refusing to overwrite" in cli.fails(1, "export-sqlite", str(db))
    other = cli.tmp_path / "other-root"
    data = cli.json("--root", str(other), "import-sqlite", str(db))
    assert sorted(data["imported"]) == sorted([a, b]) and data["messages"] == 8 and data["todos"] == 1
    again = cli.ok("--root", str(other), "import-sqlite", str(db), script=True)
    assert "skipped 2 sessions already present" in again
    replaced = cli.json("--root", str(other), "import-sqlite", str(db), "--replace")
    assert sorted(replaced["replaced"]) == sorted([a, b])
    # The default database is koda's, under $XDG_CONFIG_HOME.
    koda_db = cli.tmp_path / "config" / "koda" / "db" / "koda.db"
    koda_db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("VACUUM INTO ?", (str(koda_db),))
    conn.close()
    third = cli.json("--root", str(cli.tmp_path / "third"), "import-sqlite")
    assert third["db"] == str(koda_db) and len(third["imported"]) == 2
    line = cli.fails(1, "import-sqlite", str(cli.tmp_path / "missing.db"))
    assert "missing.db" in line


def test_usage_errors_exit_2_with_one_line(cli: Cli) -> None:
    assert "unknown command 'frobnicate' (see" in cli.fails(2, "frobnicate")
    cli.fails(2, "show")
    assert "invalid count" in cli.fails(2, "sessions", "--limit", "many")
    assert cli.run().returncode == 2


def test_debug_shows_the_traceback(cli: Cli) -> None:
    r = cli.run("--debug", "show", "zzz")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_colour_only_on_a_terminal_and_never_with_no_color(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    coloured = run_on_terminal(cli, "show", a)
    assert b"\x1b[" in coloured and b"Twenty files." in coloured
    plain = run_on_terminal(cli, "show", a, NO_COLOR="1")
    assert b"\x1b[" not in plain and b"Twenty files." in plain


def test_progress_goes_to_stderr_only_when_it_is_a_terminal(cli: Cli, sessions: tuple[str, str]) -> None:
    shown = run_on_terminal(cli, "export-sqlite", str(cli.tmp_path / "exported.db"), stream="stderr")
    assert b"exporting sessions" in shown and b"2/2" in shown
    quiet = cli.run("export-sqlite", str(cli.tmp_path / "again.db"))  # stderr is a pipe here
    assert quiet.returncode == 0 and quiet.stderr == ""
