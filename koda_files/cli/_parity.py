"""`koda-files redact` and `koda-files fork`: redaction and forking from the shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ._common import confirm, open_store, overview, print_json, resolve

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
    )
    p.add_argument("ids", metavar="MESSAGE_ID", type=_message_id, nargs="+", help="the messages to redact")
    p.add_argument("--with", dest="replacement", metavar="TEXT", default="[redacted]",
                   help="the new content (default: [redacted])")
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = command(
        "fork", cmd_fork,
        "Start a new session from another's context (same agent and project); prints the new id.",
        "koda-files fork 01a2",
    )
    p.add_argument(
        "session", metavar="SESSION", help="the session to fork: its id, a unique prefix of it, or latest / latest~N"
    )


def cmd_redact(args: argparse.Namespace) -> int:
    store = open_store(args)
    ids = sorted(set(args.ids))
    if not confirm(f"redact {len(ids)} message(s) for good ({', '.join(map(str, ids))})?", args.yes):
        print("not redacted", file=sys.stderr)
        return 1
    store.clear_message_content(ids, args.replacement)
    if args.json:
        print_json({"redacted": ids})
    else:
        print(f"redacted {len(ids)} message(s)")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    store = open_store(args)
    source = resolve(store, args.session)
    source_info = overview(store, source)
    history = store.load_context(source)
    new = store.create_session(source_info.agent_name or "main", source_info.project_root)
    store.copy_messages_into_session(new, history)
    if args.json:
        print_json({"session_id": new, "forked_from": source, "messages": len(history)})
    else:
        print(new)
    return 0
