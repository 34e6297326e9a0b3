"""The `koda-files` commands on the listing and on one session: path, sessions, show, usage, todo,
compact, delete and stats. The whole-store commands are in `_admin`, search in `_search`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import KodaFilesError
from ._common import UsageError, confirm, open_store, overview, print_json, resolve, style_for_stdout

if TYPE_CHECKING:
    from ..store import FileStore

__all__ = [
    "cmd_compact",
    "cmd_delete",
    "cmd_path",
    "cmd_sessions",
    "cmd_show",
    "cmd_stats",
    "cmd_todo",
    "cmd_usage",
]


def _usage_dict(u: Any) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(u)


def cmd_path(args: argparse.Namespace) -> int:
    store = open_store(args, existing=False)  # where the store is or will be: it need not exist
    if args.json:
        print_json({"root": str(store.root)})
    else:
        print(store.root)
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    store = open_store(args)
    project = None if args.all else os.path.abspath(args.project or os.getcwd())
    overviews = store.session_overviews(project)  # from the index: no log is read
    if args.sort == "created":
        overviews.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    if args.limit:
        overviews = overviews[: args.limit]
    if args.json:
        print_json([_overview_json(r) for r in overviews])
        return 0
    from ._pager import paged
    from ._render import first_line, render_table, short_time

    if not overviews:
        where = "in the store" if args.all else "for this project (try --all)"
        print(f"no sessions {where}", file=sys.stderr)
        return 0
    table = [
        [
            r.id,
            r.agent_name,
            short_time(r.created_at),
            short_time(r.last_activity),
            str(r.message_count),
            str(r.total_tokens),
            first_line(r.title or r.first_user_message),
        ]
        for r in overviews
    ]
    columns = ["ID", "AGENT", "CREATED", "LAST ACTIVE", "MESSAGES", "TOKENS", "TITLE"]
    with paged(args):
        render_table(columns, table, sys.stdout, style_for_stdout(), numeric={4, 5})
    return 0


def _overview_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "agent_name": r.agent_name,
        "created_at": r.created_at,
        "last_activity": r.last_activity,
        "message_count": r.message_count,
        "archived_count": r.archived_count,
        "total_tokens": r.total_tokens,
        "project_root": r.project_root,
        "title": r.title or r.first_user_message,
        "mode": r.mode,
    }


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    if args.follow and args.json:
        raise UsageError("--follow prints as it goes; it does not go with --json")
    if args.raw:
        out = sys.stdout.buffer
        out.writelines(store.raw_lines(sid, archived=args.all))
        out.flush()
        return 0
    every = store.load_all_messages(sid)
    messages = every if args.all else [m for m in every if m.compacted_at is None]
    if args.json:
        from dataclasses import asdict

        print_json([{**asdict(m), "role": m.role.value} for m in messages])
        return 0
    from ._pager import paged

    hidden = len(every) - len(messages)
    if args.markdown:
        from ._markdown import render_markdown

        with paged(args):
            render_markdown(overview(store, sid), messages, sys.stdout, hidden)
        return 0
    from ._render import plural, render_messages

    style = style_for_stdout()
    with paged(args) if not args.follow else _no_pager():
        if hidden:
            print(style(f"({plural(hidden, 'archived message')} not shown; --all shows them)", "dim"))
        render_messages(messages, sys.stdout, style, args.full)
    if not args.follow:
        return 0
    from ._follow import follow

    sys.stdout.flush()
    return follow(store, sid, every, args.all, style, args.full)


@contextmanager
def _no_pager() -> Iterator[None]:
    yield


def cmd_usage(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    total = store.session_token_usage(sid)
    by_agent = store.session_usage_by_agent(sid)
    if args.json:
        agents = [{"agent": name, **_usage_dict(u)} for name, u in by_agent]
        print_json({"session_id": sid, "total": _usage_dict(total), "by_agent": agents})
        return 0
    from ._render import render_table

    headers = ["AGENT", "PROMPT", "COMPLETION", "CACHE READ", "CACHE WRITE", "THINKING", "CALLS"]

    def row(name: str, u: Any) -> list[str]:
        return [name, *(str(v) for v in _usage_dict(u).values())]

    rows = [row("total", total)] + [row(name, u) for name, u in by_agent]
    render_table(headers, rows, sys.stdout, style_for_stdout(), numeric={1, 2, 3, 4, 5, 6})
    return 0


def cmd_todo(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    if args.edit:
        _edit_todo(store, sid)
    elif args.set is not None:
        # A text file ends in a newline (git warns otherwise); --set-file keeps its bytes as they are.
        store.set_todo(sid, args.set if args.set.endswith("\n") or not args.set else args.set + "\n")
    elif args.set_file is not None:
        text = sys.stdin.read() if args.set_file == "-" else _read_text(args.set_file)
        store.set_todo(sid, text)
    else:
        todo = store.get_todo(sid)
        if args.json:
            print_json({"session_id": sid, "todo": todo})
        elif todo is None:
            print(f"session {sid} has no todo", file=sys.stderr)
        else:
            sys.stdout.write(todo if todo.endswith("\n") or not todo else todo + "\n")
    return 0


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _edit_todo(store: FileStore, sid: str) -> None:
    import shlex
    import subprocess

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    created = store.get_todo(sid) is None
    if created:
        store.set_todo(sid, "")  # made by the store, so with its permissions (0600)
    status = subprocess.run([*shlex.split(editor), str(store.todo_path(sid))]).returncode
    if created and store.get_todo(sid) == "":
        store.delete_todo(sid)  # nothing written: leave no empty todo behind
    if status != 0:
        raise KodaFilesError(f"editor {editor!r} exited with status {status}")


def cmd_compact(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    archived = store.compact_session(sid, args.summary, args.keep)
    if args.json:
        print_json({"session_id": sid, "archived": archived})
    else:
        from ._render import plural

        print(f"archived {plural(archived, 'message')} of {sid}" if archived else "nothing to compact")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    from ._render import plural

    found = store.session_overview(sid)  # None for a session without a readable metadata.json
    count = plural(found.message_count if found else 0, "message")
    if not confirm(f"delete session {sid} ({count})?", args.yes):
        print("not deleted", file=sys.stderr)
        return 1
    deleted = store.delete_session(sid)
    if args.json:
        print_json({"session_id": sid, "deleted": deleted})
    else:
        print(f"deleted {sid}" if deleted else f"{sid} was already gone")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ._render import format_bytes, plural

    store = open_store(args)
    s = store.stats()  # counts from the index; bytes of the store's own files only
    c = s.compacted
    if args.json:
        compacted = {
            "message_count": c.message_count,
            "session_count": c.session_count,
            "size_bytes": c.size_bytes,
            "oldest": c.oldest,
        }
        print_json({
            "root": str(store.root),
            "sessions": s.sessions,
            "messages": s.messages,
            "archived_messages": s.archived_messages,
            "bytes_on_disk": s.bytes_on_disk,
            "compacted": compacted,
        })
        return 0
    print(f"root            {store.root}")
    print(f"sessions        {s.sessions}")
    print(f"messages        {s.messages} ({s.archived_messages} archived)")
    print(f"on disk         {format_bytes(s.bytes_on_disk)}")
    print(
        f"compacted       {plural(c.message_count, 'message')} in {plural(c.session_count, 'session')}, "
        f"{format_bytes(c.size_bytes)} of text, oldest {c.oldest or '-'}"
    )
    return 0
