"""Every shell recipe of the README (jq, grep, rg, git, koda-files) runs and gives the documented answer.

The recipes are read from the README itself, so a recipe added there without a check here fails.
The store holds what trips naive recipes: archived messages, completion annotations, a
`tool_calls` that is not JSON, and a line broken by hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from _helpers import append_to_log, messages_path, sessions_dir, tool_calls_json

from koda_files import FileStore, Role, TokenUsage

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = str(Path(sys.executable).parent)


def recipes() -> list[tuple[str, list[str]]]:
    """(comment, commands) of each recipe in the "Working with the files" block of the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Working with the files") :]
    block = section[section.index("```sh\n") + 6 : section.index("\n```", section.index("```sh"))]
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("# "):
            out.append((line[2:], []))
        elif line.strip():
            out[-1][1].append(line)
    return out


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "store")
    project = tmp_path / "proj"
    a = store.create_session("main", project)
    store.insert_message(a, Role.SYSTEM, "You are koda.")
    store.insert_message(a, Role.USER, "Fix test_add please.\nIt fails.")
    call = store.insert_message(a, Role.ASSISTANT, "Looking.", tool_calls_json("c1"), usage=TokenUsage(100, 10))
    store.mark_message_complete(call)  # a completion annotation line
    store.insert_message(a, Role.TOOL, "def test_add(): ...", tool_call_id="c1")
    store.insert_message(a, Role.ASSISTANT, "Fixed.", usage=TokenUsage(50, 5))
    store.compact_session(a, "We fixed a test.", 1)  # the mentions of the test are archived now
    store.insert_message(a, Role.USER, "thanks")
    store.set_todo(a, "- [ ] verify\n- [x] fix\n")
    b = store.create_session("helper", project)
    store.insert_message(b, Role.USER, "hello")
    store.insert_message(b, Role.ASSISTANT, "", "grep(pattern) -- not JSON", usage=TokenUsage(7, 1))
    both = json.dumps([json.loads(tool_calls_json("c2"))[0], {"id": "c3", "function": {"name": "grep"}}])
    store.insert_message(b, Role.ASSISTANT, None, both, usage=TokenUsage(9, 2))
    append_to_log(store.root, b, b'{"id": 500, "role": "user", "content": "test_add, torn by hand\n')
    store.insert_message(b, Role.ASSISTANT, "after the broken line")
    store.create_session("empty", tmp_path / "other")
    # A session compacted by the first layout: its archived lines carry their own compacted_at.
    c = store.create_session("old", project)
    messages_path(store.root, c).write_bytes(LAYOUT_1_LOG)
    return store


_ARCHIVED_AT = '"compacted_at":"2026-01-02T00:00:00.000000Z"'
LAYOUT_1_LOG = "".join(
    line + "\n"
    for line in (
        '{"id":900,"role":"user","content":"an old question","created_at":"2026-01-01T00:00:00Z",' + _ARCHIVED_AT + "}",
        '{"id":901,"role":"assistant","content":"old answer","created_at":"2026-01-01T00:00:01Z",' + _ARCHIVED_AT + "}",
        '{"id":902,"role":"system","content":"Old summary.","created_at":"2026-01-02T00:00:00Z"}',
        '{"id":903,"role":"assistant","content":"[Context compacted] Continue.","created_at":"2026-01-02T00:00:00Z"}',
        '{"id":904,"role":"user","content":"a newer question","created_at":"2026-01-03T00:00:00Z"}',
    )
).encode()


