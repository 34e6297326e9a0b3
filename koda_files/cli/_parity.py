"""`koda-files redact` and `koda-files fork`: redaction and forking from the shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .._header import read_header
from . import _main as cli

__all__ = ["add_commands"]

Command = Callable[[str, object, str, str], argparse.ArgumentParser]


def _message_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a message id: {text!r}") from None


def add_commands(command: Command) -> None:
    """Register the commands with `build_parser`'s `command` helper."""
    p = command(
        "redact", cmd_redact,
        "Replace the content of messages (ids as in `show --raw`) and remove every copy of the old text.",
        "koda-files redact 1842 1843 --with '[secret removed]' --yes",
    )  # fmt: skip
    p.add_argument("ids", metavar="MESSAGE_ID", type=_message_id, nargs="+", help="the messages to redact")
    p.add_argument("--with", dest="replacement", metavar="TEXT", default="[redacted]",
                   help="the new content (default: [redacted])")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = command(
        "fork", cmd_fork,
        "Start a new session from another's context (same agent and project); prints the new id.",
        "koda-files fork 01a2",
    )  # fmt: skip
    p.add_argument("session", metavar="SESSION", help="the session to fork (id or unique prefix)")


def cmd_redact(args: argparse.Namespace) -> int:
    store = cli.open_store(args)
    ids = sorted(set(args.ids))
    if not cli.confirm(f"redact {len(ids)} message(s) for good ({', '.join(map(str, ids))})?", args.yes):
        print("not redacted", file=sys.stderr)
        return 1
    store.clear_message_content(ids, args.replacement)
    if args.json:
        cli.print_json({"redacted": ids})
    else:
        print(f"redacted {len(ids)} message(s)")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    store = cli.open_store(args)
    source = cli.resolve(store, args.session)
    info = read_header(store.root / "sessions" / source, source)
    agent = info.get("agent_name") if isinstance(info.get("agent_name"), str) else "main"
    project = info.get("project_root") if isinstance(info.get("project_root"), str) else "/"
    history = store.load_context(source)
    new = store.create_session(str(agent), str(project))
    store.copy_messages_into_session(new, history)
    if args.json:
        cli.print_json({"session_id": new, "forked_from": source, "messages": len(history)})
    else:
        print(new)
    return 0
