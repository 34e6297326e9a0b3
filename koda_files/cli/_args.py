"""The argument parser of `koda-files`: every command, its options, and an example in its --help."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .. import __version__
from . import _admin, _commands, _parity, _search
from ._common import PROG

__all__ = ["build_parser"]

DESCRIPTION = """\
Look at and manage koda's conversation history stored as plain files by koda-files.
Sessions live in <root>/sessions/<id>/ (messages.jsonl, metadata.json, todo.md); the root is
--root, else $KODA_FILES_DIR, else the platform data dir for "koda". Wherever a session id is
expected, a unique prefix of it will do, and `latest` (`latest~1`, `latest~2`, ...) names the
session with the most recent activity (the one before it, ...).

exit status: 0 success, 1 the command ran and found a problem, 2 bad usage"""

EXAMPLES = """\
examples:
  koda-files sessions                   sessions of the project in the current directory
  koda-files show 01a2                  the conversation of the session whose id starts 01a2
  koda-files show latest --follow       the session just used, and what is added to it live
  koda-files search 'test_add' --all    every message that mentions test_add, archived too
  koda-files --json sessions --all      every session, as JSON
  koda-files import-sqlite              bring koda's own history (~/.config/koda/db/koda.db) over"""


_SESSION = "session id, a unique prefix of it, or latest / latest~N"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: "koda-files show: error: ... (see --help)".
        self.exit(2, f"{self.prog}: error: {_suggest(message)} (see '{self.prog} --help')\n")


