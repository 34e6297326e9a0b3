"""AsyncFileStore mirrors FileStore: every public method, with the same parameters, really run.

The list of methods is taken from `FileStore` when the tests run, so a method added there
without its coroutine here fails `test_async_store_has_every_public_method_of_the_sync_store`.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _helpers import messages_path, todo_path

from koda_files import (
    AsyncFileStore,
    CheckReport,
    Durability,
    FileStore,
    PurgePreview,
    Role,
    SessionNotFoundError,
    StoreStats,
)

_T = TypeVar("_T")

# Methods that stay plain functions on the async store: they do no file I/O worth a thread.
_NOT_COROUTINES = {"close"}


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: f for name, f in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def _shape(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """Each parameter's name, kind (positional, keyword-only, ...) and default."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def _async_return(sync_return: Any) -> Any:
    """What the coroutine returns for a sync method returning `sync_return`: an iterator becomes a list."""
    if typing.get_origin(sync_return) is Iterator:
        return list[typing.get_args(sync_return)]  # type: ignore[misc]
    return sync_return


def test_async_store_has_every_public_method_of_the_sync_store() -> None:
    sync_methods = _public_methods(FileStore)
    async_methods = _public_methods(AsyncFileStore)
    assert len(sync_methods) > 40  # the enumeration found the store's methods, not nothing
    missing = sorted(set(sync_methods) - set(async_methods))
    assert missing == [], f"AsyncFileStore lacks {missing}"
    for name, sync_f in sync_methods.items():
        async_f = async_methods[name]
        sync_sig, async_sig = inspect.signature(sync_f), inspect.signature(async_f)
        assert _shape(async_sig) == _shape(sync_sig), name
        sync_hints, async_hints = typing.get_type_hints(sync_f), typing.get_type_hints(async_f)
        assert {k: v for k, v in async_hints.items() if k != "return"} == {
            k: v for k, v in sync_hints.items() if k != "return"
        }, name
        assert async_hints["return"] == _async_return(sync_hints["return"]), name
        assert inspect.iscoroutinefunction(async_f) is (name not in _NOT_COROUTINES), name


def test_async_store_has_the_public_attributes_of_the_sync_store_typed(root: Path) -> None:
    sync = FileStore(root, durability="fsync", tracks_completion=True)
    a = AsyncFileStore(root, durability="fsync", tracks_completion=True)
    names = [n for n, v in inspect.getmembers(FileStore) if isinstance(v, property) and not n.startswith("_")]
    assert {"root", "durability", "tracks_completion"} <= set(names)
    for name in names:
        assert getattr(a, name) == getattr(sync, name), name
    for name, typ in (("root", Path), ("durability", Durability), ("tracks_completion", bool)):
        prop = inspect.getattr_static(AsyncFileStore, name)
        assert isinstance(prop, property) and prop.fget is not None
        assert typing.get_type_hints(prop.fget)["return"] == typ, name
    assert isinstance(a.root, Path) and a.root == root
    assert repr(a) == f"AsyncFileStore({str(root)!r}, durability='fsync')"


def test_async_with_closes_the_store_and_leaves_it_usable(root: Path) -> None:
    async def scenario() -> str:
        async with AsyncFileStore(root) as a:
            sid = await a.create_session("main", "/p")
            await a.insert_message(sid, Role.USER, "hi")
            assert a.sync._root._handles  # a cached session handle (an open descriptor) to close
        assert not a.sync._root._handles  # __aexit__ closed every cached descriptor
        assert [m.content for m in await a.load_all_messages(sid)] == ["hi"]
        return sid

    sid = run(scenario())
    assert [m.content for m in FileStore(root).load_all_messages(sid)] == ["hi"]


