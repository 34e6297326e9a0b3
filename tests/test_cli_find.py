"""Finding sessions from the shell: `search`, `latest`, last activity, and listing from the index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _cli import Cli, env_for, run_on_terminal
from _helpers import append_to_log, messages_path, tool_calls_json

from koda_files import FileStore, Role


def _two_sessions(cli: Cli) -> tuple[str, str]:
    """An older session with archived messages, a hand-written escaped line and a broken line; a newer one."""
    store = FileStore(cli.root)
    old = store.create_session("main", cli.cwd)
    store.insert_message(old, Role.USER, "where is the needle?\nsecond line")
    store.insert_message(old, Role.ASSISTANT, "Looking.", tool_calls_json("c1"))
    store.insert_message(old, Role.TOOL, "a.py: needle = 1", tool_call_id="c1")
    store.compact_session(old, "Found the needle in a.py.", 0)
    append_to_log(cli.root, old, b'{"id":900,"role":"user","content":"caf\\u00e9 needle \\"quoted\\""}\n')
    append_to_log(cli.root, old, b'{"id": 901, "role": "user", "content": "needle in a broken line\n')
    store.insert_message(old, Role.ASSISTANT, "no match here")
    time.sleep(0.02)
    new = store.create_session("helper", cli.tmp_path / "elsewhere")
    store.insert_message(new, Role.USER, "another needle, another project")
    store.insert_message(new, Role.ASSISTANT, "A regex: ne+dle")
    return old, new


def test_search_finds_text_newest_first_and_skips_what_is_not_a_message(cli: Cli) -> None:
    old, new = _two_sessions(cli)
    hits = cli.json("search", "needle")
    first_new = FileStore(cli.root).load_all_messages(new)[0].id
    assert [(h["session_id"], h["message_id"], h["role"]) for h in hits] == [
        (new, first_new, "user"),  # the newer session first
        (old, 900, "user"),  # a line written by hand with \u escapes is found too
        (old, 4, "system"),  # the compaction summary; archived messages stay out
    ]
    assert hits[1]["lines"] == ['café needle "quoted"'] and hits[1]["archived"] is False
    # --all adds archived messages; --tools adds tool calls and results.
    every = [(h["message_id"], h["archived"]) for h in cli.json("search", "needle", "--all")]
    assert (1, True) in every and (3, True) not in every
    assert (3, True) in [(h["message_id"], h["archived"]) for h in cli.json("search", "needle", "--all", "--tools")]
    assert [h["field"] for h in cli.json("search", "read_file", "--all", "--tools")] == ["tool_calls"]
    assert [h["lines"] for h in cli.json("search", "needle?", "--all")] == [["where is the needle?"]]
    assert cli.json("search", '"quoted"')[0]["message_id"] == 900  # a quote is escaped on disk
    assert [h["message_id"] for h in cli.json("search", "café")] == [900]  # written as \u00e9 there


def test_search_filters(cli: Cli) -> None:
    old, _ = _two_sessions(cli)
    assert {h["role"] for h in cli.json("search", "needle", "--all", "--role", "user")} == {"user"}
    assert [h["session_id"] for h in cli.json("search", "needle", "--project", str(cli.cwd))] == [old, old]
    assert len(cli.json("search", "needle", "--limit", "1")) == 1
    assert [h["lines"] for h in cli.json("search", r"ne+dle\?", "--regex", "--all")] == [["where is the needle?"]]
    none = cli.run("--json", "search", "needle", "--since", "2999-01-01")
    assert none.returncode == 1 and json.loads(none.stdout) == []  # exit 1 when nothing matches, as grep
    recent = [h["message_id"] for h in cli.json("search", "needle", "--since", "1h")]
    assert len(recent) == 2 and 900 not in recent  # the hand-written line has no time: not "since" anything
    assert "bad regular expression" in cli.fails(1, "search", "(", "--regex")
    assert "not a date" in cli.fails(1, "search", "x", "--since", "yesterday-ish")
    r = cli.run("search", "no such text anywhere")
    assert r.returncode == 1 and r.stdout == "" and r.stderr == "no matches\n"


def test_search_prints_session_message_role_time_and_the_line(cli: Cli) -> None:
    old, _ = _two_sessions(cli)
    text = cli.ok("search", "second", "--all", script=True)
    head, line = text.splitlines()
    assert head.startswith(f"{old}  #1  user  ") and head.endswith("archived")
    assert line == "  second line"
    shown = run_on_terminal(cli, "search", "needle", "--color", "always", "--no-pager")
    assert b"\x1b[1;31mneedle\x1b[0m" in shown  # the match is highlighted


def test_search_shows_progress_on_a_terminal(cli: Cli) -> None:
    _two_sessions(cli)
    shown = run_on_terminal(cli, "search", "no such text", stream="stderr", code=1)
    assert b"searching sessions 2/2" in shown and b"no matches" in shown
    assert cli.run("search", "needle").stderr == ""  # not a terminal: no progress


def test_latest_names_the_session_with_the_last_activity(cli: Cli) -> None:
    old, new = _two_sessions(cli)
    assert cli.json("usage", "latest")["session_id"] == new
    assert cli.json("usage", "latest~1")["session_id"] == old
    FileStore(cli.root).insert_message(old, Role.USER, "back to the old one")
    assert cli.json("todo", "latest")["session_id"] == old
    assert cli.json("show", "latest~1")[-1]["content"] == "A regex: ne+dle"
    assert "the store has 2 sessions" in cli.fails(1, "show", "latest~2")


def test_sessions_show_last_activity_and_sort(cli: Cli) -> None:
    old, new = _two_sessions(cli)
    time.sleep(0.05)  # file times come from a coarse clock
    FileStore(cli.root).load_context(old)  # a resume counts as activity
    rows = cli.json("sessions", "--all")
    assert [r["id"] for r in rows] == [old, new]
    assert rows[0]["last_activity"] > rows[1]["last_activity"] >= rows[1]["created_at"]
    assert [r["id"] for r in cli.json("sessions", "--all", "--sort", "created")] == [new, old]
    table = cli.ok("sessions", "--all")
    assert "LAST ACTIVE" in table.splitlines()[0]


def test_sessions_answer_from_the_index_without_reading_logs(cli: Cli) -> None:
    old, _ = _two_sessions(cli)
    before = {r["id"]: r for r in cli.json("sessions", "--all")}  # builds the index
    log = messages_path(cli.root, old)
    st = log.stat()
    with open(log, "r+b") as f:  # same inode, size and mtime: only a reader of the log would notice
        f.write(b"x" * st.st_size)
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = {r["id"]: r for r in cli.json("sessions", "--all")}
    assert after == before and after[old]["message_count"] == 7
    assert cli.json("stats")["messages"] == sum(r["message_count"] for r in before.values())


def test_stats_count_only_the_stores_own_files(cli: Cli) -> None:
    _two_sessions(cli)
    size = cli.json("stats")["bytes_on_disk"]
    assert size > 0
    (cli.root / ".git").mkdir()
    (cli.root / ".git" / "pack").write_bytes(b"x" * 100_000)
    (cli.root / "notes.txt").write_bytes(b"y" * 1000)
    assert cli.json("stats")["bytes_on_disk"] == size
    text = cli.ok("stats")
    assert "in 1 session," in text and "1 sessions" not in text  # plurals


def _older(cli: Cli, sid: str, seconds: int = 100) -> None:
    """Make a session's last activity `seconds` earlier, so the order of a search is certain."""
    log = messages_path(cli.root, sid)
    when = log.stat().st_mtime_ns - seconds * 1_000_000_000
    os.utime(log, ns=(when, when))


