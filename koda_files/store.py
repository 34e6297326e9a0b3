"""`FileStore`: the Persistence contract over a directory of plain files.

Layout: `<root>/koda-files.json` (layout version), `<root>/.ids` (id counter) and
`<root>/sessions/<id>/` with `messages.jsonl`, `metadata.json` and `todo.md`. Writes to one
session are serialised by that session's lock; reads take no lock.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .check import CheckReport, check_store
from .codec import check_int, check_text, encode_completion, encode_new
from .errors import KodaFilesError, SessionNotFoundError
from .fileops import atomic_write, fsync_dir, make_dir, read_file, remove_tree, rename, touch
from .ids import IdAllocator
from .index import SessionIndex
from .layout import (
    ACCESS,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    MESSAGES,
    METADATA,
    SESSION_ID_PATTERN,
    SESSIONS,
    default_root,
    new_session_id,
    parse_time,
    utc_now,
    validate_session_id,
)
from .messagelog import read_backwards
from .protocol import RoleLike, StrPath
from .rewrite import compact_lines, purge_lines
from .sanitize import has_tool_calls
from .scan import largest_id, user_messages
from .session import SessionDir, encode_header
from .types import CompactedStats, Interruption, Message, Role, SessionInfo, SessionUsage, TokenUsage
from .usage import sum_usage, usage_by_agent

__all__ = ["FileStore"]

log = logging.getLogger("koda_files")

_DURABILITY = ("flush", "fsync")
_TODO_KEY = "todo"
_MAX_HANDLES = 64
_PURGE_THREADS = 8
_T = TypeVar("_T")


class FileStore:
    """Sessions as directories of plain files under `root`.

    `root` defaults to `$KODA_FILES_DIR`, else the platform user data dir for "koda".
    `durability="flush"` hands every write to the OS before returning (survives a killed
    process); `"fsync"` also forces it to disk (survives power loss). Rewrites are atomic in both.
    """

    def __init__(self, root: StrPath | None = None, *, durability: str = "flush") -> None:
        if durability not in _DURABILITY:
            raise ValueError(f"durability must be 'flush' or 'fsync', not {durability!r}")
        self.root = Path(os.path.abspath(root if root is not None else default_root()))
        self.durability = durability
        self._sessions_dir = self.root / SESSIONS
        self._handles: OrderedDict[str, SessionDir] = OrderedDict()
        self._handles_lock = threading.Lock()
        self._ids = IdAllocator(self.root / ".ids", durability == "fsync", self._largest_id)
        self._index = SessionIndex(self.root)
        self._root_ready = False
        # (session, id) of this process's last insert: where `mark_message_complete` looks first.
        self._last_append: tuple[str, int] | None = None

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r}, durability={self.durability!r})"

    def close(self) -> None:
        """Close cached descriptors; the store stays usable and reopens them on demand."""
        with self._handles_lock:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()

    # ── plumbing ──

    def _acquire(self, session_id: str) -> SessionDir:
        """The handle of a session, marked in use so it is not evicted; pair with `_release`."""
        with self._handles_lock:
            handle = self._handles.get(session_id)
            if handle is None:
                handle = SessionDir(session_id, self._sessions_dir / session_id, self.durability == "fsync")
                self._handles[session_id] = handle
                self._evict()
            else:
                self._handles.move_to_end(session_id)
            handle.users += 1
        return handle

    @contextmanager
    def _session(self, session_id: str) -> Iterator[SessionDir]:
        validate_session_id(session_id)
        handle = self._acquire(session_id)
        try:
            yield handle
        finally:
            self._release(handle)

    def _release(self, handle: SessionDir) -> None:
        with self._handles_lock:
            handle.users -= 1

    def _evict(self) -> None:
        # Keep descriptors and parsed logs for the sessions used last; others are closed.
        for key in list(self._handles)[: max(0, len(self._handles) - _MAX_HANDLES)]:
            if self._handles[key].users == 0:
                self._handles.pop(key).close()

    def _ensure_root(self) -> None:
        """Create the root, `sessions/` and the layout marker on first write; check the version."""
        if self._root_ready:
            return
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        marker = self.root / LAYOUT_FILE
        raw = read_file(marker)
        if raw is None:
            atomic_write(marker, [encode_header({"format": "koda-files", "layout": LAYOUT_VERSION})])
        else:
            self._check_layout(marker, raw)
        make_dir(self._sessions_dir)
        self._root_ready = True

    @staticmethod
    def _check_layout(marker: Path, raw: bytes) -> None:
        try:
            version = orjson.loads(raw).get("layout")
        except (orjson.JSONDecodeError, AttributeError):
            raise KodaFilesError(f"{marker} does not parse; expected a koda-files layout marker") from None
        if not isinstance(version, int) or version > LAYOUT_VERSION:
            raise KodaFilesError(
                f"{marker}: layout {version!r} is newer than this koda-files understands ({LAYOUT_VERSION})"
            )

    def _session_ids(self) -> list[str]:
        """Ids of the session directories under the root (dot-entries and symlinks left out)."""
        try:
            entries = list(os.scandir(self._sessions_dir))
        except FileNotFoundError:
            return []
        ids = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                log.warning("%s: not a session directory, ignored", entry.path)
                continue
            if SESSION_ID_PATTERN.fullmatch(entry.name) is None:
                log.warning("%s: not a valid session id, ignored", entry.path)
                continue
            ids.append(entry.name)
        return ids

    def _largest_id(self) -> int:
        return max((largest_id(self._sessions_dir / sid) for sid in self._session_ids()), default=0)

    # ── sessions ──

    def create_session(self, agent_name: str, project_root: StrPath) -> str:
        """Create a session directory atomically (it appears whole or not at all); returns its id."""
        check_text("agent_name", agent_name, optional=False)
        root_text = os.path.abspath(os.fspath(project_root))
        check_text("project_root", root_text, optional=False)
        self._ensure_root()
        session_id = new_session_id()
        header = {
            "agent_name": agent_name,
            "created_at": utc_now(),
            "id": session_id,
            "metadata": {},
            "project_root": root_text,
        }
        staging = self._sessions_dir / f".new-{session_id}"
        make_dir(staging)
        try:
            atomic_write(staging / METADATA, [encode_header(header)])
            atomic_write(staging / "messages.jsonl", [b""])
            rename(staging, self._sessions_dir / session_id)
        except BaseException:
            if staging.exists():
                remove_tree(staging)
            raise
        fsync_dir(self._sessions_dir)
        return session_id

    def list_sessions(self, limit: int, project_root: StrPath) -> list[SessionInfo]:
        """Sessions of `project_root` and sessions without one, newest first, at most `limit`."""
        _check_limit(limit)
        wanted = os.path.abspath(os.fspath(project_root))
        ids = self._session_ids()
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for sid in ids:
            header = self._index.header(sid)
            if header is None:
                continue
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
        return self.insert_message_with_agent(
            session_id, role, content, tool_calls, tool_call_id, usage, None
        )

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
            handle.lock()
            try:
                msg_id = handle.append(line, self._ids.take)
            finally:
                handle.mutex.release()
            self._last_append = (session_id, msg_id)
            return msg_id
        finally:
            self._release(handle)

    def _messages(self, session_id: str) -> list[Message]:
        with self._session(session_id) as s:
            return s.refresh().messages

    def load_context(self, session_id: str) -> list[Message]:
        """Active (not archived) messages in conversation order, sanitised for the model."""
        with self._session(session_id) as s:
            return s.load_context()

    def load_all_messages(self, session_id: str) -> list[Message]:
        """Every message, archived ones included, in conversation order, unsanitised."""
        return list(self._messages(session_id))

    def recent_user_messages(self, limit: int) -> list[str]:
        """Non-empty user messages across all sessions, newest first, at most `limit`."""
        _check_limit(limit)
        return user_messages(self._sessions_dir, self._session_ids(), limit)

    def _newest(self, session_id: str, pick: Callable[[Message], _T | None]) -> _T | None:
        """`pick` applied to messages last to first; the first answer that is not None."""
        validate_session_id(session_id)
        handle = self._acquire(session_id)  # the query path of every turn: no context managers
        try:
            messages = handle.newest_first()
            try:
                for m in messages:
                    answer = pick(m)
                    if answer is not None:
                        return answer
                return None
            finally:
                messages.close()
        finally:
            self._release(handle)

    def _last_content(self, session_id: str, role: Role) -> str:
        content = self._newest(session_id, lambda m: m.content if m.role is role else None)
        return content or ""

    def last_assistant_message(self, session_id: str) -> str:
        """Content of the last assistant message with content; "" if none."""
        return self._last_content(session_id, Role.ASSISTANT)

    def last_user_message(self, session_id: str) -> str:
        """Content of the last user message with content; "" if none."""
        return self._last_content(session_id, Role.USER)

    def has_pending_tool_calls(self, session_id: str) -> bool:
        """True when the last active message is an assistant message with tool calls."""
        pending = self._newest(
            session_id,
            lambda m: None if m.compacted_at is not None else (m.role is Role.ASSISTANT and has_tool_calls(m)),
        )
        return bool(pending)

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
        with self._session(session_id) as s, s.locked():
            archived = compact_lines(s, summary, preserve_count, self._ids.take)
            if archived:
                s.forget_appends()
            return archived

    def compacted_stats(self) -> CompactedStats:
        """Archived messages over all sessions: count, sessions, content bytes, oldest `compacted_at`."""
        ids = self._session_ids()
        summaries = [self._index.summary(sid) for sid in ids]
        self._index.save(ids)
        with_archive = [s for s in summaries if s.archived]
        return CompactedStats(
            sum(s.archived for s in with_archive),
            len(with_archive),
            sum(s.archived_bytes for s in with_archive),
            min((s.oldest_archived for s in with_archive if s.oldest_archived), default=None),
        )

    def purge_compacted(self, min_age_days: int) -> int:
        """Delete archived messages compacted more than `min_age_days` days ago (0: all); returns how many."""
        if type(min_age_days) is not int:
            raise TypeError(f"min_age_days must be an int, not {type(min_age_days).__name__}")
        if min_age_days < 0:
            raise ValueError(f"min_age_days must be >= 0, got {min_age_days}")
        ids = self._session_ids()
        candidates = [sid for sid in ids if self._index.summary(sid).archived]
        self._index.save(ids)
        if not candidates:
            return 0
        # Each session is rewritten on its own (temp file, fsync, rename); run them side by
        # side so the file system can commit their fsyncs together instead of one by one.
        with ThreadPoolExecutor(max_workers=min(_PURGE_THREADS, len(candidates))) as pool:
            counts = list(pool.map(lambda sid: self._purge_one(sid, min_age_days), candidates))
        return sum(counts)

    def _purge_one(self, session_id: str, min_age_days: int) -> int:
        with self._session(session_id) as s:
            try:
                with s.locked():
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
        with self._session(session_id) as s, s.locked():
            header = s.header()
            meta = header.setdefault("metadata", {})
            if meta.get(key) == value:
                return
            meta[key] = value
            s.write_header(header)

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

    # ── titles, approval modes, idle time, completion, interruption ──

    def _get_header_text(self, session_id: str, name: str) -> str | None:
        with self._session(session_id) as s:
            if not s.is_dir():
                return None
            value = s.header().get(name)
        return value if isinstance(value, str) else None

    def _set_header_text(self, session_id: str, name: str, value: str) -> None:
        # The same locked, atomic rewrite of `metadata.json` as `set_metadata`.
        with self._session(session_id) as s, s.locked():
            header = s.header()
            if header.get(name) == value:
                return
            header[name] = value
            s.write_header(header)

    def set_session_title(self, session_id: str, title: str) -> None:
        """Set the session's title (key `"title"` of `metadata.json`). Atomic."""
        check_text("title", title, optional=False)
        self._set_header_text(session_id, "title", title)

    def get_session_title(self, session_id: str) -> str | None:
        """The session's title, or None (also for a session that does not exist)."""
        return self._get_header_text(session_id, "title")

    def set_session_mode(self, session_id: str, mode: str) -> None:
        """Set the approval mode a resumed session restores (key `"mode"` of `metadata.json`). Atomic."""
        check_text("mode", mode, optional=False)
        self._set_header_text(session_id, "mode", mode)

    def get_session_mode(self, session_id: str) -> str | None:
        """The session's approval mode, or None (also for a session that does not exist)."""
        return self._get_header_text(session_id, "mode")

    def _last_access_ns(self, session_id: str) -> int | None:
        # An insert (or a completion mark) moves the mtime of a non-empty messages.jsonl; a
        # load_context moves that of `.access`. A new session's log is empty: it does not count.
        validate_session_id(session_id)
        directory = f"{self._sessions_dir}/{session_id}"
        times = []
        with contextlib.suppress(OSError):
            st = os.stat(f"{directory}/{MESSAGES}", follow_symlinks=False)
            if st.st_size > 0:
                times.append(st.st_mtime_ns)
        with contextlib.suppress(OSError):
            times.append(os.stat(f"{directory}/{ACCESS}", follow_symlinks=False).st_mtime_ns)
        return max(times) if times else None

    def get_session_idle_secs(self, session_id: str) -> int | None:
        """Whole seconds since the last insert or `load_context` of the session; None if never."""
        last = self._last_access_ns(session_id)
        if last is None:
            return None
        return max(0, (time.time_ns() - last) // 1_000_000_000)

    def session_last_accessed(self, session_id: str) -> str | None:
        """When the session was last accessed (see `get_session_idle_secs`), as ISO 8601 UTC; or None."""
        last = self._last_access_ns(session_id)
        if last is None:
            return None
        seconds, nanos = divmod(last, 1_000_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"

    def set_session_last_accessed(self, session_id: str, when: str) -> None:
        """Record an access at `when` (ISO 8601, e.g. from an import), not now.

        Sets the mtime of `.access` and of a non-empty `messages.jsonl` to `when`, but never the
        latter to before its newest message's `created_at` (whole-store scans rely on that).
        """
        moment = parse_time(when) if isinstance(when, str) else None
        if moment is None:
            raise ValueError(f"not an ISO 8601 time: {when!r}")
        at_ns = int(moment.timestamp() * 1_000_000) * 1000
        with self._session(session_id) as s, s.locked():
            newest = next(iter(s.newest_first()), None)
            created = parse_time(newest.created_at or "") if newest is not None else None
            log_ns = max(at_ns, int(created.timestamp() * 1_000_000) * 1000) if created else at_ns
            with contextlib.suppress(FileNotFoundError):
                if os.stat(s.messages_path, follow_symlinks=False).st_size > 0:
                    os.utime(s.messages_path, ns=(log_ns, log_ns), follow_symlinks=False)
            touch(s.access_path)
            os.utime(s.access_path, ns=(at_ns, at_ns), follow_symlinks=False)

    def mark_message_complete(self, message_id: int) -> None:
        """Record that message `message_id` is complete: its `completed_at` becomes now.

        An annotation line is appended to its session's log (message lines are never edited in
        place). Marking a complete message again changes nothing. Fast for this process's last
        insert; otherwise sessions are searched newest first, each read backwards from its end.
        An id found in no session raises `KodaFilesError`.
        """
        check_int("message_id", message_id)
        stamp = utc_now()
        tried: set[str] = set()
        for sid in self._likely_sessions(message_id):
            if sid not in tried:
                tried.add(sid)
                if self._complete_in(sid, message_id, stamp):
                    return
        mtimes = []
        for sid in self._session_ids():
            if sid not in tried:
                with contextlib.suppress(OSError):
                    mtimes.append((os.stat(f"{self._sessions_dir}/{sid}/{MESSAGES}").st_mtime_ns, sid))
        for _, sid in sorted(mtimes, reverse=True):
            with contextlib.closing(read_backwards(self._sessions_dir / sid / MESSAGES, sid)) as newest_first:
                found = any(m.id == message_id for m in newest_first)
            if found and self._complete_in(sid, message_id, stamp):
                return
        raise KodaFilesError(f"message {message_id}: no such message in any session under {self._sessions_dir}")

    def _likely_sessions(self, message_id: int) -> list[str]:
        """Sessions known in memory to hold `message_id`: the last insert, then parsed logs."""
        out = []
        last = self._last_append
        if last is not None and last[1] == message_id:
            out.append(last[0])
        with self._handles_lock:
            out += [sid for sid, h in self._handles.items() if h.log.exists and message_id in h.log.where]
        return out

    def _complete_in(self, session_id: str, message_id: int, stamp: str) -> bool:
        """Mark the message complete if this session holds it (checked under its lock)."""
        with self._session(session_id) as s:
            try:
                with s.locked():
                    if s.log.exists:
                        log = s.refresh()
                        index = log.where.get(message_id)
                        found = None if index is None else log.messages[index]
                    else:
                        with contextlib.closing(s.newest_first()) as newest_first:
                            found = next((m for m in newest_first if m.id == message_id), None)
                    if found is None:
                        return False
                    if found.completed_at is None:
                        s.append_line(encode_completion(message_id, stamp))
                    return True
            except SessionNotFoundError:
                return False  # deleted meanwhile

    def detect_interruption(self, session_id: str) -> Interruption | None:
        """How the session was left: an unanswered prompt, an unanswered tool result, or None."""
        last = self._newest(session_id, lambda m: m if m.compacted_at is None else None)
        if last is None:
            return None
        if last.role is Role.USER:
            return Interruption("prompt", (last.content or "")[:80])
        if last.role is Role.TOOL:
            return Interruption("tool")
        return None

    # ── integrity ──

    def check(self, repair: bool = False) -> CheckReport:
        """Report damage and crash leftovers per session; `repair=True` quarantines and cleans them."""
        return check_store(self, repair)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _check_limit(limit: int) -> None:
    if type(limit) is not int:
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
