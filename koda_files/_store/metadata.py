"""A session's metadata: `metadata.json`'s key/value map, its title and approval mode, and `todo.md`.

`FileStore` hands these to its `Metadata` collaborator. Every write is atomic (a new file
renamed over the old) under the session lock; reads take no lock and see hand edits at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._format.codec import check_text
from .._format.layout import TODO
from ..errors import SessionNotFoundError
from .root import StoreRoot

__all__ = ["Metadata"]

_TODO_KEY = "todo"


class Metadata:
    """Metadata, title, mode and todo of the sessions under a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root

    def get(self, session_id: str, key: str) -> str | None:
        check_text("key", key, optional=False)
        if key == _TODO_KEY:
            return self.get_todo(session_id)
        meta = self._header_value(session_id, "metadata")
        value = meta.get(key) if isinstance(meta, dict) else None
        return value if isinstance(value, str) else None

    def set(self, session_id: str, key: str, value: str) -> None:
        check_text("key", key, optional=False)
        check_text("value", value, optional=False)
        if key == _TODO_KEY:
            self.set_todo(session_id, value)
            return

        def change(header: dict[str, Any]) -> bool:
            meta = header.setdefault("metadata", {})
            if meta.get(key) == value:
                return False
            meta[key] = value
            return True

        self._root.update_header(session_id, change)

    def get_text(self, session_id: str, name: str) -> str | None:
        """A top-level text of `metadata.json` (`"title"`, `"mode"`); None if absent or no session."""
        value = self._header_value(session_id, name)
        return value if isinstance(value, str) else None

    def set_text(self, session_id: str, name: str, value: str) -> None:
        check_text(name, value, optional=False)

        def change(header: dict[str, Any]) -> bool:
            if header.get(name) == value:
                return False
            header[name] = value
            return True

        self._root.update_header(session_id, change)

    def _header_value(self, session_id: str, name: str) -> object:
        with self._root.session(session_id) as s:
            return s.header().get(name) if s.is_dir() else None

    def get_todo(self, session_id: str) -> str | None:
        with self._root.session(session_id) as s:
            return s.read_todo() if s.is_dir() else None

    def set_todo(self, session_id: str, content: str) -> None:
        check_text("content", content, optional=False)
        with self._root.session(session_id) as s, s.locked():
            s.write_todo(content)

    def todo_path(self, session_id: str) -> Path:
        with self._root.session(session_id) as s:
            if not s.is_dir():
                raise SessionNotFoundError(session_id)
            return s.path / TODO

    def delete_todo(self, session_id: str) -> bool:
        with self._root.session(session_id) as s:
            if not s.is_dir():
                return False
            with s.locked():
                return s.remove_todo()
