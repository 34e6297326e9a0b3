"""Looking over a whole store: session overviews with last activity, disk usage and full-text search.

Everything here answers from the derived index and file stats (`stat`, never a parse of a log
whose summary is current), so listing a large store costs milliseconds; search reads the logs
but parses only lines whose bytes contain the pattern. `FileStore` hands these to `Browse`.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from typing import Any

from .._files.fileops import open_read
from .._format.classify import classify, last_compaction
from .._format.codec import project_root_text
from .._format.framing import body, iter_raw_lines
from .._format.layout import GITIGNORE_FILE, LAYOUT_FILE, SESSIONS, validate_session_id
from .._session.completion import ROOT_FLAG
from .._session.journal import JOURNAL
from ..errors import SessionNotFoundError
from ..types import Message, SearchHit, SessionInfo, SessionOverview
from .index import INDEX_FILE
from .kv import KV_FILE
from .protocol import StrPath
from .resume import Resume
from .root import StoreRoot
from .search import Query, search_sessions
from .summary import SUMMARY_FILE

__all__ = ["Browse"]

# The store's own files directly under the root; anything else there (.git, .venv) is not ours.
_ROOT_FILES = (LAYOUT_FILE, GITIGNORE_FILE, ".ids", INDEX_FILE, SUMMARY_FILE, JOURNAL, ROOT_FLAG, KV_FILE)


class Browse:
    """Read-only views over every session of a store."""

    def __init__(self, root: StoreRoot, resume: Resume) -> None:
        self._root = root
        self._resume = resume

    def list_sessions(self, limit: int, wanted: str | None) -> list[SessionInfo]:
        """See `FileStore.list_sessions`; `wanted` is the normalised project root (None: every one)."""
        rows = self._root.summary.sessions(wanted, limit)
        if rows is not None:
            return [SessionInfo(r[1], r[2], r[0], r[3], r[4], r[5], r[6], r[7]) for r in rows]
        ids = self._root.session_ids()
        found: list[tuple[str, str, dict[str, Any]]] = []
        for sid, header in self._root.index.headers(ids).items():
            root = header.get("project_root")
            if wanted is None or root is None or root == wanted:
                found.append((str(header.get("created_at") or ""), sid, header))
        out = []
        for created, sid, header in heapq.nlargest(limit, found, key=lambda r: (r[0], r[1])):
            n = self._root.index.summary(sid)
            root = header.get("project_root")
            out.append(
                SessionInfo(
                    sid, str(header.get("agent_name") or ""), created, n.count, n.tokens,
                    root if isinstance(root, str) else None, _text(header.get("title")), _text(header.get("mode")),
                )
            )
        self._root.index.save(ids)
        return out

    def session_ids(self) -> list[str]:
        """Ids of every session under the root, sorted (UUIDv7 ids sort by creation)."""
        return sorted(self._root.session_ids())

    def session_overview(self, session_id: str) -> SessionOverview | None:
        """One session's overview; None if it does not exist (or its header is unreadable)."""
        validate_session_id(session_id)
        return next(iter(self._overviews([session_id], None)), None)

    def session_overviews(self, project_root: StrPath | None = None) -> list[SessionOverview]:
        """Every session (or those of `project_root` and those without a project), last activity first."""
        wanted = project_root_text(project_root)
        ids = self._root.session_ids()
        rows = self._overviews(ids, wanted)
        self._root.index.save(ids)
        rows.sort(key=lambda r: (r.last_activity, r.id), reverse=True)
        return rows

    def _overviews(self, ids: list[str], wanted: str | None) -> list[SessionOverview]:
        rows = []
        for sid, header in self._root.index.headers(ids).items():
            root = header.get("project_root")
            if wanted is not None and root is not None and root != wanted:
                continue
            n = self._root.index.summary(sid)
            created = str(header.get("created_at") or "")
            rows.append(
                SessionOverview(
                    sid, str(header.get("agent_name") or ""), created,
                    self._resume.session_last_accessed(sid) or created, n.count, n.archived, n.tokens,
                    root if isinstance(root, str) else None, _text(header.get("title")),
                    _text(header.get("mode")), n.first_user,
                )
            )
        return rows

    def session_header(self, session_id: str) -> dict[str, Any]:
        with self._root.session(session_id) as s:
            if not s.is_dir():
                raise SessionNotFoundError(session_id)
            return s.header()

    def raw_lines(self, session_id: str, archived: bool) -> list[bytes]:
        with self._root.session(session_id) as s:
            if not s.is_dir():
                raise SessionNotFoundError(session_id)
            try:
                fd = open_read(s.messages_path)
            except FileNotFoundError:
                return []  # a missing log reads as empty, as everywhere
            try:
                last = None if archived else last_compaction(fd, os.fstat(fd).st_size, session_id)
                out = []
                for offset, raw in iter_raw_lines(fd, last.offset if last is not None else 0):
                    if not archived:
                        entry = classify(body(raw, offset == 0), session_id)[1]
                        if type(entry) is Message and entry.compacted_at is not None:
                            continue  # archived in the first layout: the line says so itself
                    out.append(raw if raw.endswith(b"\n") else raw + b"\n")
                return out
            finally:
                os.close(fd)

    def disk_usage(self) -> int:
        """Bytes of the store's own files: those it keeps at the root and all under `sessions/`."""
        total = 0
        for name in _ROOT_FILES:
            try:
                total += os.lstat(self._root.root / name).st_size
            except OSError:
                continue
        for dirpath, _dirs, files in os.walk(self._root.root / SESSIONS):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
        return total

    def search(self, query: Query, project_root: StrPath | None, progress: Any) -> Iterator[SearchHit]:
        """See `FileStore.search`: sessions of `project_root` (and none; None: all), by last activity."""
        wanted = project_root_text(project_root)
        ids = self._root.session_ids()
        if wanted is not None:
            headers = self._root.index.headers(ids)
            ids = [s for s in ids if headers.get(s, {}).get("project_root") in (None, wanted)]
        stamps = {sid: self._resume.last_access_ns(sid) or 0 for sid in ids}
        ids.sort(key=lambda s: (stamps[s], s), reverse=True)
        return search_sessions(self._root.sessions_dir, ids, query, progress)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
