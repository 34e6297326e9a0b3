"""`AsyncFileStore`: the same store for asyncio code; each call runs in a worker thread.

Every public method of `FileStore` is here with the same parameters, as a coroutine (`close`
aside, which only closes descriptors); see `FileStore` for what each does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._store.protocol import RoleLike, StrPath
from .store import FileStore
from .types import (
    CheckReport,
    CompactedStats,
    Durability,
    Interruption,
    Message,
    PurgePreview,
    SearchHit,
    SessionEvent,
    SessionInfo,
    SessionOverview,
    SessionUsage,
    StoreStats,
    TokenUsage,
)

__all__ = ["AsyncFileStore"]


class AsyncFileStore:
    """`AsyncPersistence` over a `FileStore` (`sync`); file I/O never blocks the event loop.

    `async with AsyncFileStore(root) as store:` closes its descriptors on the way out; the store
    stays usable afterwards and reopens them on demand, as `FileStore` does.
    """

    def __init__(
        self, root: StrPath | None = None, *, durability: Durability = "flush", tracks_completion: bool = False
    ) -> None:
        self.sync = FileStore(root, durability=durability, tracks_completion=tracks_completion)

    def __repr__(self) -> str:
        return f"AsyncFileStore({str(self.root)!r}, durability={self.durability!r})"

    @property
    def root(self) -> Path:
        """The store's root directory, absolute."""
        return self.sync.root

    @property
    def durability(self) -> Durability:
        return self.sync.durability

    @property
    def tracks_completion(self) -> bool:
        return self.sync.tracks_completion

    def close(self) -> None:
        """Close cached descriptors (no file I/O to wait for, so not a coroutine)."""
        self.sync.close()

    async def __aenter__(self) -> AsyncFileStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ── sessions ──

    async def create_session(self, agent_name: str, project_root: StrPath | None = None) -> str:
        return await asyncio.to_thread(self.sync.create_session, agent_name, project_root)

    async def list_sessions(self, limit: int, project_root: StrPath | None = None) -> list[SessionInfo]:
        return await asyncio.to_thread(self.sync.list_sessions, limit, project_root)

    async def delete_session(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.sync.delete_session, session_id)

    async def insert_message(
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
        return await asyncio.to_thread(
            self.sync.insert_message, session_id, role, content, tool_calls, tool_call_id, usage, agent_name=agent_name
        )

    async def insert_message_with_agent(
        self,
        session_id: str,
        role: RoleLike,
        content: str | None = None,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        usage: TokenUsage | None = None,
        agent_name: str | None = None,
    ) -> int:
        return await asyncio.to_thread(
            self.sync.insert_message_with_agent,
            session_id, role, content, tool_calls, tool_call_id, usage, agent_name,
        )

    async def load_context(self, session_id: str) -> list[Message]:
        return await asyncio.to_thread(self.sync.load_context, session_id)

    async def load_all_messages(self, session_id: str) -> list[Message]:
        return await asyncio.to_thread(self.sync.load_all_messages, session_id)

    async def recent_user_messages(self, limit: int) -> list[str]:
        return await asyncio.to_thread(self.sync.recent_user_messages, limit)

    async def last_assistant_message(self, session_id: str) -> str:
        return await asyncio.to_thread(self.sync.last_assistant_message, session_id)

    async def last_user_message(self, session_id: str) -> str:
        return await asyncio.to_thread(self.sync.last_user_message, session_id)

    async def has_pending_tool_calls(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.sync.has_pending_tool_calls, session_id)

    async def session_token_usage(self, session_id: str) -> SessionUsage:
        return await asyncio.to_thread(self.sync.session_token_usage, session_id)

    async def session_usage_by_agent(self, session_id: str) -> list[tuple[str, SessionUsage]]:
        return await asyncio.to_thread(self.sync.session_usage_by_agent, session_id)

    async def compact_session(self, session_id: str, summary: str, preserve_count: int) -> int:
        return await asyncio.to_thread(self.sync.compact_session, session_id, summary, preserve_count)

    async def compacted_stats(self) -> CompactedStats:
        return await asyncio.to_thread(self.sync.compacted_stats)

    async def purge_compacted(self, min_age_days: int) -> int:
        return await asyncio.to_thread(self.sync.purge_compacted, min_age_days)

    async def purge_preview(self, min_age_days: int) -> PurgePreview:
        return await asyncio.to_thread(self.sync.purge_preview, min_age_days)

    async def get_metadata(self, session_id: str, key: str) -> str | None:
        return await asyncio.to_thread(self.sync.get_metadata, session_id, key)

    async def set_metadata(self, session_id: str, key: str, value: str) -> None:
        await asyncio.to_thread(self.sync.set_metadata, session_id, key, value)

    async def get_todo(self, session_id: str) -> str | None:
        return await asyncio.to_thread(self.sync.get_todo, session_id)

    async def set_todo(self, session_id: str, content: str) -> None:
        await asyncio.to_thread(self.sync.set_todo, session_id, content)

    async def todo_path(self, session_id: str) -> Path:
        return await asyncio.to_thread(self.sync.todo_path, session_id)

    async def delete_todo(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.sync.delete_todo, session_id)

    async def set_session_title(self, session_id: str, title: str) -> None:
        await asyncio.to_thread(self.sync.set_session_title, session_id, title)

    async def set_session_mode(self, session_id: str, mode: str) -> None:
        await asyncio.to_thread(self.sync.set_session_mode, session_id, mode)

    async def get_session_title(self, session_id: str) -> str | None:
        return await asyncio.to_thread(self.sync.get_session_title, session_id)

    async def get_session_mode(self, session_id: str) -> str | None:
        return await asyncio.to_thread(self.sync.get_session_mode, session_id)

    async def get_session_idle_secs(self, session_id: str) -> int | None:
        return await asyncio.to_thread(self.sync.get_session_idle_secs, session_id)

    async def session_last_accessed(self, session_id: str) -> str | None:
        return await asyncio.to_thread(self.sync.session_last_accessed, session_id)

    async def set_session_last_accessed(self, session_id: str, when: str) -> None:
        await asyncio.to_thread(self.sync.set_session_last_accessed, session_id, when)

    async def mark_message_complete(self, message_id: int) -> None:
        await asyncio.to_thread(self.sync.mark_message_complete, message_id)

    async def detect_interruption(self, session_id: str) -> Interruption | None:
        return await asyncio.to_thread(self.sync.detect_interruption, session_id)

    async def update_message_thinking_content(self, message_id: int, thinking_content: str) -> None:
        await asyncio.to_thread(self.sync.update_message_thinking_content, message_id, thinking_content)

    async def insert_tool_message_with_full(
        self, session_id: str, content: str, tool_call_id: str, full_content: str
    ) -> int:
        return await asyncio.to_thread(
            self.sync.insert_tool_message_with_full, session_id, content, tool_call_id, full_content
        )

    async def clear_message_content(self, message_ids: Sequence[int], replacement: str) -> None:
        await asyncio.to_thread(self.sync.clear_message_content, message_ids, replacement)

    async def copy_messages_into_session(self, dest_session_id: str, messages: Sequence[Message]) -> None:
        await asyncio.to_thread(self.sync.copy_messages_into_session, dest_session_id, messages)

    async def insert_session_event(
        self, session_id: str, kind: str, payload: str, parent_tool_call_id: str | None = None
    ) -> int:
        return await asyncio.to_thread(self.sync.insert_session_event, session_id, kind, payload, parent_tool_call_id)

    async def load_session_events(self, session_id: str) -> list[SessionEvent]:
        return await asyncio.to_thread(self.sync.load_session_events, session_id)

    async def kv_get(self, key: str) -> str | None:
        return await asyncio.to_thread(self.sync.kv_get, key)

    async def kv_set(self, key: str, value: str) -> None:
        await asyncio.to_thread(self.sync.kv_set, key, value)

    async def kv_delete(self, key: str) -> None:
        await asyncio.to_thread(self.sync.kv_delete, key)

    async def kv_list_prefix(self, prefix: str) -> list[tuple[str, str]]:
        return await asyncio.to_thread(self.sync.kv_list_prefix, prefix)

    # ── the whole store ──

    async def session_ids(self) -> list[str]:
        return await asyncio.to_thread(self.sync.session_ids)

    async def session_overview(self, session_id: str) -> SessionOverview | None:
        return await asyncio.to_thread(self.sync.session_overview, session_id)

    async def session_overviews(self, project_root: StrPath | None = None) -> list[SessionOverview]:
        return await asyncio.to_thread(self.sync.session_overviews, project_root)

    async def disk_usage(self) -> int:
        return await asyncio.to_thread(self.sync.disk_usage)

    async def search(
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
    ) -> list[SearchHit]:
        """Every hit of `FileStore.search`, in its order, as a list (`progress` is called from a worker thread)."""

        # Listing the sessions and reading the logs both happen in the worker thread.
        def run() -> list[SearchHit]:
            return list(
                self.sync.search(
                    pattern,
                    regex=regex,
                    tools=tools,
                    archived=archived,
                    roles=roles,
                    project_root=project_root,
                    since=since,
                    progress=progress,
                )
            )

        return await asyncio.to_thread(run)

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.sync.stats)

    async def is_store(self) -> bool:
        return await asyncio.to_thread(self.sync.is_store)

    async def session_header(self, session_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.session_header, session_id)

    async def raw_lines(self, session_id: str, *, archived: bool = False) -> list[bytes]:
        return await asyncio.to_thread(self.sync.raw_lines, session_id, archived=archived)

    async def reserve_ids(self, first: int, count: int) -> int:
        return await asyncio.to_thread(self.sync.reserve_ids, first, count)

    async def restore_session(
        self,
        header: Mapping[str, Any],
        records: Sequence[Mapping[str, Any]],
        *,
        files: Mapping[str, bytes] | None = None,
        replace: bool = False,
    ) -> None:
        await asyncio.to_thread(self.sync.restore_session, header, records, files=files, replace=replace)

    async def check(self, *, repair: bool = False) -> CheckReport:
        return await asyncio.to_thread(self.sync.check, repair=repair)

    async def reindex(self) -> None:
        await asyncio.to_thread(self.sync.reindex)
