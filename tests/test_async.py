"""AsyncFileStore: every method, run off the event loop, answering as the sync store does.

No pytest plugin: each test drives its coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _helpers import todo_path, tool_calls_json

from koda_files import (
    AsyncFileStore,
    AsyncPersistence,
    FileStore,
    InvalidSessionIdError,
    Role,
    SessionNotFoundError,
    SessionUsage,
    TokenUsage,
)


def test_async_store_runs_every_method_like_the_sync_store(root: Path, tmp_path: Path) -> None:
    sync = FileStore(root)
    proj = tmp_path / "proj"

    async def scenario() -> None:
        a = AsyncFileStore(root)
        assert isinstance(a, AsyncPersistence)
        sid = await a.create_session("koda", proj)
        other = await a.create_session("helper", proj)
        assert [i.id for i in sync.list_sessions(10, proj)] == [other, sid]
        assert await a.list_sessions(10, proj) == sync.list_sessions(10, proj)
        assert await a.list_sessions(0, proj) == []

        ids = [
            await a.insert_message(sid, Role.USER, "hello"),
            await a.insert_message(
                sid, "assistant", None, tool_calls_json("c1"), None, TokenUsage(3, 4, 5, 6, 7)
            ),
            await a.insert_message_with_agent(sid, Role.TOOL, "result", None, "c1", TokenUsage(1, 1), "sub"),
            await a.insert_message(sid, Role.ASSISTANT, "done"),
            await a.insert_message(sid, Role.ASSISTANT, "calling again", tool_calls_json("c2")),
        ]
        assert [m.id for m in sync.load_all_messages(sid)] == ids
        assert await a.load_all_messages(sid) == sync.load_all_messages(sid)
        assert await a.load_context(sid) == sync.load_context(sid)
        assert [m.content for m in await a.load_context(sid)] == ["hello", None, "result", "done"]
        assert await a.recent_user_messages(5) == sync.recent_user_messages(5) == ["hello"]
        assert await a.last_assistant_message(sid) == sync.last_assistant_message(sid) == "calling again"
        assert await a.last_user_message(sid) == sync.last_user_message(sid) == "hello"
        assert await a.has_pending_tool_calls(sid) is sync.has_pending_tool_calls(sid) is True
        assert (
            await a.session_token_usage(sid)
            == sync.session_token_usage(sid)
            == SessionUsage(4, 5, 5, 6, 7, 2)
        )
        assert await a.session_usage_by_agent(sid) == sync.session_usage_by_agent(sid)
        assert [name for name, _ in await a.session_usage_by_agent(sid)] == ["main", "sub"]

        assert await a.compact_session(sid, "summary", 1) == 4
        assert sync.load_context(sid)[0].content == "summary"
        assert await a.load_context(sid) == sync.load_context(sid)
        stats = await a.compacted_stats()
        assert stats == sync.compacted_stats()
        assert stats.message_count == 4 and stats.session_count == 1
        assert await a.purge_compacted(0) == 4
        assert sync.compacted_stats().message_count == 0

        await a.set_metadata(sid, "model", "m1")
        assert sync.get_metadata(sid, "model") == "m1"
        assert await a.get_metadata(sid, "model") == "m1"
        await a.set_todo(sid, "- [ ] async")
        assert sync.get_todo(sid) == "- [ ] async"
        assert await a.get_todo(sid) == "- [ ] async"
        assert await a.get_metadata(sid, "todo") == "- [ ] async"

        assert await a.delete_session(other) is True
        assert await a.delete_session(other) is False
        assert [i.id for i in sync.list_sessions(10, proj)] == [sid]

    asyncio.run(scenario())


def test_async_store_raises_the_sync_errors(astore: AsyncFileStore, tmp_path: Path) -> None:
    async def scenario() -> None:
        a = astore
        sid = await a.create_session("koda", tmp_path)
        with pytest.raises(InvalidSessionIdError):
            await a.load_context("../escape")
        with pytest.raises(InvalidSessionIdError):
            await a.insert_message("a/b", Role.USER, "x")
        with pytest.raises(SessionNotFoundError):
            await a.insert_message("missing-session", Role.USER, "x")
        with pytest.raises(SessionNotFoundError):
            await a.set_todo("missing-session", "x")
        with pytest.raises(ValueError, match="wizard"):
            await a.insert_message(sid, "wizard", "x")
        with pytest.raises(ValueError):
            await a.compact_session(sid, "s", -1)
        with pytest.raises(ValueError):
            await a.recent_user_messages(-1)
        assert await a.load_all_messages(sid) == []
        assert await a.load_context("missing-session") == []
        assert await a.get_todo("missing-session") is None

    asyncio.run(scenario())


def test_async_methods_are_coroutine_functions() -> None:
    names = [n for n, _ in inspect.getmembers(AsyncPersistence, inspect.isfunction) if not n.startswith("_")]
    assert len(names) == 36  # the 20 of the seed trait, 6 for resuming, 10 of koda's newest storage
    for name in names:
        assert inspect.iscoroutinefunction(getattr(AsyncFileStore, name)), name


_WATCHED_OS = ("open", "stat", "lstat", "scandir", "listdir", "mkdir", "replace", "rename", "unlink", "fsync")


@contextmanager
def _record_fs_threads() -> Iterator[list[int]]:
    """Record the thread of every file-system call made through `os`, `open` and `io.open`."""
    seen: list[int] = []

    def spy(func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append(threading.get_ident())
            return func(*args, **kwargs)

        return wrapper

    with pytest.MonkeyPatch.context() as mp:
        for name in _WATCHED_OS:
            mp.setattr(os, name, spy(getattr(os, name)))
        mp.setattr(builtins, "open", spy(builtins.open))
        mp.setattr(io, "open", spy(io.open))
        yield seen


def test_async_store_does_its_file_work_off_the_event_loop(root: Path, tmp_path: Path) -> None:
    a = AsyncFileStore(root)
    loop_thread: list[int] = []

    async def scenario() -> None:
        loop_thread.append(threading.get_ident())
        sid = await a.create_session("koda", tmp_path)
        await a.insert_message(sid, Role.USER, "hi")
        await a.insert_message(sid, Role.ASSISTANT, "there", None, None, TokenUsage(1, 2))
        await a.load_context(sid)
        await a.list_sessions(5, tmp_path)
        await a.set_todo(sid, "t")
        await a.get_todo(sid)
        await a.compact_session(sid, "s", 0)
        await a.purge_compacted(0)
        await a.delete_session(sid)

    with _record_fs_threads() as seen:
        asyncio.run(scenario())
    assert seen, "no file-system call was observed at all"
    assert loop_thread[0] not in seen, "the event loop thread did file-system work"


def test_async_store_concurrent_calls_lose_nothing(root: Path, tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        a = AsyncFileStore(root)
        sid = await a.create_session("koda", tmp_path)
        ids = await asyncio.gather(*(a.insert_message(sid, Role.USER, f"m{i}") for i in range(30)))
        msgs = await a.load_all_messages(sid)
        assert sorted(m.id for m in msgs) == sorted(ids)
        assert sorted(m.content or "" for m in msgs) == sorted(f"m{i}" for i in range(30))
        assert [m.id for m in msgs] == sorted(m.id for m in msgs)
        return list(ids)

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 30


def test_delete_todo_removes_the_file_once_sync_and_async(root: Path) -> None:
    store = FileStore(root)
    sid = store.create_session("main", "/p")
    store.set_todo(sid, "- [ ] a\n")
    todo = todo_path(root, sid)
    assert store.delete_todo(sid) is True and not todo.exists() and store.get_todo(sid) is None
    assert store.delete_todo(sid) is False
    astore = AsyncFileStore(root)
    store.set_todo(sid, "- [ ] b\n")
    assert asyncio.run(astore.delete_todo(sid)) is True and not todo.exists()
    assert asyncio.run(astore.delete_todo(sid)) is False
    assert store.delete_todo("no-such-session") is False