def test_search_misses_nothing_where_the_patterns_rarest_byte_is_common(cli: Cli) -> None:
    store = FileStore(cli.root)
    old = store.create_session("main", cli.cwd)
    ids = [store.insert_message(old, Role.USER, "a quokka first")]
    ids.append(store.insert_message(old, Role.USER, "then qquokka"))  # a false start right before a match
    store.insert_message(old, Role.ASSISTANT, "q" * 20_000)  # so many false starts that a plain find takes over
    ids.append(store.insert_message(old, Role.USER, "and a quokka last"))
    _older(cli, old)
    new = store.create_session("main", cli.cwd)  # read first: in its log, "q" is the rarest byte of "quokka"
    first = store.insert_message(new, Role.USER, "one quokka here")
    hits = cli.json("search", "quokka")
    assert [(h["session_id"], h["message_id"]) for h in hits] == [(new, first)] + [(old, i) for i in reversed(ids)]


def test_search_never_reports_a_torn_last_line_after_reading_a_longer_log(cli: Cli) -> None:
    store = FileStore(cli.root)
    whole, torn = store.create_session("main", cli.cwd), store.create_session("main", cli.cwd)
    pad = b'{"id":1,"role":"user","content":"padding"}\n'
    line = b'{"id":7,"role":"user","content":"the walrus is here"}'
    messages_path(cli.root, whole).write_bytes(pad + line + b"\n")
    messages_path(cli.root, torn).write_bytes(pad + line[:-3])  # a writer died mid-line: the same bytes, minus its end
    _older(cli, torn)
    assert [(h["session_id"], h["message_id"]) for h in cli.json("search", "walrus")] == [(whole, 7)]


def test_search_reads_a_log_too_large_to_copy(cli: Cli) -> None:
    sid = FileStore(cli.root).create_session("main", cli.cwd)
    filler = "filler " * 150_000  # ~1 MB a line, 70 lines: more than is copied into a buffer (64 MiB)
    lines = [json.dumps({"id": i, "role": "user", "content": filler}).encode() for i in range(2, 70)]
    first = json.dumps({"id": 1, "role": "user", "content": "an ibex"}).encode()
    last = json.dumps({"id": 70, "role": "assistant", "content": filler + "another ibex"}).encode()
    torn = json.dumps({"id": 71, "role": "user", "content": "a torn ibex"}).encode()[:-2]
    messages_path(cli.root, sid).write_bytes(b"\n".join([first, *lines, last, torn]))
    assert messages_path(cli.root, sid).stat().st_size > 64 << 20
    assert [h["message_id"] for h in cli.json("search", "ibex")] == [70, 1]


def test_a_search_does_not_import_what_only_writers_need(cli: Cli) -> None:
    """Start-up is part of a search's time: lock and data-dir helpers wait until someone needs them."""
    _two_sessions(cli)
    script = (
        "import contextlib, io, sys\n"
        "from koda_files.cli._main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['search', 'needle', '--all', '--tools'])\n"
        "print(sorted(m for m in ('filelock', 'platformdirs') if m in sys.modules))\n"
    )
    env = env_for(cli.tmp_path, cli.root)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stderr