def _suggest(message: str) -> str:
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


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _global_options(target: argparse.ArgumentParser, *, given_after: bool) -> None:
    """The options of every command; `given_after`: a command's copy, set only when given there."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if given_after else value

    target.add_argument(
        "--root", metavar="PATH", default=default(None),
        help="the store's root (default: $KODA_FILES_DIR, else the platform data dir)",
    )
    target.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output on stdout"
    )
    target.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks of errors")
    target.add_argument(
        "--color", "--colour", choices=("auto", "always", "never"), default=default("auto"),
        help="colour: auto (a terminal without NO_COLOR), always or never",
    )
    target.add_argument(
        "--no-pager", action="store_true", default=default(False),
        help="never page long output (default on a terminal: $PAGER, else 'less -FRX')",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each parsed namespace carries its command's `handler`."""
    parser_class = _Parser
    formatter = argparse.RawDescriptionHelpFormatter
    parser = parser_class(prog=PROG, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"koda-files {__version__}")
    # The global options work before the command and after it; given after, they win.
    globals_ = parser_class(add_help=False)
    _global_options(parser, given_after=False)
    _global_options(globals_, given_after=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=parser_class)

    def command(name: str, handler: object, summary: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=summary, description=summary, epilog=f"example:\n  {example}",
            parents=[globals_], formatter_class=formatter,
        )
        p.set_defaults(handler=handler)
        return p

    command("path", _commands.cmd_path, "Print the root of the store in use.", "cd \"$(koda-files path)\" && git init")

    p = command(
        "sessions", _commands.cmd_sessions,
        "List sessions, last active first: id, agent, created, last activity, messages, tokens and the title "
        "(or first user message). Answers from the index, without reading the logs.",
        "koda-files sessions --all --sort created --limit 5",
    )
    p.add_argument("--project", metavar="DIR", help="the project root (default: the current directory)")
    p.add_argument("--all", action="store_true", help="list the sessions of every project")
    p.add_argument("--limit", metavar="N", type=_non_negative, default=20, help="at most N (default 20; 0: all)")
    p.add_argument("--sort", choices=("activity", "created"), default="activity",
                   help="newest last activity first (default), or newest created first")

    p = command(
        "search", _search.cmd_search,
        "Find messages whose text holds PATTERN, in every session: newest session first, last message "
        "first. Exit 1 when nothing matches.",
        "koda-files search 'def test_' --tools --since 7d",
    )
    p.add_argument("pattern", metavar="PATTERN", help="text to find (case-sensitive), or a regex with --regex")
    p.add_argument("--regex", action="store_true", help="PATTERN is a Python regular expression")
    p.add_argument("--tools", action="store_true", help="also search tool calls and tool results")
    p.add_argument("--all", action="store_true", help="include archived (compacted) messages")
    p.add_argument("--role", action="append", choices=("system", "user", "assistant", "tool"),
                   help="only messages of this role (repeatable)")
    p.add_argument("--project", metavar="DIR", help="only sessions of this project (and those of none)")
    p.add_argument("--since", metavar="WHEN", help="only messages since a date (2026-11-27) or 30m/12h/7d/2w ago")
    p.add_argument("--limit", metavar="N", type=_non_negative, default=0, help="at most N messages (default 0: all)")

    p = command(
        "show", _commands.cmd_show,
        "Print a conversation as a person reads it; archived messages only with --all.",
        "koda-files show latest --markdown > session.md",
    )
    p.add_argument("session", metavar="SESSION", help=_SESSION)
    p.add_argument("--all", action="store_true", help="include archived (compacted) messages")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--raw", action="store_true", help="print the messages.jsonl lines as stored")
    how.add_argument("--markdown", action="store_true", help="a Markdown transcript to share")
    how.add_argument("--follow", "-f", action="store_true",
                     help="then print each new message as it is written, until Ctrl-C")
    p.add_argument("--full", action="store_true", help="show tool output whole (default: its first 6 lines)")

    p = command("usage", _commands.cmd_usage, "Token usage of a session: total and by agent.", "koda-files usage 01a2")
    p.add_argument("session", metavar="SESSION", help=_SESSION)

    p = command(
        "todo", _commands.cmd_todo,
        "Print a session's todo (todo.md), or replace it, or open it in $VISUAL / $EDITOR.",
        "koda-files todo 01a2 --set '- [ ] write the tests'",
    )
    p.add_argument("session", metavar="SESSION", help=_SESSION)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--edit", action="store_true", help="edit todo.md itself in $VISUAL or $EDITOR")
    how.add_argument("--set", metavar="TEXT", help="replace the todo with TEXT")
    how.add_argument("--set-file", metavar="F", help="replace the todo with the contents of F ('-': stdin)")

    p = command(
        "compact", _commands.cmd_compact,
        "Archive all active messages but the last N, behind a summary.",
        "koda-files compact 01a2 --summary 'We fixed the parser; tests pass.' --keep 4",
    )
    p.add_argument("session", metavar="SESSION", help=_SESSION)
    p.add_argument("--summary", metavar="TEXT", required=True, help="the summary that replaces them")
    p.add_argument("--keep", metavar="N", type=_non_negative, default=4, help="active messages kept (default 4)")

    p = command("delete", _commands.cmd_delete, "Delete a session and all its files.", "koda-files delete 01a2 --yes")
    p.add_argument("session", metavar="SESSION", help=_SESSION)
    p.add_argument("--yes", action="store_true", help="do not ask")

    command(
        "stats", _commands.cmd_stats,
        "Sessions, messages, bytes on disk, and the archived (compacted) messages.",
        "koda-files --json stats | jq .compacted",
    )

    p = command(
        "purge", _admin.cmd_purge,
        "Delete archived (compacted) messages older than DAYS for good; shows what would go first.",
        "koda-files purge --older-than 30 --dry-run",
    )
    p.add_argument("--older-than", metavar="DAYS", type=_non_negative, required=True,
                   help="archived more than DAYS days ago (0: all archived messages)")
    p.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = command(
        "check", _admin.cmd_check,
        "Check the store's files for damage (exit 1 if any is found); --repair fixes what it can.",
        "koda-files check --repair",
    )
    p.add_argument("--repair", action="store_true", help="repair or quarantine what is damaged")
    p.add_argument("--reindex", action="store_true",
                   help="first rebuild .index and .summary from every session's files (after hand edits)")

    p = command(
        "import-sqlite", _admin.cmd_import,
        "Copy every session of koda's SQLite database into the store (read-only; safe while koda runs).",
        "koda-files import-sqlite ~/.config/koda/db/koda.db",
    )
    p.add_argument("db", metavar="DB", nargs="?",
                   help="koda.db (default: $XDG_CONFIG_HOME/koda/db/koda.db or ~/.config/koda/db/koda.db)")
    p.add_argument("--replace", action="store_true", help="overwrite sessions already in the store")

    p = command(
        "export-sqlite", _admin.cmd_export,
        "Write the store into a new database in koda's schema (never overwrites a file).",
        "koda-files export-sqlite /tmp/koda.db",
    )
    p.add_argument("out", metavar="OUT", help="the database file to create")
    _parity.add_commands(command)
    return parser
