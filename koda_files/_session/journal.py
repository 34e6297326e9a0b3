"""`<root>/.changes`, the change journal: which sessions the store has written, in order.

Its first line is a random token naming this journal; every later line is the id of a session
some store changed, appended after the change and before the session lock is released. A root
summary (`_store/summary.py`) records the token and the offset it has read up to, so a new line (or a
new token) tells it exactly which sessions to look at again. A dot-file, derived: deleting it
only costs one stat of every session on the next whole-store query.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from pathlib import Path

from .._files.fileops import append_note, atomic_write, link, unlink, write_temp

__all__ = ["JOURNAL", "new_journal", "note_change", "rotate_journal"]

log = logging.getLogger("koda_files")

JOURNAL = ".changes"


def _token_line() -> bytes:
    return secrets.token_hex(16).encode() + b"\n"


def note_change(journal: str, line: bytes) -> None:
    """Append `line` (a session id and a newline) to the journal, making it if absent. Never raises.

    If the journal cannot be written (a full disk), it is removed instead: a summary then no
    longer matches any journal and the next whole-store query checks every session.
    """
    try:
        append_note(journal, line)
        return
    except FileNotFoundError:
        pass
    except OSError:
        _give_up(journal)
        return
    try:
        new_journal(Path(journal))
        append_note(journal, line)
    except OSError:
        _give_up(journal)


def new_journal(path: Path) -> None:
    """Create the journal with a fresh token unless one exists (linked into place: never replaces one)."""
    tmp = write_temp(path, [_token_line()], durable=False)
    try:
        link(tmp, path)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(OSError):
            unlink(tmp)


def rotate_journal(path: Path) -> None:
    """Replace the journal by an empty one with a new token (every summary built on the old one is void)."""
    atomic_write(path, [_token_line()], durable=False)


def _give_up(journal: str) -> None:
    try:
        unlink(Path(journal))
    except FileNotFoundError:
        return
    except OSError as exc:
        # Nothing else can be done: a root we cannot write to holds no store writes either.
        log.error("%s: cannot be updated or removed (%s); whole-store answers may lag", journal, exc)
