"""The exceptions koda_files raises; each also inherits the builtin a caller would catch.

Every message names the session, file or line involved.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = [
    "ConcurrentEditError",
    "CorruptFileError",
    "InvalidSessionIdError",
    "KodaFilesError",
    "MessageNotFoundError",
    "NotAStoreError",
    "SessionNotFoundError",
    "UnsupportedLayoutError",
]


class KodaFilesError(Exception):
    """Base class of every error the store raises on purpose."""


class SessionNotFoundError(KodaFilesError, LookupError):
    """A write named a session that does not exist (or was deleted meanwhile)."""

    def __init__(self, session_id: str, detail: str = "") -> None:
        self.session_id = session_id
        suffix = f": {detail}" if detail else ""
        super().__init__(f"session {session_id!r} not found{suffix}")


class MessageNotFoundError(KodaFilesError, LookupError):
    """Message ids that no session of the store holds; nothing was written.

    `message_id` is the (lowest) id missing, `message_ids` all of them in order.
    """

    def __init__(self, message_ids: int | Iterable[int], where: str | os.PathLike[str]) -> None:
        self.message_ids = (message_ids,) if isinstance(message_ids, int) else tuple(sorted(message_ids))
        self.message_id = self.message_ids[0]
        listed = ", ".join(map(str, self.message_ids))
        noun = "message" if len(self.message_ids) == 1 else "messages"
        super().__init__(f"{noun} {listed}: no such message in any session under {os.fspath(where)}")


class InvalidSessionIdError(KodaFilesError, ValueError):
    """A session id that could not be a directory name under the root; nothing was touched."""

    def __init__(self, session_id: object) -> None:
        self.session_id = session_id
        super().__init__(
            f"invalid session id {session_id!r}: expected 1-128 characters of "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )


class CorruptFileError(KodaFilesError, ValueError):
    """A file the store needs whole (`metadata.json`, the layout marker, `kv.json`) does not parse.

    `path` is the file; `line` the 1-based line at fault where one applies, else None. Repair it
    by hand or with `koda-files check --repair`; the store changed nothing.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, *, line: int | None = None) -> None:
        self.path = os.fspath(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ConcurrentEditError(KodaFilesError, RuntimeError):
    """A file changed by someone else (a hand edit) while the store rewrote or read it whole.

    Nothing was written; calling again is safe and normally succeeds. `path` is the file.
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path} changed during {what}; the store changed nothing, try again")


class UnsupportedLayoutError(KodaFilesError, ValueError):
    """The store was laid out by a newer koda-files (its marker's `layout` is higher); nothing was read."""

    def __init__(self, path: str | os.PathLike[str], layout: object, supported: int) -> None:
        self.path = os.fspath(path)
        self.layout = layout
        super().__init__(f"{self.path}: layout {layout!r} is newer than this koda-files understands ({supported})")


class NotAStoreError(KodaFilesError, ValueError):
    """The root is a file, or a directory of other things; the store refuses to write into it."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        super().__init__(message)