def test_async_create_and_list_sessions_of_no_project(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        loose = await astore.create_session("main")
        other = await astore.create_session("main", "/elsewhere")
        assert [s.id for s in await astore.list_sessions(10)] == [other, loose]
        assert [s.id for s in await astore.list_sessions(10, "/mine")] == [loose]
        assert (await astore.list_sessions(10))[1].project_root is None

    run(scenario())


def test_async_insert_message_takes_agent_name_by_keyword(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        await astore.insert_message(sid, Role.USER, "from sub", agent_name="sub")
        await astore.insert_message_with_agent(sid, Role.ASSISTANT)
        msgs = await astore.load_all_messages(sid)
        assert [(m.agent_name, m.content) for m in msgs] == [("sub", "from sub"), (None, None)]

    run(scenario())


def test_async_get_session_title(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        assert await astore.get_session_title(sid) is None
        await astore.set_session_title(sid, "Fix the parser")
        assert await astore.get_session_title(sid) == "Fix the parser"
        assert await astore.get_session_title("no-such-session") is None

    run(scenario())


def test_async_session_last_accessed_round_trips(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        assert await astore.session_last_accessed(sid) is None
        await astore.set_session_last_accessed(sid, "2024-03-01T10:00:00Z")
        assert await astore.session_last_accessed(sid) == "2024-03-01T10:00:00.000000Z"
        with pytest.raises(ValueError, match="ISO 8601"):
            await astore.set_session_last_accessed(sid, "yesterday")

    run(scenario())


def test_async_session_ids_and_overviews(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        first = await astore.create_session("main", "/a")
        second = await astore.create_session("helper", "/b")
        await astore.insert_message(first, Role.USER, "hello there\nsecond line")
        assert await astore.session_ids() == sorted([first, second]) == astore.sync.session_ids()
        one = await astore.session_overview(first)
        assert one is not None and (one.id, one.agent_name, one.message_count) == (first, "main", 1)
        assert one.first_user_message == "hello there"
        assert await astore.session_overview("no-such-session") is None
        assert await astore.session_overviews() == astore.sync.session_overviews()
        assert [o.id for o in await astore.session_overviews("/b")] == [second]

    run(scenario())


def test_async_search_returns_the_hits_as_a_list(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        await astore.insert_message(sid, Role.USER, "needle one")
        await astore.insert_message(sid, Role.ASSISTANT, "hay")
        await astore.insert_message(sid, Role.TOOL, "needle in a tool", None, "c1")
        hits = await astore.search("needle")
        assert isinstance(hits, list)
        assert [(h.role, h.lines) for h in hits] == [("user", ("needle one",))]
        with_tools = await astore.search("needle", tools=True)
        assert [h.role for h in with_tools] == ["tool", "user"]
        assert with_tools == list(astore.sync.search("needle", tools=True))

    run(scenario())


def test_async_disk_usage_and_stats(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        await astore.insert_message(sid, Role.USER, "x" * 1000)
        used = await astore.disk_usage()
        assert used == astore.sync.disk_usage() > 1000
        stats = await astore.stats()
        assert isinstance(stats, StoreStats)
        assert (stats.sessions, stats.messages, stats.archived_messages) == (1, 1, 0)
        await astore.stats()  # the first call may grow the index it measures (see test_api)
        assert await astore.stats() == astore.sync.stats()

    run(scenario())


def test_async_check_reports_and_repairs_by_keyword(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        await astore.insert_message(sid, Role.USER, "kept")
        with messages_path(astore.root, sid).open("ab") as f:
            f.write(b"not json\n")
        report = await astore.check()
        assert isinstance(report, CheckReport) and not report.ok
        assert [(p.kind, p.line) for p in report.problems] == [("bad-line", 2)]
        with pytest.raises(TypeError):
            await astore.check(True)  # type: ignore[call-arg]
        assert (await astore.check(repair=True)).ok
        assert (await astore.check()).problems == ()

    run(scenario())


def test_async_reindex_rebuilds_the_derived_files(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        await astore.insert_message(sid, Role.USER, "hi")
        assert [s.message_count for s in await astore.list_sessions(5)] == [1]
        for name in (".index", ".summary"):
            (astore.root / name).unlink()
        await astore.reindex()
        assert (astore.root / ".index").is_file() and (astore.root / ".summary").is_file()
        assert [s.message_count for s in await astore.list_sessions(5)] == [1]

    run(scenario())


def test_async_purge_preview_changes_nothing(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        for text in ("a", "b", "c"):
            await astore.insert_message(sid, Role.USER, text)
        await astore.compact_session(sid, "summary", 1)
        before = messages_path(astore.root, sid).read_bytes()
        preview = await astore.purge_preview(0)
        assert preview == PurgePreview(2, preview.size_bytes, (sid,)) and preview.size_bytes > 0
        assert messages_path(astore.root, sid).read_bytes() == before
        assert await astore.purge_compacted(0) == preview.message_count

    run(scenario())


def test_async_todo_path(astore: AsyncFileStore) -> None:
    async def scenario() -> None:
        sid = await astore.create_session("main")
        path = await astore.todo_path(sid)
        assert path == todo_path(astore.root, sid) and not path.exists()
        await astore.set_todo(sid, "- [ ] x\n")
        assert path.read_text() == "- [ ] x\n"
        with pytest.raises(SessionNotFoundError, match="no-such-session"):
            await astore.todo_path("no-such-session")

    run(scenario())
