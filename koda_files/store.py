"""`FileStore`: the Persistence contract over a directory of plain files.

Layout: `<root>/koda-files.json` (layout version), `<root>/.ids` (id counter) and
`<root>/sessions/<id>/` with `messages.jsonl`, `metadata.json` and `todo.md`. Writes to one
session are serialised by that session's lock; reads take no lock.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .browse import Browsing
from .check import CheckReport, check_store
from .codec import check_text, encode_new
from .completion import HEADER_KEY, root_tracks
from .errors import KodaFilesError
from .events import EventsMixin
from .fileops import atomic_write, fsync_dir, make_dir, remove_tree, rename
from .fork import ForkMixin
from .kv import KeyValueMixin
from .layout import COMPACTION_LAYOUT, MESSAGES, METADATA, new_session_id, utc_now, validate_session_id
from .protocol import RoleLike, StrPath
from .redact import RedactMixin
from .rewrite import compact_lines, purge_lines
from .root import check_limit
from .sanitize import has_tool_calls
from .scan import user_messages
from .session import encode_header
from .types import CompactedStats, Message, Role, SessionInfo, SessionUsage, TokenUsage
from .usage import sum_usage, usage_by_agent

__all__ = ["FileStore"]

log = logging.getLogger("koda_files")

_TODO_KEY = "todo"
_PURGE_THREADS = 8


class FileStore(Browsing, ForkMixin, EventsMixin, KeyValueMixin, RedactMixin):
    """Sessions as directories of plain files under `root`.

    `root` defaults to `$KODA_FILES_DIR`, else the platform user data dir for "koda".
    `durability="flush"` hands every write to the OS before returning (survives a killed
    process); `"fsync"` also forces it to disk (survives power loss). Rewrites are atomic in both.
    """

    # ── sessions ──

    def create_session(self, agent_name: str, project_root: StrPath) -> str:
        """Create a session directory atomically (it appears whole or not at all); returns its id.

        Once the root has seen a completion mark (or with `tracks_completion=True`), the session
        is created tracking completion.
        """
        check_text("agent_name", agent_name, optional=False)
        root_text = os.path.abspath(os.fspath(project_root))
        check_text("project_root", root_text, optional=False)
        self._ensure_root()
        session_id = new_session_id()
        header: dict[str, Any] = {
            "agent_name": agent_name,
            "created_at": utc_now(),
            "id": session_id,
            "metadata": {},
            "project_root": root_text,
        }
        if self.tracks_completion:
            self._note_tracking()
        if self.tracks_completion or root_tracks(self.root):
            header[HEADER_KEY] = True  # its first turn may be interrupted before any mark
        staging = self._sessions_dir / f".new-{session_id}"
        make_dir(staging)
        try:
            atomic_write(staging / METADATA, [encode_header(header)])
            atomic_write(staging / MESSAGES, [b""])
            rename(staging, self._sessions_dir / session_id)
        except BaseException:
            if staging.exists():
                remove_tree(staging)
            raise
        fsync_dir(self._sessions_dir)
        return session_id

    def list_sessions(self, limit: int, project_root: StrPath) -> list[SessionInfo]:
        """Sessions of `project_root` and sessions without one, newest first, at most `limit`.

        From the root summary (rows re-checked against their files); past its 50 newest per
        project, or when a row changed by hand, from every session's files.
        """
        check_limit(limit)
        wanted = os.path.abspath(os.fspath(project_root))
        if limit == 0:
            return []
        rows = self._whole.sessions(wanted, limit)
        if rows is not None:
            return [SessionInfo(r[1], r[2], r[0], r[3], r[4], r[5], r[6], r[7]) for r in rows]
        return self._list_sessions_scan(limit, wanted)

    def _list_sessions_scan(self, limit: int, wanted: str) -> list[SessionInfo]:
        ids = self._session_ids()
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for sid, header in self._index.headers(ids).items():
            root = header.get("project_root")
            if root is not None and root != wanted:
                continue
            rows.append((str(header.get("created_at") or ""), sid, header))
        out = []
        for created, sid, header in heapq.nlargest(limit, rows, key=lambda r: (r[0], r[1])):
            n = self._index.summary(sid)
            agent = str(header.get("agent_name") or "")
            out.append(
                SessionInfo(
                    sid, agent, created, n.count, n.tokens, header.get("project_root"),
                    _text_or_none(header.get("title")), _text_or_none(header.get("mode")),
                )
            )  # fmt: skip
        self._index.save(ids)
        return out

    def delete_session(self, session_id: str) -> bool:
        """Remove the session directory and all in it; False if there was none. Never follows links."""
        with self._session(session_id) as s:
            if not s.is_dir():
                return False
            with s.locked():
                # Rename first: the session vanishes in one step, and a crash during the
                # removal leaves only a dot-directory behind.
                graveyard = self._sessions_dir / f".deleted-{session_id}-{os.urandom(4).hex()}"
                rename(s.path, graveyard)
                s.close_append()
            s.mutex.close()
            fsync_dir(self._sessions_dir)
            remove_tree(graveyard)
            return True

    # ── messages ──

    def insert_message(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None = None,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        usage: TokenUsage | None = None,
    ) -> int:
        """Append a message for the main agent; returns its id."""
        return self.insert_message_with_agent(session_id, role, content, tool_calls, tool_call_id, usage, None)

    def insert_message_with_agent(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None,
        tool_calls: str | None,
        tool_call_id: str | None,
        usage: TokenUsage | None,
        agent_name: str | None,
    ) -> int:
        """Append a message; raises `SessionNotFoundError` (creating nothing) if the session is absent."""
        validate_session_id(session_id)
        line = encode_new(Role.parse(role), content, tool_calls, tool_call_id, usage, agent_name, utc_now())

        # The hot path of the store: no context managers, one lock, one write.
        handle = self._acquire(session_id)
        try:
            handle.lock(appending=True)
            try:
                msg_id = handle.append(line, self._ids.take)
            finally:
                handle.mutex.release()
            self._last_append = (session_id, msg_id)
            return msg_id
        finally:
            self._release(handle)

    def _messages(self, session_id: str) -> list[Message]:
        """A snapshot (a new list) of the session's messages, archived ones included."""
        with self._session(session_id) as s, s.cache_lock:
            return list(s.refresh(whole=True).messages)

    def load_context(self, session_id: str) -> list[Message]:
        """Active (not archived) messages in conversation order, sanitised for the model."""
        with self._session(session_id) as s:
            return s.load_context()

    def load_all_messages(self, session_id: str) -> list[Message]:
        """Every message, archived ones included, in conversation order, unsanitised."""
        return self._messages(session_id)

    def recent_user_messages(self, limit: int) -> list[str]:
        """Non-empty user messages across all sessions, newest first, at most `limit`.

        The newest 100 come from the root summary (each read again from its log); more, or one
        changed by hand, are found by reading the logs newest first.
        """
        check_limit(limit)
        if limit == 0:
            return []
        answer = self._whole.recent_user_messages(limit)
        if answer is not None:
            return answer
        return user_messages(self._sessions_dir, self._session_ids(), limit)

    def last_assistant_message(self, session_id: str) -> str:
        """Content of the last assistant message with content; "" if none."""
        return self._newest(session_id, _assistant_content) or ""

    def last_user_message(self, session_id: str) -> str:
        """Content of the last user message with content; "" if none."""
        return self._newest(session_id, _user_content) or ""

    def has_pending_tool_calls(self, session_id: str) -> bool:
        """True when the last active message is an assistant message with tool calls."""
        return bool(self._newest(session_id, _pending))

    # ── usage ──

    def session_token_usage(self, session_id: str) -> SessionUsage:
        """Totals over messages (archived included) with prompt or completion tokens."""
        return sum_usage(self._messages(session_id))

    def session_usage_by_agent(self, session_id: str) -> list[tuple[str, SessionUsage]]:
        """Usage per agent ("main" for none), largest prompt + completion first, ties by name."""
        return usage_by_agent(self._messages(session_id))

    # ── compaction and purge ──

    def compact_session(self, session_id: str, summary: str, preserve_count: int) -> int:
        """Archive all active messages but the last `preserve_count`; summary and hint go before them.

        Returns how many were archived; 0 (and the file untouched) when there is nothing to archive.
        """
        check_text("summary", summary, optional=False)
        if type(preserve_count) is not int:
            raise TypeError(f"preserve_count must be an int, not {type(preserve_count).__name__}")
        if preserve_count < 0:
            raise ValueError(f"preserve_count must be >= 0, got {preserve_count}")
        validate_session_id(session_id)
        with self._session(session_id) as s, s.locked(polite=True):
            # An older koda-files would read what a compaction line archives as active: refuse it.
            layout = lambda: self._ensure_layout(COMPACTION_LAYOUT)  # noqa: E731
            archived = compact_lines(s, summary, preserve_count, self._ids.take, s.header_flag.get(), layout)
            if archived:
                s.forget_appends()
            return archived

    def compacted_stats(self) -> CompactedStats:
        """Archived messages over all sessions: count, sessions, content bytes, oldest `compacted_at`.

        From the root summary: a hand edit to a session's log counts once the store next writes
        to that session (or after `reindex`).
        """
        return self._whole.compacted_stats()

    def purge_compacted(self, min_age_days: int) -> int:
        """Delete archived messages compacted more than `min_age_days` days ago (0: all); returns how many."""
        if type(min_age_days) is not int:
            raise TypeError(f"min_age_days must be an int, not {type(min_age_days).__name__}")
        if min_age_days < 0:
            raise ValueError(f"min_age_days must be >= 0, got {min_age_days}")
        ids = iter(self._session_ids())
        taking = threading.Lock()

        def worker() -> int:
            # Workers take sessions one at a time: nothing is queued per session, so memory does
            # not grow with the store, and the check of one session overlaps another's rewrite.
            total = 0
            while True:
                with taking:
                    sid = next(ids, None)
                if sid is None:
                    return total
                if self._index.may_have_archived(sid):
                    total += self._purge_one(sid, min_age_days)

        # Each session is rewritten on its own (temp file, fsync, rename); run them side by
        # side so the file system can commit their fsyncs together instead of one by one.
        with ThreadPoolExecutor(max_workers=_PURGE_THREADS) as pool:
            runs = [pool.submit(worker) for _ in range(_PURGE_THREADS)]
            return sum(run.result() for run in runs)

    def _purge_one(self, session_id: str, min_age_days: int) -> int:
        with self._session(session_id) as s:
            try:
                with s.locked(polite=True):
                    n = purge_lines(s, min_age_days)
            except KodaFilesError as exc:
                log.warning("%s; session skipped by purge", exc)
                return 0
            if n:
                s.forget_appends()
            return n

    # ── metadata and todo ──

    def get_metadata(self, session_id: str, key: str) -> str | None:
        """The value stored under `key`, or None; the key "todo" reads `todo.md`."""
        check_text("key", key, optional=False)
        if key == _TODO_KEY:
            return self.get_todo(session_id)
        with self._session(session_id) as s:
            if not s.is_dir():
                return None
            value = s.header().get("metadata", {}).get(key)
        return value if isinstance(value, str) else None

    def set_metadata(self, session_id: str, key: str, value: str) -> None:
        """Insert or replace `key`; the key "todo" writes `todo.md`. Atomic."""
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

        self._update_header(session_id, change)

    def get_todo(self, session_id: str) -> str | None:
        """The text of `todo.md` as it is now (edited by hand or not); None if there is none."""
        with self._session(session_id) as s:
            if not s.is_dir():
                return None
            return s.read_todo()

    def set_todo(self, session_id: str, content: str) -> None:
        """Replace `todo.md` with `content`, byte for byte. Atomic."""
        check_text("content", content, optional=False)
        with self._session(session_id) as s, s.locked():
            s.write_todo(content)

    def delete_todo(self, session_id: str) -> bool:
        """Remove `todo.md`; False if there was none (or no such session)."""
        with self._session(session_id) as s:
            if not s.is_dir():
                return False
            with s.locked():
                return s.remove_todo()

    # ── integrity ──

    def check(self, repair: bool = False) -> CheckReport:
        """Report damage and crash leftovers per session; `repair=True` quarantines and cleans them."""
        return check_store(self, repair)

    def reindex(self) -> None:
        """Rebuild `.index` and `.summary` from every session's files (after hand edits to logs)."""
        self._whole.rebuild()


# What the `last_*` queries pick from messages walked newest first (None: look further back).
def _user_content(m: Message) -> str | None:
    return m.content if m.role is Role.USER else None


def _assistant_content(m: Message) -> str | None:
    return m.content if m.role is Role.ASSISTANT else None


def _pending(m: Message) -> bool | None:
    return None if m.compacted_at is not None else (m.role is Role.ASSISTANT and has_tool_calls(m))


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
