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
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import KodaFilesError

if TYPE_CHECKING:
    from ..store import FileStore

__all__ = ["main"]

PROG = "koda-files"
_colour_mode = "auto"  # --color, set once by main()


class UsageError(Exception):
    """Bad usage found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: "koda-files show: error: ... (see --help)".
        self.exit(2, f"{self.prog}: error: {suggest(message)} (see '{self.prog} --help')\n")


def suggest(message: str) -> str:
    """argparse's "invalid choice" for a command, with the closest command when one is close."""
    import difflib
    import re

    m = re.match(r"argument COMMAND: invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if m is None:
        return message
    choices = re.findall(r"'([^']*)'", m.group(2))
    close = difflib.get_close_matches(m.group(1), choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown command '{m.group(1)}'{hint}"


# ── helpers ──


def open_store(args: argparse.Namespace, *, existing: bool = True) -> FileStore:
    """The store of `--root`/`$KODA_FILES_DIR`/the data dir; `existing`: it must be a store already.

    Only the platform's data dir may be missing or not a store yet (a first run reads as empty): a
    root given by `--root` or `$KODA_FILES_DIR` that is not a store is a typo to report.
    """

    from .._layout import is_store
    from ..store import FileStore

    store = FileStore(args.root)
    explicit = args.root is not None or bool(os.environ.get("KODA_FILES_DIR"))
    if existing and explicit and not is_store(store.root):
        raise KodaFilesError(f"not a koda-files store: {store.root}")
    return store


def session_dirs(store: FileStore) -> list[str]:
    """The ids of every session, sorted."""
    return store.session_ids()


_LATEST = re.compile(r"latest(?:~(\d+))?")


def resolve(store: FileStore, text: str) -> str:
    """A session id from the id, `latest` / `latest~N` (by last activity) or a unique prefix of an id."""

    from .._layout import validate_session_id

    ids = session_dirs(store)
    if text in ids:
        return text
    latest = _LATEST.fullmatch(text)
    if latest is not None:
        back = int(latest.group(1) or 0)
        from ._render import plural

        rows = store.session_overviews()
        if back >= len(rows):
            raise KodaFilesError(f"{text}: the store has {plural(len(rows), 'session')} in {store.root}")
        return rows[back].id
    validate_session_id(text)
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


def _usage_dict(u: Any) -> dict[str, int]:
    from dataclasses import asdict

    return asdict(u)


# ── commands ──


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
    rows = [
        {"id": r.id, "agent_name": r.agent_name, "created_at": r.created_at, "last_activity": r.last_activity,
         "message_count": r.message_count, "archived_count": r.archived_count, "total_tokens": r.total_tokens,
         "project_root": r.project_root, "title": r.title or r.first_user_message, "mode": r.mode}
        for r in overviews
    ]  # fmt: skip
    if args.json:
        print_json(rows)
        return 0
    from ._pager import paged
    from ._render import first_line, render_table, short_time

    if not rows:
        where = "in the store" if args.all else "for this project (try --all)"
        print(f"no sessions {where}", file=sys.stderr)
        return 0
    table = [
        [r.id, r.agent_name, short_time(r.created_at), short_time(r.last_activity), str(r.message_count),
         str(r.total_tokens), first_line(r.title or r.first_user_message)]
        for r in overviews
    ]  # fmt: skip
    columns = ["ID", "AGENT", "CREATED", "LAST ACTIVE", "MESSAGES", "TOKENS", "TITLE"]
    with paged(args):
        render_table(columns, table, sys.stdout, style_for_stdout(), numeric={4, 5})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    if args.follow and args.json:
        raise UsageError("--follow prints as it goes; it does not go with --json")
    if args.raw:
        return _show_raw(store, sid, args.all)
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

        overview = store.session_overview(sid)
        if overview is None:
            raise KodaFilesError(f"session {sid}: metadata.json cannot be read (see 'koda-files check')")
        with paged(args):
            render_markdown(overview, messages, sys.stdout, hidden)
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


def _show_raw(store: FileStore, sid: str, show_all: bool) -> int:
    """The lines of messages.jsonl as stored (archived ones only with --all)."""
    import orjson

    from .._classify import last_compaction
    from .._layout import MESSAGES, SESSIONS

    data = (store.root / SESSIONS / sid / MESSAGES).read_bytes()
    if not show_all:  # what follows the last compaction line, if there is one
        fd = os.open(store.root / SESSIONS / sid / MESSAGES, os.O_RDONLY)
        try:
            last = last_compaction(fd, len(data), sid)
        finally:
            os.close(fd)
        data = data[last.offset :] if last is not None else data
    out = sys.stdout.buffer
    for line in data.splitlines(keepends=True):
        if not show_all:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and record.get("compacted_at") is not None:
                continue  # archived in the first layout: the line says so itself
        out.write(line if line.endswith(b"\n") else line + b"\n")
    out.flush()
    return 0


@contextmanager
def _no_pager() -> Iterator[None]:
    yield


def cmd_usage(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    total = store.session_token_usage(sid)
    by_agent = store.session_usage_by_agent(sid)
    if args.json:
        print_json({"session_id": sid, "total": _usage_dict(total),
               "by_agent": [{"agent": name, **_usage_dict(u)} for name, u in by_agent]})  # fmt: skip
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

    from .._layout import SESSIONS, TODO

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
        from ._render import plural

        print(f"archived {plural(archived, 'message')} of {sid}" if archived else "nothing to compact")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(args)
    sid = resolve(store, args.session)
    from ._render import plural

    overview = store.session_overview(sid)
    count = plural(overview.message_count if overview else 0, "message")
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
    rows = store.session_overviews()  # counts from the index
    messages = sum(r.message_count for r in rows)
    archived = sum(r.archived_count for r in rows)
    size = store.disk_usage()  # only the store's own files: not a .git or .venv beside them
    c = store.compacted_stats()
    data = {
        "root": str(store.root), "sessions": len(rows), "messages": messages, "archived_messages": archived,
        "bytes_on_disk": size,
        "compacted": {"message_count": c.message_count, "session_count": c.session_count,
                      "size_bytes": c.size_bytes, "oldest": c.oldest},
    }  # fmt: skip
    if args.json:
        print_json(data)
        return 0
    print(f"root            {store.root}")
    print(f"sessions        {len(rows)}")
    print(f"messages        {messages} ({archived} archived)")
    print(f"on disk         {format_bytes(size)}")
    print(f"compacted       {plural(c.message_count, 'message')} in {plural(c.session_count, 'session')}, "
          f"{format_bytes(c.size_bytes)} of text, oldest {c.oldest or '-'}")  # fmt: skip
    return 0


def print_json(value: Any) -> None:
    from ._render import dump_json

    dump_json(value, sys.stdout)


def style_for_stdout() -> Any:
    from ._render import Style, wants_colour

    return Style(wants_colour(sys.stdout, _colour_mode))


# ── entry point ──


def main(argv: list[str] | None = None) -> int:
    from ._args import build_parser

    global _colour_mode

    parser = build_parser(_Parser)
    args = parser.parse_args(argv)
    _colour_mode = args.color
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
        # The reader went away (`koda-files show X | head`): it had all it wanted; stop quietly
        # (and keep the interpreter's last flush from complaining about the closed pipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
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
