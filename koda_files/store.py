"""`FileStore`: the Persistence contract over a directory of plain files (layout: see README).

One class, its methods grouped by concept; the work is done by small collaborators it owns,
all standing on one `StoreRoot` (root directory, session handles, ids, index, root summary).
Writes to one session are serialised by that session's lock; reads take no lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._format.codec import check_int, check_text, encode_new, encode_record_line, project_root_text
from ._format.layout import MESSAGES, METADATA, SESSION_ID_PATTERN, is_store, utc_now, validate_session_id
from ._session.scan import pick_assistant_content, pick_pending, pick_user_content, user_messages
from ._store.browse import Browse
from ._store.events import Events
from ._store.fork import Fork
from ._store.kv import KeyValue
from ._store.maintenance import Maintenance
from ._store.metadata import Metadata
from ._store.protocol import RoleLike, StrPath
from ._store.redact import Redact
from ._store.resume import Resume
from ._store.root import StoreRoot, check_limit
from ._store.search import Query
from ._store.usage import sum_usage, usage_by_agent
from .types import (
    CheckReport,
    CompactedStats,
    Durability,
    Interruption,
    Message,
    PurgePreview,
    Role,
    SearchHit,
    SessionEvent,
    SessionInfo,
    SessionOverview,
    SessionUsage,
    StoreStats,
    TokenUsage,
)

__all__ = ["FileStore"]



class FileStore:
    """Sessions as directories of plain files under `root`.

    `root` defaults to `$KODA_FILES_DIR`, else the platform user data dir for "koda".
    `durability="flush"` hands every write to the OS before returning (survives a killed
    process); `"fsync"` also forces it to disk (survives power loss). Rewrites are atomic in both.
    `tracks_completion=True`: this caller marks every finished assistant message, so every
    session it creates tracks completion from its first turn (see the README).
    """

    def __init__(
        self, root: StrPath | None = None, *, durability: Durability = "flush", tracks_completion: bool = False
    ) -> None:
        self._root = StoreRoot(root, durability=durability, tracks_completion=tracks_completion)
        self._resume = Resume(self._root)
        self._metadata = Metadata(self._root)
        self._browse = Browse(self._root, self._resume)
        self._maintenance = Maintenance(self._root, self._browse)
        self._events = Events(self._root)
        self._kv = KeyValue(self._root)
        self._fork = Fork(self._root)
        self._redact = Redact(self._root)

    @property
    def root(self) -> Path:
        """The store's root directory (absolute)."""
        return self._root.root

    @property
    def durability(self) -> Durability:
        return self._root.durability

    @property
    def tracks_completion(self) -> bool:
        return self._root.tracks_completion

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r}, durability={self.durability!r})"

    def close(self) -> None:
        """Close cached descriptors; the store stays usable and reopens them on demand."""
        self._root.close()
        self._kv.close()

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── sessions ──

    def create_session(self, agent_name: str, project_root: StrPath | None = None) -> str:
        """Create a session directory atomically (it appears whole or not at all); returns its id.

        `project_root` None: a session of no project (`"project_root": null`), listed with every
        project's. Once the root has seen a completion mark (or with `tracks_completion=True`),
        the session is created tracking completion.
        """
        check_text("agent_name", agent_name, optional=False)
        return self._root.create_session(agent_name, project_root_text(project_root), utc_now())

    def list_sessions(self, limit: int, project_root: StrPath | None = None) -> list[SessionInfo]:
        """Sessions of `project_root` and sessions without one, newest first, at most `limit`.

        `project_root` None: the sessions of every project. From the root summary (rows
        re-checked against their files); past its 50 newest per project, or when a row changed
        by hand, from every session's files.
        """
        check_limit(limit)
        wanted = project_root_text(project_root)
        return self._browse.list_sessions(limit, wanted) if limit else []

    def session_ids(self) -> list[str]:
        """Ids of every session under the root, sorted (UUIDv7 ids sort by creation); stray entries left out."""
        return self._browse.session_ids()

    def delete_session(self, session_id: str) -> bool:
        """Remove the session directory and all in it; False if there was none. Never follows links."""
        with self._root.session(session_id) as s:
            return s.remove()

    # ── messages ──

    def insert_message(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None = None,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        usage: TokenUsage | None = None,
        *,
        agent_name: str | None = None,
    ) -> int:
        """Append a message (`agent_name` None: the main agent's); returns its id.

        Raises `SessionNotFoundError` (creating nothing) if the session does not exist.
        """
        return self.insert_message_with_agent(session_id, role, content, tool_calls, tool_call_id, usage, agent_name)

    def insert_message_with_agent(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None = None,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        usage: TokenUsage | None = None,
        agent_name: str | None = None,
    ) -> int:
        """`insert_message` with koda's positional order: the agent name last."""
        validate_session_id(session_id)
        line = encode_new(Role.parse(role), content, tool_calls, tool_call_id, usage, agent_name, utc_now())
        # The hot path of the store: no context managers, one lock, one write.
        root = self._root
        handle = root.acquire(session_id)
        try:
            handle.lock(appending=True)
            try:
                msg_id = handle.append(line, root.ids.take)
            finally:
                handle.unlock()
            root.note_insert(session_id, msg_id)
            return msg_id
        finally:
            root.release(handle)

    def insert_tool_message_with_full(self, session_id: str, content: str, tool_call_id: str, full_content: str) -> int:
        """Append a tool result answering `tool_call_id`: `content` as shown, `full_content` whole; its id."""
        return self._fork.insert_tool_message_with_full(session_id, content, tool_call_id, full_content)

    def copy_messages_into_session(self, dest_session_id: str, messages: Sequence[Message]) -> None:
        """Append copies of `messages` (new ids, no usage, assistants born complete) in one all-or-nothing write."""
        self._fork.copy_messages_into_session(dest_session_id, messages)

    def load_context(self, session_id: str) -> list[Message]:
        """Active (not archived) messages in conversation order, sanitised for the model."""
        with self._root.session(session_id) as s:
            return s.load_context()

    def load_all_messages(self, session_id: str) -> list[Message]:
        """Every message, archived ones included, in conversation order, unsanitised."""
        with self._root.session(session_id) as s, s.cache_lock:
            return list(s.refresh(whole=True).messages)

    def recent_user_messages(self, limit: int) -> list[str]:
        """Non-empty user messages across all sessions, newest first, at most `limit`.

        The newest 100 come from the root summary (each read again from its log); more, or one
        changed by hand, are found by reading the logs newest first.
        """
        check_limit(limit)
        if limit == 0:
            return []
        answer = self._root.summary.recent_user_messages(limit)
        if answer is not None:
            return answer
        return user_messages(self._root.sessions_dir, self._root.session_ids(), limit)

    def last_assistant_message(self, session_id: str) -> str:
        """Content of the last assistant message with content; "" if none."""
        return self._root.newest(session_id, pick_assistant_content) or ""

    def last_user_message(self, session_id: str) -> str:
        """Content of the last user message with content; "" if none."""
        return self._root.newest(session_id, pick_user_content) or ""

    def has_pending_tool_calls(self, session_id: str) -> bool:
        """True when the last active message is an assistant message with tool calls."""
        return bool(self._root.newest(session_id, pick_pending))

    def mark_message_complete(self, message_id: int) -> None:
        """Set message `message_id`'s `completed_at` to now (an annotation line; again: no change).

        `MessageNotFoundError` if no session holds it.
        """
        self._resume.mark_message_complete(message_id)

    def update_message_thinking_content(self, message_id: int, thinking_content: str) -> None:
        """Set the model's reasoning behind message `message_id` (an annotation line; the last wins).

        `MessageNotFoundError` if no session holds it.
        """
        self._resume.update_message_thinking_content(message_id, thinking_content)

    def clear_message_content(self, message_ids: Sequence[int], replacement: str) -> None:
        """Replace these messages' content by `replacement`, leaving no copy of the old text.

        Ids found in no session raise `MessageNotFoundError` and nothing changes.
        """
        self._redact.clear_message_content(message_ids, replacement)

    # ── usage ──

    def session_token_usage(self, session_id: str) -> SessionUsage:
        """Totals over messages (archived included) with prompt or completion tokens."""
        return sum_usage(self.load_all_messages(session_id))

    def session_usage_by_agent(self, session_id: str) -> list[tuple[str, SessionUsage]]:
        """Usage per agent ("main" for none), largest prompt + completion first, ties by name."""
        return usage_by_agent(self.load_all_messages(session_id))

    # ── resume: idle time, interruption ──

    def get_session_idle_secs(self, session_id: str) -> int | None:
        """Whole seconds since the last insert or `load_context` of the session; None if never."""
        return self._resume.get_session_idle_secs(session_id)

    def session_last_accessed(self, session_id: str) -> str | None:
        """When the session was last accessed (see `get_session_idle_secs`), as ISO 8601 UTC; or None."""
        return self._resume.session_last_accessed(session_id)

    def set_session_last_accessed(self, session_id: str, when: str) -> None:
        """Record an access at `when` (ISO 8601, e.g. from an import), not now."""
        self._resume.set_session_last_accessed(session_id, when)

    def detect_interruption(self, session_id: str) -> Interruption | None:
        """How the context the model would get ends: an unanswered prompt, tool results, or None."""
        return self._resume.detect_interruption(session_id)

    # ── metadata: key/value, title, mode, todo; events and the key-value store ──

    def get_metadata(self, session_id: str, key: str) -> str | None:
        """The value stored under `key`, or None; the key "todo" reads `todo.md`."""
        return self._metadata.get(session_id, key)

    def set_metadata(self, session_id: str, key: str, value: str) -> None:
        """Insert or replace `key`; the key "todo" writes `todo.md`. Atomic."""
        self._metadata.set(session_id, key, value)

    def set_session_title(self, session_id: str, title: str) -> None:
        """Set the session's title (key `"title"` of `metadata.json`). Atomic."""
        self._metadata.set_text(session_id, "title", title)

    def get_session_title(self, session_id: str) -> str | None:
        """The session's title, or None (also for a session that does not exist)."""
        return self._metadata.get_text(session_id, "title")

    def set_session_mode(self, session_id: str, mode: str) -> None:
        """Set the approval mode a resumed session restores (key `"mode"` of `metadata.json`). Atomic."""
        self._metadata.set_text(session_id, "mode", mode)

    def get_session_mode(self, session_id: str) -> str | None:
        """The session's approval mode, or None (also for a session that does not exist)."""
        return self._metadata.get_text(session_id, "mode")

    def get_todo(self, session_id: str) -> str | None:
        """The text of `todo.md` as it is now (edited by hand or not); None if there is none."""
        return self._metadata.get_todo(session_id)

    def set_todo(self, session_id: str, content: str) -> None:
        """Replace `todo.md` with `content`, byte for byte. Atomic."""
        self._metadata.set_todo(session_id, content)

    def todo_path(self, session_id: str) -> Path:
        """Where the session's `todo.md` is (or would be), for editing it by hand.

        Raises `SessionNotFoundError` if the session does not exist; the file itself may not.
        """
        return self._metadata.todo_path(session_id)

    def delete_todo(self, session_id: str) -> bool:
        """Remove `todo.md`; False if there was none (or no such session)."""
        return self._metadata.delete_todo(session_id)

    def insert_session_event(
        self, session_id: str, kind: str, payload: str, parent_tool_call_id: str | None = None
    ) -> int:
        """Append an event to the session's `events.jsonl`; returns its id. `SessionNotFoundError` if absent."""
        return self._events.insert_session_event(session_id, kind, payload, parent_tool_call_id)

    def load_session_events(self, session_id: str) -> list[SessionEvent]:
        """The session's events in insertion order; [] for a session without any (or absent)."""
        return self._events.load_session_events(session_id)

    def kv_get(self, key: str) -> str | None:
        """The value stored under `key` in the root's `kv.json`, or None."""
        return self._kv.kv_get(key)

    def kv_set(self, key: str, value: str) -> None:
        """Insert or replace `key`. Atomic: readers see the old file or the new one."""
        self._kv.kv_set(key, value)

    def kv_delete(self, key: str) -> None:
        """Remove `key`; nothing happens if it is not there."""
        self._kv.kv_delete(key)

    def kv_list_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """(key, value) pairs whose key starts with `prefix` (case-sensitive, no wildcards), by key."""
        return self._kv.kv_list_prefix(prefix)

    # ── compaction and purge ──

    def compact_session(self, session_id: str, summary: str, preserve_count: int) -> int:
        """Archive all active messages but the last `preserve_count`; summary and hint go before them.

        Returns how many were archived; 0 (and the file untouched) when there is nothing to archive.
        """
        return self._maintenance.compact(session_id, summary, preserve_count)

    def compacted_stats(self) -> CompactedStats:
        """Archived messages over all sessions: count, sessions, content bytes, oldest `compacted_at`.

        From the root summary: a hand edit to a session's log counts once the store next writes
        to that session (or after `reindex`).
        """
        return self._maintenance.compacted_stats()

    def purge_compacted(self, min_age_days: int) -> int:
        """Delete archived messages compacted more than `min_age_days` days ago (0: all); returns how many."""
        return self._maintenance.purge(min_age_days)

    def purge_preview(self, min_age_days: int) -> PurgePreview:
        """What `purge_compacted(min_age_days)` would delete now (messages, bytes, sessions); changes nothing."""
        return self._maintenance.purge_preview(min_age_days)

    # ── looking over the store ──

    def session_overview(self, session_id: str) -> SessionOverview | None:
        """One session's overview; None if it does not exist (or its header is unreadable)."""
        return self._browse.session_overview(session_id)

    def session_overviews(self, project_root: StrPath | None = None) -> list[SessionOverview]:
        """Every session (or those of `project_root` and those without a project), last activity first."""
        return self._browse.session_overviews(project_root)

    def search(
        self,
        pattern: str,
        *,
        regex: bool = False,
        tools: bool = False,
        archived: bool = False,
        roles: frozenset[str] | None = None,
        project_root: StrPath | None = None,
        since: str | None = None,
        progress: Any = None,
    ) -> Iterator[SearchHit]:
        """Messages whose text matches, newest session (by last activity) first, last message first.

        Text is `content` of system, user and assistant messages; `tools` adds tool results and
        `tool_calls`; `archived` adds archived messages. Lines that are not messages are skipped.
        """
        query = Query.make(pattern, regex, tools, archived, roles, since)
        return self._browse.search(query, project_root, progress)

    def disk_usage(self) -> int:
        """Bytes of the store's own files (marker, `.gitignore`, `.ids`, derived files, `kv.json`, `sessions/`).

        Not a `.git` or anything else kept beside them.
        """
        return self._browse.disk_usage()

    def stats(self) -> StoreStats:
        """Sessions, messages (archived included), the store's own bytes on disk, and `compacted_stats()`."""
        return self._maintenance.stats()

    # ── for importers ──

    def reserve_ids(self, first: int, count: int) -> int:
        """Reserve `count` consecutive message ids at `first` or above, never handed out again; the first.

        For tools that copy another store's history keeping its ids: the block starts at `first`
        unless ids there may have been handed out already, then higher.
        """
        check_int("first", first)
        if type(count) is not int or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        self._root.ensure_root()
        return self._root.ids.take(first, count)

    def restore_session(
        self,
        header: Mapping[str, Any],
        records: Sequence[Mapping[str, Any]],
        *,
        files: Mapping[str, bytes] | None = None,
        replace: bool = False,
    ) -> None:
        """Write a whole session as given, appearing at once: for tools that import history.

        `header` is `metadata.json` (its `"id"` names the session), `records` the lines of
        `messages.jsonl` in order (each a message or annotation as the README describes; ids
        from `reserve_ids`), `files` other files by name (`todo.md`, `events.jsonl`). A session
        of that id raises `FileExistsError` unless `replace`. A record that is not a message
        raises `ValueError` naming its index, and nothing is written.
        """
        session_id = validate_session_id(header.get("id"))
        for name in files or {}:
            # A plain entry name (the rule of a session id), beside the log, not a path.
            if not SESSION_ID_PATTERN.fullmatch(name) or name in (MESSAGES, METADATA):
                raise ValueError(f"session {session_id!r}: {name!r} is not a file restore_session may write")
        lines = [encode_record_line(record, session_id, index) for index, record in enumerate(records)]
        self._root.restore_session(dict(header), {MESSAGES: b"".join(lines), **(files or {})}, replace)

    # ── integrity ──

    def check(self, *, repair: bool = False) -> CheckReport:
        """Report damage and crash leftovers per session; `repair=True` quarantines and cleans them."""
        return self._maintenance.check(repair)

    def reindex(self) -> None:
        """Rebuild `.index` and `.summary` from every session's files (after hand edits to logs)."""
        self._maintenance.reindex()

    # ── for tools: what the `koda-files` command and the koda.db export need beyond koda's contract ──

    def is_store(self) -> bool:
        """True when `root` is a store already (it holds the layout marker or `sessions/`); reads only."""
        return is_store(self.root)

    def session_header(self, session_id: str) -> dict[str, Any]:
        """A copy of the session's `metadata.json`, every field kept; `SessionNotFoundError` if absent,
        `CorruptFileError` if it does not parse."""
        return self._browse.session_header(session_id)

    def raw_lines(self, session_id: str, *, archived: bool = False) -> list[bytes]:
        """The lines of `messages.jsonl` as stored, each ending in a newline; without `archived`, the
        active ones only (after the last compaction line, not marked archived). `SessionNotFoundError` if absent."""
        return self._browse.raw_lines(session_id, archived)
