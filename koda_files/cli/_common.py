"""What every `koda-files` command shares: the store in use, session names, confirmation, JSON, colour.

Imports no command module (the commands import this one), and nothing heavy at start-up: the
store (with filelock and orjson) is imported when a command opens it, not for `--help`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSessionIdError, KodaFilesError

if TYPE_CHECKING:
    from ..store import FileStore
    from ..types import SessionOverview

__all__ = [
    "PROG",
    "UsageError",
    "confirm",
    "open_store",
    "overview",
    "print_json",
    "resolve",
    "set_colour_mode",
    "style_for_stdout",
]

PROG = "koda-files"
_colour_mode = "auto"  # --color, set once by main()
_LATEST = re.compile(r"latest(?:~(\d+))?")


class UsageError(Exception):
    """Bad usage found after parsing (exit status 2)."""


def open_store(args: argparse.Namespace, *, existing: bool = True) -> FileStore:
    """The store of `--root`/`$KODA_FILES_DIR`/the data dir; `existing`: it must be a store already.

    Only the platform's data dir may be missing or not a store yet (a first run reads as empty): a
    root given by `--root` or `$KODA_FILES_DIR` that is not a store is a typo to report.
    """
    from ..store import FileStore

    store = FileStore(args.root)
    explicit = args.root is not None or bool(os.environ.get("KODA_FILES_DIR"))
    if existing and explicit and not store.is_store():
        raise KodaFilesError(f"not a koda-files store: {store.root}")
    return store


def resolve(store: FileStore, text: str) -> str:
    """A session id from the id, `latest` / `latest~N` (by last activity) or a unique prefix of an id."""
    ids = store.session_ids()
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
    matches = [sid for sid in ids if sid.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        try:
            store.session_header(text)
        except InvalidSessionIdError:
            raise  # text that could never name a session says so, rather than "no match"
        except KodaFilesError:
            pass  # a well-formed id naming no session
        raise KodaFilesError(f"no session matches {text!r} in {store.root}")
    shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
    raise KodaFilesError(f"session prefix {text!r} is ambiguous: {len(matches)} sessions match ({shown})")


def overview(store: FileStore, session_id: str) -> SessionOverview:
    """The session's overview; raises `KodaFilesError` when its `metadata.json` cannot be read."""
    found = store.session_overview(session_id)
    if found is None:
        raise KodaFilesError(f"session {session_id}: metadata.json cannot be read (see '{PROG} check')")
    return found


def confirm(question: str, yes: bool) -> bool:
    """True with `yes`, else the answer on a terminal; raises `UsageError` when stdin is not one."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation: add --yes (stdin is not a terminal)")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def print_json(value: Any) -> None:
    from ._render import dump_json

    dump_json(value, sys.stdout)


def set_colour_mode(mode: str) -> None:
    """`--color`: auto, always or never, for every `style_for_stdout` after it."""
    global _colour_mode
    _colour_mode = mode


def style_for_stdout() -> Any:
    from ._render import Style, wants_colour

    return Style(wants_colour(sys.stdout, _colour_mode))
