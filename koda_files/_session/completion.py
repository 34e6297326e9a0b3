"""Which sessions track completion, so that `load_context` leaves out interrupted assistant messages.

A session tracks completion when one of its messages carries a completion mark (the compaction
hint, written complete, does not count), or when its
`metadata.json` has `"tracks_completion": true`, which `create_session` writes once the root has
seen a `mark_message_complete` (recorded by the empty dot-file `<root>/.tracks-completion`). A
caller that never marks anything never turns it on, so nothing is ever left out for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import read_file, touch

__all__ = [
    "COMPACTION_HINT",
    "HEADER_KEY",
    "ROOT_FLAG",
    "HeaderFlag",
    "counts_as_mark",
    "header_tracks",
    "note_root_tracks",
    "root_tracks",
]

HEADER_KEY = "tracks_completion"
ROOT_FLAG = ".tracks-completion"
COMPACTION_HINT = (
    "[Context compacted] The earlier part of this conversation was compacted into the summary "
    "above, which replaces it. Continue from there."
)


def counts_as_mark(role: object, content: str | None) -> bool:
    """Whether a completed message turns tracking on: all but the compaction hint, born complete."""
    return content != COMPACTION_HINT or role != "assistant"


def root_tracks(root: Path) -> bool:
    """True once a completion was marked under `root` (new sessions then track completion)."""
    return os.path.lexists(root / ROOT_FLAG)


def note_root_tracks(root: Path) -> None:
    """Record that the root has seen a completion mark; an error only leaves it unrecorded."""
    try:  # noqa: SIM105 - an unwritable root still serves the mark itself
        touch(str(root / ROOT_FLAG))
    except OSError:
        pass


def header_tracks(header: dict[str, Any]) -> bool:
    """The flag as `create_session` writes it; anything but `true` reads as not set."""
    return header.get(HEADER_KEY) is True


class HeaderFlag:
    """`tracks_completion` of one `metadata.json`, re-read only when the file changed (one stat)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._key: tuple[int, int, int] = (-1, -1, -1)
        self._value = False

    def get(self) -> bool:
        """The flag now; a missing or unreadable header reads as not set."""
        try:
            st = os.stat(self._path, follow_symlinks=False)
        except OSError:
            return False
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._key:
            value = False
            try:
                raw = read_file(Path(self._path))
                header = orjson.loads(raw) if raw else None
                value = isinstance(header, dict) and header_tracks(header)
            except (OSError, orjson.JSONDecodeError):
                value = False
            self._key, self._value = key, value
        return self._value
