"""`koda-files`: look at and manage a koda-files store from the shell (also `python -m koda_files`).

A thin layer over the public API. Errors are one line on stderr and exit status 1 (2 for bad
usage); `--debug` shows the traceback instead. `--json` prints machine-readable data on stdout.
This module has the entry point, the helpers every command uses and the commands on one session
or on the listing; the whole-store commands (purge, check, import and export) are in `cli_admin`,
the argument parser in `cli_args`, and the output formatting in `cli_render`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .store import FileStore

__all__ = ["main"]

PROG = "koda-files"


class UsageError(Exception):
    """Bad usage found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: "koda-files show: error: ... (see --help)".
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ── helpers ──


def open_store(args: argparse.Namespace) -> FileStore:
    from .store import FileStore

    return FileStore(args.root)


def session_dirs(store: FileStore) -> list[str]:
    from .layout import SESSIONS

    try:
        entries = list(os.scandir(store.root / SESSIONS))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))


def resolve(store: FileStore, text: str) -> str:
    """A session id from the id itself or a unique prefix of it; unknown or ambiguous is an error."""
    from .errors import KodaFilesError
    from .layout import validate_session_id

    validate_session_id(text)
    ids = session_dirs(store)
    if text in ids:
        return text
    matches = [sid for sid in ids if sid.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise KodaFilesError(f"no session matches {text!r} in {store.root}")
    shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
    raise KodaFilesError(f"session prefix {text!r} is ambiguous: {len(matches)} sessions match ({shown})")


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation: add --yes (stdin is not a terminal)")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _title(messages: list[Any]) -> str:
    """The title of a session without one set (`set_session_title`): its first user message."""
    from .cli_render import first_line

    return next((first_line(m.content) for m in messages if m.role.value == "user" and m.content), "")


def _text(value: object) -> str | None:
    """A `metadata.json` value as the store reads it: a string, else none."""
    return value if isinstance(value, str) else None


def _usage_dict(u: Any) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(u)


# ── commands ──


def cmd_path(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.json:
        print_json({"root": str(store.root)})
    else:
        print(store.root)
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from .layout import SESSIONS
    from .session import read_header

    store = open_store(args)
    limit = args.limit if args.limit > 0 else sys.maxsize
    rows: list[dict[str, Any]] = []
    if args.all:
        headers = []
        for sid in session_dirs(store):
            try:
                headers.append((sid, read_header(store.root / SESSIONS / sid, sid)))
            except Exception as exc:  # one damaged session never hides the others
                print(f"{PROG}: warning: {exc}", file=sys.stderr)
        headers.sort(key=lambda h: (str(h[1].get("created_at") or ""), h[0]), reverse=True)
        for sid, header in headers[:limit]:
            messages = store.load_all_messages(sid)
            rows.append(
                {
                    "id": sid,
                    "agent_name": str(header.get("agent_name") or ""),
                    "created_at": str(header.get("created_at") or ""),
                    "message_count": len(messages),
                    "total_tokens": sum((m.prompt_tokens or 0) + (m.completion_tokens or 0) for m in messages),
                    "project_root": header.get("project_root"),
                    "title": _text(header.get("title")) or _title(messages),
                    "mode": _text(header.get("mode")),
                }
            )
    else:
        project = os.path.abspath(args.project or os.getcwd())
        for info in store.list_sessions(min(limit, 1 << 62), project):
            rows.append(
                {
                    "id": info.id,
                    "agent_name": info.agent_name,
                    "created_at": info.created_at,
                    "message_count": info.message_count,
                    "total_tokens": info.total_tokens,
                    "project_root": info.project_root,
                    "title": info.title or _title(store.load_all_messages(info.id)),
                    "mode": info.mode,
                }
            )
    if args.json:
        print_json(rows)
        return 0
    from .cli_render import first_line, render_table, short_time

    if not rows:
        where = "in the store" if args.all else "for this project (try --all)"
        print(f"no sessions {where}", file=sys.stderr)
        return 0
    table = [
        [r["id"], r["agent_name"], short_time(r["created_at"]), str(r["message_count"]),
         str(r["total_tokens"]), first_line(r["title"])]
        for r in rows
    ]  # fmt: skip
    columns = ["ID", "AGENT", "CREATED", "MESSAGES", "TOKENS", "TITLE"]
    render_table(columns, table, sys.stdout, style_for_stdout(), numeric={3, 4})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .layout import MESSAGES, SESSIONS

    store = open_store(args)
    sid = resolve(store, args.session)
    if args.raw:
        import orjson

        data = (store.root / SESSIONS / sid / MESSAGES).read_bytes()
        out = sys.stdout.buffer
        for line in data.splitlines(keepends=True):
            if not args.all:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if isinstance(record, dict) and record.get("compacted_at") is not None:
                    continue
            out.write(line if line.endswith(b"\n") else line + b"\n")
        out.flush()
        return 0
    messages = store.load_all_messages(sid)
    if not args.all:
        messages = [m for m in messages if m.compacted_at is None]
    if args.json:
        from dataclasses import asdict

        print_json([{**asdict(m), "role": m.role.value} for m in messages])
        return 0
    from .cli_render import render_messages

    hidden = sum(1 for m in store.load_all_messages(sid) if m.compacted_at is not None)
    style = style_for_stdout()
    if hidden and not args.all:
        print(style(f"({hidden} archived messages not shown; --all shows them)", "dim"))
    render_messages(messages, sys.stdout, style)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    total = store.session_token_usage(sid)
    by_agent = store.session_usage_by_agent(sid)
    if args.json:
        print_json({"session_id": sid, "total": _usage_dict(total),
               "by_agent": [{"agent": name, **_usage_dict(u)} for name, u in by_agent]})  # fmt: skip
        return 0
    from .cli_render import render_table

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
        store.set_todo(sid, args.set)
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

    from .errors import KodaFilesError
    from .layout import SESSIONS, TODO

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    created = store.get_todo(sid) is None
    if created:
        store.set_todo(sid, "")  # made by the store, so with its permissions (0600)
    path = store.root / SESSIONS / sid / TODO
    status = subprocess.run([*shlex.split(editor), str(path)]).returncode
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
        print(f"archived {archived} messages of {sid}" if archived else "nothing to compact")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    count = len(store.load_all_messages(sid))
    if not confirm(f"delete session {sid} ({count} messages)?", args.yes):
        print("not deleted", file=sys.stderr)
        return 1
    deleted = store.delete_session(sid)
    if args.json:
        print_json({"session_id": sid, "deleted": deleted})
    else:
        print(f"deleted {sid}" if deleted else f"{sid} was already gone")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .cli_render import format_bytes

    store = open_store(args)
    ids = session_dirs(store)
    messages = archived = 0
    for sid in ids:
        for m in store.load_all_messages(sid):
            messages += 1
            archived += m.compacted_at is not None
    size = _disk_bytes(str(store.root))
    c = store.compacted_stats()
    data = {
        "root": str(store.root), "sessions": len(ids), "messages": messages, "archived_messages": archived,
        "bytes_on_disk": size,
        "compacted": {"message_count": c.message_count, "session_count": c.session_count,
                      "size_bytes": c.size_bytes, "oldest": c.oldest},
    }  # fmt: skip
    if args.json:
        print_json(data)
        return 0
    print(f"root            {store.root}")
    print(f"sessions        {len(ids)}")
    print(f"messages        {messages} ({archived} archived)")
    print(f"on disk         {format_bytes(size)}")
    print(f"compacted       {c.message_count} messages in {c.session_count} sessions, "
          f"{format_bytes(c.size_bytes)} of text, oldest {c.oldest or '-'}")  # fmt: skip
    return 0


def _disk_bytes(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def print_json(value: Any) -> None:
    from .cli_render import dump_json

    dump_json(value, sys.stdout)


def style_for_stdout() -> Any:
    from .cli_render import Style, wants_colour

    return Style(wants_colour(sys.stdout))


# ── entry point ──


def main(argv: list[str] | None = None) -> int:
    from .cli_args import build_parser

    parser = build_parser(_Parser)
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`koda-files show X | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        from .errors import KodaFilesError

        if args.debug:
            raise
        if isinstance(exc, (KodaFilesError, ValueError, OSError, LookupError, TypeError)):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                  "(--debug shows the traceback)", file=sys.stderr)  # fmt: skip
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
