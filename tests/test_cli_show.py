"""`show` for people: follow a live session, Markdown to share, and terminal manners (colour, pager, pipes)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from _cli import SCRIPT, Cli, env_for, run_on_terminal

from koda_files import FileStore, Role, TokenUsage

WRITER = """
import sys
from koda_files import FileStore, Role
store, sid, what = FileStore(sys.argv[1]), sys.argv[2], sys.argv[3]
if what == "append":
    store.insert_message(sid, Role.ASSISTANT, sys.argv[4])
elif what == "compact":
    store.compact_session(sid, sys.argv[4], 1)
elif what == "edit":  # a person rewrites the file with an editor: a new file saved over the old
    import os
    path = store.root / "sessions" / sid / "messages.jsonl"
    text = path.read_text().replace(sys.argv[4], sys.argv[5])
    tmp = path.with_name("edited.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
"""


def _write(cli: Cli, sid: str, *args: str) -> None:
    """Change the session from another process, as koda (or a person) would."""
    subprocess.run([sys.executable, "-c", WRITER, str(cli.root), sid, *args], check=True, timeout=60)


class Follower:
    def __init__(self, cli: Cli, sid: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), "show", sid, "--follow"], cwd=cli.cwd, env=env_for(cli.tmp_path, cli.root),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """Everything printed from now until `text` shows up."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while text not in self.seen[start:]:
            try:
                self.seen += self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{text!r} not shown; got {self.seen[start:]!r}") from None
        return self.seen[start:]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_follow_prints_what_another_process_writes_without_a_busy_loop(cli: Cli) -> None:
    store = FileStore(cli.root)
    sid = store.create_session("main", cli.cwd)
    store.insert_message(sid, Role.USER, "first question")
    f = Follower(cli, sid)
    try:
        f.wait_for("first question")
        _write(cli, sid, "append", "an answer from koda")
        assert "── assistant" in f.wait_for("an answer from koda")
        idle_from = f.cpu_seconds()
        time.sleep(1.0)
        assert f.cpu_seconds() - idle_from <= 0.03  # polling sleeps: no busy loop
        _write(cli, sid, "append", "second answer")
        f.wait_for("second answer")
        _write(cli, sid, "compact", "SUMMARY of the talk")
        shown = f.wait_for("SUMMARY of the talk")
        assert "the log was rewritten: 2 messages archived" in shown and "── summary" in shown
        shown = f.wait_for("compaction note")
        _write(cli, sid, "edit", "second answer", "second answer, edited by hand")
        shown = f.wait_for("edited by hand")
        assert "1 edited" in shown and "edited #" in shown
        _write(cli, sid, "append", "after the edit")
        assert "rewritten" not in f.wait_for("after the edit")
        f.proc.send_signal(signal.SIGINT)
        assert f.proc.wait(timeout=20) == 0  # Ctrl-C is the normal way out
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()


def test_follow_ends_when_the_session_is_deleted(cli: Cli) -> None:
    store = FileStore(cli.root)
    sid = store.create_session("main", cli.cwd)
    store.insert_message(sid, Role.USER, "short-lived")
    assert "does not go with --json" in cli.fails(2, "--json", "show", sid[:8], "--follow")
    f = Follower(cli, sid)
    try:
        f.wait_for("short-lived")
        store.delete_session(sid)
        assert f.proc.wait(timeout=20) == 1
        assert f.proc.stderr is not None and "was deleted" in f.proc.stderr.read()
    finally:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()


def test_markdown_transcript(cli: Cli, sessions: tuple[str, str]) -> None:
    a, b = sessions
    store = FileStore(cli.root)
    store.insert_message(a, Role.ASSISTANT, "Code:\n```py\nx = 1\n```", usage=TokenUsage(3, 4, 5))
    store.insert_message(a, Role.ASSISTANT, None, "grep it -- not JSON")
    md = cli.ok("show", a, "--markdown")
    assert md.startswith("# Which files?\n") and f"session `{a}`" in md
    assert "*4 archived messages not included (--all includes them).*" in md
    assert "## Compaction summary" in md and "compacted into this summary" in md and "They asked about files." in md
    assert "## Assistant · sub" in md and "tokens: 50 prompt, 5 completion" in md
    assert "tokens: 3 prompt, 4 completion, 5 cache read" in md
    assert "Code:\n```py\nx = 1\n```" in md  # the text itself is Markdown
    assert "<summary>Tool calls (not JSON)</summary>\n\n```\ngrep it -- not JSON\n```" in md
    assert "Which files?\nsecond line" not in md
    full = cli.ok("show", a, "--markdown", "--all")
    assert "## User (archived)" in full and "Which files?\nsecond line" in full
    assert '<summary>Tool call <code>read_file</code> (c1)</summary>\n\n```json\n{\n  "path": "a.py"\n}\n```' in full
    result = "<summary>Result of <code>c1</code> · 20 lines</summary>\n\n```\nfile0.py\n"
    assert result in full and "file19.py\n```\n\n</details>" in full
    store.insert_message(b, Role.TOOL, "a fence inside: ```` ok", tool_call_id="x")
    assert "`````\na fence inside: ```` ok\n`````" in cli.ok("show", b, "--markdown")  # cannot break out


def test_full_shows_whole_tool_output(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    cut = cli.ok("show", a, "--all")
    assert "file5.py" in cut and "file6.py" not in cut and "… 14 more lines (--full shows them)" in cut
    whole = cli.ok("show", a, "--all", "--full")
    assert "file19.py" in whole and "more lines" not in whole


def test_colour_option(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    assert "\x1b[" in cli.ok("show", a, "--color", "always")  # even into a pipe
    assert "\x1b[" in cli.ok("--color=always", "show", a, NO_COLOR="1")  # asked for: NO_COLOR yields
    assert b"\x1b[" not in run_on_terminal(cli, "show", a, "--color", "never")
    assert b"\x1b[" not in run_on_terminal(cli, "show", a, NO_COLOR="1")
    assert b"\x1b[" in run_on_terminal(cli, "sessions")


def _recording_pager(cli: Cli) -> tuple[str, Path]:
    record = cli.tmp_path / "paged.txt"
    script = cli.tmp_path / "pager.py"
    code = f"import sys\nopen({str(record)!r}, 'a').write(' '.join(sys.argv[1:]) + '|' + sys.stdin.read())\n"
    script.write_text(code)
    return f"{sys.executable} {script}", record


def test_long_output_goes_through_the_pager_on_a_terminal(cli: Cli, sessions: tuple[str, str]) -> None:
    a, _ = sessions
    pager, record = _recording_pager(cli)
    shown = run_on_terminal(cli, "show", a, PAGER=pager)
    assert "Twenty files." in record.read_text() and b"Twenty files." not in shown
    record.unlink()
    assert b"Twenty files." in run_on_terminal(cli, "show", a, "--no-pager", PAGER=pager) and not record.exists()
    assert b"Twenty files." in run_on_terminal(cli, "--json", "show", a, PAGER=pager) and not record.exists()
    cli.ok("show", a, PAGER=pager)  # not a terminal: no pager
    assert not record.exists()
    # No $PAGER: `less -FRX` (a stand-in named less records how it was called).
    bin_dir = cli.tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "less").write_text(f"#!/bin/sh\nexec {pager} \"$@\"\n")
    (bin_dir / "less").chmod(0o755)
    env_path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = env_for(cli.tmp_path, cli.root, PATH=env_path)
    env.pop("PAGER", None)
    run_on_terminal(cli, "sessions", "--all", env=env)
    called = record.read_text()
    assert called.startswith("-FRX|") and "\x1b[1mID" in called  # coloured: less -R shows it


def test_a_closed_pipe_ends_quietly(cli: Cli) -> None:
    store = FileStore(cli.root)
    sid = store.create_session("main", cli.cwd)
    for i in range(200):
        store.insert_message(sid, Role.USER, f"line {i} " + "x" * 2000)
    r = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {SCRIPT} show {sid} | head -1"], capture_output=True, text=True,
        env=env_for(cli.tmp_path, cli.root), timeout=60,
    )
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("── user")


def test_plurals_suggestions_and_foreign_markers(cli: Cli) -> None:
    store = FileStore(cli.root)
    sid = store.create_session("main", cli.cwd)
    store.insert_message(sid, Role.USER, "one")
    store.insert_message(sid, Role.USER, "two")
    assert cli.ok("compact", sid, "--summary", "s", "--keep", "1").strip() == f"archived 1 message of {sid}"
    assert cli.ok("check").strip() == "checked 1 session: ok"
    assert "(1 archived message not shown" in cli.ok("show", sid)
    assert "did you mean 'sessions'?" in cli.fails(2, "sesions")
    assert "did you mean 'search'?" in cli.fails(2, "serach", "x")
    (cli.root / "koda-files.json").write_text(json.dumps({"format": "other-tool", "layout": 3}))
    line = cli.fails(1, "sessions")
    assert "a marker of another format ('other-tool')" in line and "newer" not in line
