"""The exceptions koda_files raises; each also inherits the builtin a caller would catch."""

from __future__ import annotations

__all__ = [
    "InvalidSessionIdError",
    "KodaFilesError",
    "SessionNotFoundError",
]


class KodaFilesError(Exception):
    """Base class of every error the store raises on purpose."""


class SessionNotFoundError(KodaFilesError, LookupError):
    """A write named a session that does not exist (or was deleted meanwhile)."""

    def __init__(self, session_id: str, detail: str = "") -> None:
        self.session_id = session_id
        suffix = f": {detail}" if detail else ""
        super().__init__(f"session {session_id!r} not found{suffix}")


class InvalidSessionIdError(KodaFilesError, ValueError):
    """A session id that could not be a directory name under the root; nothing was touched."""

    def __init__(self, session_id: object) -> None:
        self.session_id = session_id
        super().__init__(
            f"invalid session id {session_id!r}: expected 1-128 characters of "
            "A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
