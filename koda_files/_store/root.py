"""`StoreRoot`: what every store operation stands on: the root directory and per-session handles.

It creates the root on first write and checks its layout version, lists session directories
(leaving out dot-entries, symlinks and names that are not ids), keeps a bounded cache of
`SessionDir` handles (descriptors and parsed logs of the sessions used last), and owns the id
allocator, the derived session index and the root summary. `FileStore` and its collaborators
(resume state, events, key-value, forks, redaction, browsing, check) share one `StoreRoot`.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .._files.fileops import atomic_write, fsync_dir, make_dir, make_dirs, read_file
from .._files.locking import FileMutex
from .._format.header import encode_header
from .._format.layout import (
    FIRST_LAYOUT,
    GITIGNORE_FILE,
    GITIGNORE_TEXT,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    SESSION_ID_PATTERN,
    SESSIONS,
    check_new_root,
    default_root,
    new_session_id,
    validate_session_id,
)
from .._session.completion import HEADER_KEY, note_root_tracks, root_tracks
from .._session.ids import IdAllocator
from .._session.scan import largest_id
from .._session.session import NOT_CURRENT, SessionDir
from ..errors import CorruptFileError, NotAStoreError, UnsupportedLayoutError
from ..types import Durability, Message
from .index import SessionIndex
from .protocol import StrPath
from .summary import RootSummary

__all__ = ["StoreRoot", "check_limit"]

log = logging.getLogger("koda_files")

_DURABILITY = ("flush", "fsync")
_MAX_HANDLES = 64
_T = TypeVar("_T")


class StoreRoot:
    """The root of a store, the handles of its sessions, its id allocator, index and summary."""

    def __init__(
        self, root: StrPath | None = None, *, durability: Durability = "flush", tracks_completion: bool = False
    ) -> None:
        if durability not in _DURABILITY:
            raise ValueError(f"durability must be 'flush' or 'fsync', not {durability!r}")
        self.root = Path(os.path.abspath(root if root is not None else default_root()))
        self.durability: Durability = durability
        self.durable = durability == "fsync"
        self.tracks_completion = tracks_completion
        self.sessions_dir = self.root / SESSIONS
        self._handles: OrderedDict[str, SessionDir] = OrderedDict()
        self._handles_lock = threading.Lock()
        self.ids = IdAllocator(self.root / ".ids", self._largest_id)
        self.index = SessionIndex(self.root)
        self.summary = RootSummary(self.root, self.index, self.session_ids, self._layout_once)
        # A store dropped without close() must not leak its descriptors (and flock owners).
        weakref.finalize(self, _close_handles, self._handles, self._handles_lock, self.ids.mutex)
        self._root_ready = False
        self._layout_ok = False
        self._layout = 0  # the root's layout, once this store has read or written its marker
        self._tracking_noted = False  # this store has recorded the root's `.tracks-completion`
        self._warned: set[str] = set()  # stray entries under sessions/ already warned about
        # (session, id) of this process's last insert: where `mark_message_complete` looks first.
        self._last_insert: tuple[str, int] | None = None

    def close(self) -> None:
        """Close cached descriptors; the store stays usable and reopens them on demand."""
        _close_handles(self._handles, self._handles_lock, self.ids.mutex)

    def acquire(self, session_id: str) -> SessionDir:
        """The handle of a session, marked in use so it is not evicted; pair with `release`."""
        if not self._layout_ok:  # `_layout_once` inlined: every insert passes here
            self._check_layout_once()
        with self._handles_lock:
            handle = self._handles.get(session_id)
            if handle is None:
                handle = SessionDir(session_id, self.sessions_dir / session_id, self.durable)
                self._handles[session_id] = handle
                self._evict()
            else:
                self._handles.move_to_end(session_id)
            handle.users += 1
        return handle

    @contextmanager
    def session(self, session_id: str) -> Iterator[SessionDir]:
        """`with root.session(sid) as s:` the session's handle, kept from eviction meanwhile."""
        validate_session_id(session_id)
        handle = self.acquire(session_id)
        try:
            yield handle
        finally:
            self.release(handle)

    def release(self, handle: SessionDir) -> None:
        with self._handles_lock:
            handle.users -= 1

    def _evict(self) -> None:
        # Keep descriptors and parsed logs for the sessions used last; others are closed.
        for key in list(self._handles)[: max(0, len(self._handles) - _MAX_HANDLES)]:
            if self._handles[key].users == 0:
                self._handles.pop(key).close()

    def ensure_root(self) -> None:
        """Create the root, `sessions/` and the layout marker on first write; check the version."""
        if self._root_ready:
            return
        check_new_root(self.root)
        make_dirs(self.root, durable=self.durable)
        marker = self.root / LAYOUT_FILE
        raw = read_file(marker)
        if raw is None:
            self._write_layout(FIRST_LAYOUT)
        else:
            self._layout = self._check_layout(marker, raw)
        make_dir(self.sessions_dir)
        if self.durable:
            # Without this a power cut could lose `sessions/` and every session made in it (also
            # one another store made and did not sync, in "flush" mode): once per store.
            fsync_dir(self.root)
        self._root_ready = True

    def _write_layout(self, version: int) -> None:
        """Write the layout marker (and the root's `.gitignore`, if it has none)."""
        if read_file(self.root / GITIGNORE_FILE) is None:
            atomic_write(self.root / GITIGNORE_FILE, [GITIGNORE_TEXT], durable=self.durable)
        atomic_write(self.root / LAYOUT_FILE, [encode_header({"format": "koda-files", "layout": version})])
        self._layout = version

    def ensure_layout(self, version: int) -> None:
        """Before writing what only layout `version` reads: create the root, and raise its marker if lower."""
        self.ensure_root()
        if self._layout < version:
            self._write_layout(version)

    def _layout_once(self) -> None:
        if not self._layout_ok:
            self._check_layout_once()

    def _check_layout_once(self) -> None:
        """Refuse, before any read or write, a root laid out by a newer koda-files."""
        marker = self.root / LAYOUT_FILE
        raw = read_file(marker)
        if raw is not None:
            self._layout = self._check_layout(marker, raw)
        self._layout_ok = True

    @staticmethod
    def _check_layout(marker: Path, raw: bytes) -> int:
        try:
            marker_data = orjson.loads(raw)
            kind, version = marker_data.get("format"), marker_data.get("layout")
        except orjson.JSONDecodeError as exc:
            why = "does not parse; expected a koda-files layout marker"
            raise CorruptFileError(marker, why, line=exc.lineno) from None
        except AttributeError:
            raise CorruptFileError(marker, "is not a JSON object; expected a koda-files layout marker") from None
        if kind != "koda-files":
            raise NotAStoreError(marker, f"{marker}: a marker of another format ({kind!r}), not a koda-files store")
        if not isinstance(version, int) or version > LAYOUT_VERSION:
            raise UnsupportedLayoutError(marker, version, LAYOUT_VERSION)
        return version

    def create_session(self, agent_name: str, project_root: str | None, created_at: str) -> str:
        """A new session of a checked agent name and project root (see `FileStore.create_session`)."""
        self.ensure_root()
        session_id = new_session_id()
        header: dict[str, Any] = {
            "agent_name": agent_name,
            "created_at": created_at,
            "id": session_id,
            "metadata": {},
            "project_root": project_root,
        }
        if self.tracks_completion:
            self.note_tracking()
        if self.tracks_completion or root_tracks(self.root):
            header[HEADER_KEY] = True  # its first turn may be interrupted before any mark
        with self.visit(session_id) as s:
            s.create(header)
        return session_id

    def restore_session(self, header: dict[str, Any], files: dict[str, bytes], replace: bool) -> None:
        """Write a whole session given its header and files (see `FileStore.restore_session`)."""
        self.ensure_root()
        with self.visit(header["id"]) as s:
            s.create(header, files=files, replace=replace)

    @contextmanager
    def visit(self, session_id: str) -> Iterator[SessionDir]:
        """`session` for one pass over a session: its cached handle if it has one, else a handle
        that is not cached, so creating sessions (many sub-agents) and whole-store sweeps (purge,
        check) do not evict the handles and parsed logs of the sessions in use."""
        validate_session_id(session_id)
        with self._handles_lock:
            cached = session_id in self._handles
        if cached:
            with self.session(session_id) as s:
                yield s
            return
        handle = SessionDir(session_id, self.sessions_dir / session_id, self.durable)
        try:
            yield handle
        finally:
            handle.close()

    def session_ids(self) -> list[str]:
        """Ids of the session directories under the root, in directory order.

        Dot-entries are left out silently; symlinks, files and names that are not ids are left
        out with a warning, once per entry and store.
        """
        self._layout_once()
        try:
            entries = list(os.scandir(self.sessions_dir))
        except FileNotFoundError:
            return []
        ids = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                self._warn_once(entry.path, "not a session directory, ignored")
                continue
            if SESSION_ID_PATTERN.fullmatch(entry.name) is None:
                self._warn_once(entry.path, "not a valid session id, ignored")
                continue
            ids.append(entry.name)
        return ids

    def _warn_once(self, path: str, why: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("%s: %s", path, why)

    def _largest_id(self) -> int:
        return max((largest_id(self.sessions_dir / sid) for sid in self.session_ids()), default=0)

    def update_header(self, session_id: str, change: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite `metadata.json` (locked, atomic) if `change` edits the header and says so."""
        with self.session(session_id) as s, s.locked():
            header = s.header()
            if change(header):
                s.write_header(header)

    def note_insert(self, session_id: str, message_id: int) -> None:
        """Remember this process's last insert: where `sessions_holding` looks first."""
        self._last_insert = (session_id, message_id)

    def sessions_holding(self, message_id: int) -> list[str]:
        """Sessions known in memory to hold `message_id`: this process's last insert, then parsed logs."""
        out = []
        last = self._last_insert
        if last is not None and last[1] == message_id:
            out.append(last[0])
        with self._handles_lock:
            out += [sid for sid, h in self._handles.items() if h.holds(message_id)]
        return out

    def note_tracking(self) -> None:
        """The root has seen a completion mark: sessions created from now on track completion."""
        if not self._tracking_noted:
            note_root_tracks(self.root)
            self._tracking_noted = True

    def newest(self, session_id: str, pick: Callable[[Message], _T | None]) -> _T | None:
        """`pick` applied to messages last to first; the first answer that is not None."""
        # The query path of every turn: a cached handle whose log is current answers after one
        # stat, with no lock and no descriptor (so it need not be marked in use).
        handle = self._handles.get(session_id) if type(session_id) is str else None
        if handle is not None:
            answer = handle.newest_cached(pick)
            if answer is not NOT_CURRENT:
                return answer  # type: ignore[return-value]
        handle = self.acquire(validate_session_id(session_id))
        try:
            return handle.newest(pick)
        finally:
            self.release(handle)


def _close_handles(handles: OrderedDict[str, SessionDir], lock: threading.Lock, ids: FileMutex) -> None:
    ids.close()
    with lock:
        for handle in handles.values():
            handle.close()
        handles.clear()


def check_limit(limit: int) -> None:
    if type(limit) is not int:
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
