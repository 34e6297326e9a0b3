"""Running the `koda-files` command in tests: a real subprocess, on pipes or a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _helpers import tool_calls_json

from koda_files import FileStore, Role, TokenUsage

SCRIPT = Path(sys.executable).parent / "koda-files"  # the installed console script
COMMANDS = [
    "path", "sessions", "search", "show", "usage", "todo", "compact", "delete", "stats", "purge", "check",
    "import-sqlite", "export-sqlite", "redact", "fork",
]


def env_for(tmp_path: Path, root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env.update(
        KODA_FILES_DIR=str(root),
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
    )
    env.update(extra)
    return env


class Cli:
    def __init__(self, tmp_path: Path, root: Path) -> None:
        self.tmp_path = tmp_path
        self.root = root
        self.cwd = tmp_path / "proj"
        self.cwd.mkdir(exist_ok=True)

    def run(
        self, *args: str, input: str | None = None, script: bool = False, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "koda_files"]
        return subprocess.run(
            [*cmd, *args], capture_output=True, text=True, input=input, cwd=self.cwd,
            env=env_for(self.tmp_path, self.root, **extra), timeout=120,
        )

    def ok(self, *args: str, **kw: Any) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok("--json", *args, **kw))

    def fails(self, code: int, *args: str, **kw: Any) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == code, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr  # one clear line
        return lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, tmp_path / "root")


@pytest.fixture
def sessions(cli: Cli) -> tuple[str, str]:
    """Two sessions of the project in cli.cwd, one compacted with a todo, and one elsewhere."""
    store = FileStore(cli.root)
    a = store.create_session("main", cli.cwd)
    store.insert_message(a, Role.SYSTEM, "You are koda.")
    store.insert_message(a, Role.USER, "Which files?\nsecond line")
    store.insert_message(a, Role.ASSISTANT, "Looking.", tool_calls_json("c1"), usage=TokenUsage(100, 10))
    store.insert_message(a, Role.TOOL, "\n".join(f"file{i}.py" for i in range(20)), tool_call_id="c1")
    store.insert_message_with_agent(a, Role.ASSISTANT, "Twenty files.", None, None, TokenUsage(50, 5), "sub")
    store.set_todo(a, "- [ ] tests\n")
    store.compact_session(a, "They asked about files.", 1)
    b = store.create_session("helper", cli.tmp_path / "elsewhere")
    store.insert_message(b, Role.USER, "other project")
    return a, b


def run_on_terminal(
    cli: Cli, *args: str, stream: str = "stdout", code: int = 0, env: dict[str, str] | None = None, **extra: str
) -> bytes:
    """Run with `stream` ("stdout" or "stderr") on a pseudo-terminal; returns what it showed there.

    No pager unless `PAGER` is given (or `env`, the whole environment, leaves it out): less would
    add its own escapes to what the terminal shows.
    """
    if env is None:
        env = env_for(cli.tmp_path, cli.root, **{"PAGER": "", "TERM": "xterm", **extra})
    master, slave = pty.openpty()
    other = subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "koda_files", *args], cwd=cli.cwd, env=env,
        stdout=slave if stream == "stdout" else other, stderr=slave if stream == "stderr" else other,
    )
    os.close(slave)
    out = b""
    while select.select([master], [], [], 30)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.communicate(timeout=60)
    assert proc.returncode == code, out
    return out