def _run(store: FileStore, command: str) -> str:
    env = dict(os.environ)
    env.update(
        KODA_FILES_DIR=str(store.root), PATH=BIN + os.pathsep + env.get("PATH", ""),
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_GLOBAL=os.devnull,
    )
    r = subprocess.run(
        ["bash", "-c", "set -eo pipefail; " + command], cwd=store.root, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert r.returncode == 0, (command, r.stdout, r.stderr)
    return r.stdout


def _ids(store: FileStore) -> list[str]:
    return store.session_ids()  # the shell's sessions/* glob order


def check_questions(store: FileStore, out: str) -> None:
    asked = [m.content for s in _ids(store) for m in store.load_all_messages(s) if m.role is Role.USER]
    assert out == "".join(f"{c}\n" for c in asked if c is not None)
    assert "Fix test_add please." in out  # archived ones included


def check_tokens(store: FileStore, out: str) -> None:
    assert int(out) == sum(m.prompt_tokens or 0 for s in _ids(store) for m in store.load_all_messages(s))
    assert int(out) == 166


def check_tools(store: FileStore, out: str) -> None:
    counted = Counter({name: int(n) for n, name in (line.split() for line in out.splitlines())})
    assert counted == Counter({"read_file": 2, "grep": 1})


def check_active(store: FileStore, out: str) -> None:
    got = [json.loads(line) for line in out.splitlines()]
    want = [
        {"id": m.id, "role": m.role.value, "content": m.content}
        for s in _ids(store) for m in store.load_all_messages(s) if m.compacted_at is None
    ]
    assert got == want and all(r["role"] for r in got)


def check_archived(store: FileStore, out: str) -> None:
    got = [json.loads(line) for line in out.splitlines()]
    want = [
        {"id": m.id, "role": m.role.value, "content": m.content}
        for s in _ids(store) for m in store.load_all_messages(s) if m.compacted_at is not None
    ]
    assert got == want and {r["id"] for r in got} >= {900, 901}  # both layouts
    assert any(r["content"] == "Fix test_add please.\nIt fails." for r in got)


def check_shown(store: FileStore, out: str) -> None:
    assert "Fix test_add please." in out and "archived" in out  # the archived mention is shown
    assert "after the broken line" in out and out.count("── summary") == 1


def check_rg(store: FileStore, out: str) -> None:
    got = dict(line.rsplit(":", 1) for line in out.splitlines())
    want = {}
    for path in sorted(sessions_dir(store.root).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            n = sum(b"test_add" in line for line in path.read_bytes().splitlines())
            if n:
                want[str(path.relative_to(store.root))] = str(n)
    assert got == want and len(want) == 2


def check_search(store: FileStore, out: str) -> None:
    heads = [line.split()[:2] for line in out.splitlines() if not line.startswith("  ")]
    hits = store.search("test_add", tools=True, archived=True)
    assert heads == [[h.session_id, f"#{h.message_id}"] for h in hits] and len(heads) == 2


def check_todos(store: FileStore, out: str) -> None:
    lines = out.splitlines()
    ids = _ids(store)
    assert lines[0] == f"sessions/{ids[0]}/todo.md"
    rows = sorted(store.session_overviews(), key=lambda o: o.id)
    assert lines[1:] == [f"{o.id}  {o.created_at}  {o.project_root or '-'}" for o in rows]


def check_git(store: FileStore, out: str) -> None:
    tracked = _run(store, "git ls-files").split()
    # The history is tracked, the id counter and the .gitignore included; derived files are not.
    assert ".ids" in tracked and ".gitignore" in tracked and "koda-files.json" in tracked
    assert not [p for p in tracked if p.split("/")[-1] in (".index", ".lock", ".access") or p.endswith(".tmp")]
    sid = _ids(store)[0]
    _run(store, f"koda-files todo {sid} --set '- [ ] docs'")
    store.insert_message(sid, Role.USER, "next session")
    diff = _run(store, "git diff")
    assert "No newline at end of file" not in diff and "+- [ ] docs" in diff


CHECKS: dict[str, Callable[[FileStore, str], None]] = {
    "What did I ask": check_questions,
    "Total prompt tokens": check_tokens,
    "Which tools were called": check_tools,
    "The active messages": check_active,
    "Everything archived": check_archived,
    "Sessions that mention a word": check_shown,
    "How many lines": check_rg,
    "Or let koda-files find it": check_search,
    "Todos with open items": check_todos,
    "Keep the history in git": check_git,
}


def test_every_recipe_has_a_check() -> None:
    comments = [c for c, _ in recipes()]
    assert sorted(next(k for k in CHECKS if c.startswith(k)) for c in comments) == sorted(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_recipe_runs_and_its_output_passes_its_check(store: FileStore, name: str) -> None:
    assert shutil.which("jq") and shutil.which("rg") and shutil.which("git"), "jq, rg and git are needed"
    commands = next(cmds for c, cmds in recipes() if c.startswith(name))
    if name == "Keep the history in git":
        CHECKS[name](store, _run(store, commands[0]))  # then the next session changes the store
        stat = _run(store, commands[1])
        assert "todo.md" in stat and "messages.jsonl" in stat
        return
    out = "".join(_run(store, re.sub(r"\s+$", "", cmd)) for cmd in commands)
    CHECKS[name](store, out)
