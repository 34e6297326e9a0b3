"""Model-based test: random operation sequences against a simple in-memory model of the contract."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from _helpers import Msg, result_owner, sanitize_indices, session_dir
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from koda_files import (
    CompactedStats,
    FileStore,
    Interruption,
    KodaFilesError,
    Message,
    Role,
    SessionNotFoundError,
    SessionUsage,
    TokenUsage,
)

CALL_IDS = ["c1", "c2", "c3", "c4"]
UNKNOWN_ID = "zz"  # never called by anyone
KEYS = ["model", "cwd", "todo"]
AGENTS = ["koda", "reviewer"]
PROJECTS = ["proj-a", "proj-b"]

# Whitespace both Python's str.strip and koda's (Rust) trim agree on; \x1c-\x1f differ, so they stay out.
_chars = st.characters(codec="utf-8", exclude_characters="\x1c\x1d\x1e\x1f")
texts = st.one_of(
    st.sampled_from(["", " ", "\n", " \t\r\n ", "\u00a0\u2028", "hello", 'q"uote\\', "emoji 😀", "nul\x00"]),
    st.text(_chars, max_size=12),
)
contents = st.one_of(st.none(), texts)
tool_calls_st = st.one_of(
    st.none(),
    st.lists(st.sampled_from(CALL_IDS), min_size=1, max_size=3, unique=True).map(
        lambda ids: json.dumps([{"id": i, "type": "function", "function": {"name": "f"}} for i in ids])
    ),
    # no calls, and calls no provider can answer: a repeated id, a call without an id, not JSON
    st.sampled_from(["[]", "null", " ", '[{"id":"c1"},{"id":"c1"}]', '[{"id":"c2"},{"name":"f"}]', "{oops"]),
)
tool_call_ids = st.one_of(st.none(), st.sampled_from([*CALL_IDS, UNKNOWN_ID]))
small = st.integers(min_value=0, max_value=1000)
usages = st.one_of(st.none(), st.builds(TokenUsage, small, small, small, small, small))
agent_names = st.one_of(st.none(), st.sampled_from(["main", "sub", "other"]))
roles = st.one_of(st.sampled_from(list(Role)), st.sampled_from([r.value for r in Role]))
Spec = tuple[
    Role | str, str | None, str | None, str | None, TokenUsage | None, str | None, bool
]  # role, content, tool_calls, tool_call_id, usage, agent_name, use insert_message_with_agent
specs = st.tuples(roles, contents, tool_calls_st, tool_call_ids, usages, agent_names, st.booleans())


Tokens = tuple[int | None, int | None, int | None, int | None, int | None]
NO_TOKENS: Tokens = (None, None, None, None, None)


@dataclass
class MMsg:
    """One message of the model; `seq` orders inserts across the whole store."""

    id: int
    role: Role
    content: str | None
    tool_calls: str | None
    tool_call_id: str | None
    tokens: Tokens
    agent_name: str | None
    archived: bool
    seq: int
    completed: bool = False  # mark_message_complete was called on it (or it is a compaction hint)
    hint: bool = False  # the compaction hint: written complete, and no mark that turns tracking on


@dataclass
class MSession:
    agent_name: str
    project: str
    order: int
    messages: list[MMsg] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    todo: str | None = None
    title: str | None = None
    mode: str | None = None
    flagged: bool = False  # created once the root had seen a completion mark
    sticky: bool = False  # compacted while tracking: the summary line records it, purge or not

    def tracking(self) -> bool:
        return self.flagged or self.sticky or any(m.completed and not m.hint for m in self.messages)


def _tokens(usage: TokenUsage | None) -> Tokens:
    if usage is None:
        return NO_TOKENS
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
        usage.thinking_tokens,
    )


def _view(m: Message) -> tuple[object, ...]:
    tokens = (
        m.prompt_tokens,
        m.completion_tokens,
        m.cache_read_tokens,
        m.cache_creation_tokens,
        m.thinking_tokens,
    )
    return (
        m.id,
        m.role,
        m.content,
        m.tool_calls,
        m.tool_call_id,
        tokens,
        m.agent_name,
        m.compacted_at is not None,
    )


def _mview(m: MMsg) -> tuple[object, ...]:
    return (m.id, m.role, m.content, m.tool_calls, m.tool_call_id, m.tokens, m.agent_name, m.archived)


def _usage(msgs: list[MMsg]) -> SessionUsage:
    counted = [m for m in msgs if m.tokens[0] is not None or m.tokens[1] is not None]
    p, c, r, w, t = (sum(m.tokens[k] or 0 for m in counted) for k in range(5))
    return SessionUsage(p, c, r, w, t, len(counted))


class StoreMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")
    base: ClassVar[Path]  # set by the test: where each run's root goes

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(dir=self.base)) / "root"
        self.store = FileStore(self.root)
        self.model: dict[str, MSession] = {}
        self.deleted: set[str] = set()
        self.handed: set[int] = set()
        self.max_id_in: dict[str, int] = {}
        self.seq = itertools.count()
        self.created = itertools.count()
        self.dirty: set[str] = set()
        self.root_tracks = False  # a mark_message_complete succeeded on this root

    def teardown(self) -> None:
        shutil.rmtree(self.root.parent, ignore_errors=True)

    # ---------------------------------------------------------------- helpers

    def _new_id(self, sid: str, new: int) -> None:
        assert isinstance(new, int)
        assert new not in self.handed, f"id {new} handed out twice"
        assert new > self.max_id_in.get(sid, -(2**63)), "ids not increasing within the session"
        self.handed.add(new)
        self.max_id_in[sid] = new

    # ---------------------------------------------------------------- rules

    @rule(target=sessions, agent=st.sampled_from(AGENTS), project=st.sampled_from(PROJECTS))
    def create_session(self, agent: str, project: str) -> str:
        sid = self.store.create_session(agent, self.root.parent / project)
        assert sid not in self.model and sid not in self.deleted
        self.model[sid] = MSession(agent, project, next(self.created), flagged=self.root_tracks)
        self.dirty.add(sid)
        return sid

    def _insert_one(self, sid: str, spec: Spec) -> None:
        role, content, tool_calls, tool_call_id, usage, agent, with_agent = spec
        if sid in self.deleted:
            with pytest.raises(SessionNotFoundError):
                self.store.insert_message(sid, role, content, tool_calls, tool_call_id, usage)
            assert not session_dir(self.root, sid).exists()
            return
        if with_agent:
            new = self.store.insert_message_with_agent(
                sid, role, content, tool_calls, tool_call_id, usage, agent
            )
        else:
            agent = None
            new = self.store.insert_message(sid, role, content, tool_calls, tool_call_id, usage)
        self._new_id(sid, new)
        self.model[sid].messages.append(
            MMsg(
                new,
                Role(role),
                content,
                tool_calls,
                tool_call_id,
                _tokens(usage),
                agent,
                False,
                next(self.seq),
            )
        )
        self.dirty.add(sid)

    @rule(sid=sessions, specs=st.lists(specs, min_size=1, max_size=4))
    def insert(self, sid: str, specs: list[Spec]) -> None:
        for spec in specs:
            self._insert_one(sid, spec)

    @rule(
        sid=sessions,
        calls=st.lists(st.sampled_from(CALL_IDS), min_size=1, max_size=3, unique=True),
        answered=st.integers(min_value=0, max_value=3),
        usage=usages,
        agent=agent_names,
        text=contents,
    )
    def tool_round(
        self,
        sid: str,
        calls: list[str],
        answered: int,
        usage: TokenUsage | None,
        agent: str | None,
        text: str | None,
    ) -> None:
        """An assistant turn with tool calls, then results for the first `answered` of them."""
        tool_calls = json.dumps([{"id": c, "type": "function", "function": {"name": "f"}} for c in calls])
        self._insert_one(sid, (Role.ASSISTANT, text, tool_calls, None, usage, agent, agent is not None))
        for c in calls[:answered]:
            self._insert_one(sid, ("tool", f"result of {c}", None, c, None, agent, agent is not None))

    @rule(sid=sessions, summary=texts, preserve=st.integers(min_value=0, max_value=6))
    def compact(self, sid: str, summary: str, preserve: int) -> None:
        if sid in self.deleted:
            with contextlib.suppress(SessionNotFoundError):
                assert self.store.compact_session(sid, summary, preserve) == 0
            assert not session_dir(self.root, sid).exists()
            return
        msgs = self.model[sid].messages
        active = [m for m in msgs if not m.archived]
        n = max(0, len(active) - preserve)
        # a tail starting inside a call group keeps the whole group (owners come before results)
        view = [Msg(m.role, m.content, m.tool_calls, m.tool_call_id) for m in active]
        for i in range(len(active) - 1, -1, -1):
            if i >= n and active[i].role is Role.TOOL:
                owner = result_owner(view, i)
                n = min(n, owner) if owner is not None else n
        got = self.store.compact_session(sid, summary, preserve)
        assert got == n
        if n == 0:
            return
        self.model[sid].sticky |= self.model[sid].tracking()
        for m in active[:n]:
            m.archived = True
        tail = active[n:]
        at = msgs.index(tail[0]) if tail else len(msgs)
        stored = self.store.load_all_messages(sid)
        assert len(stored) == len(msgs) + 2
        s, h = stored[at], stored[at + 1]
        assert (s.role, s.content, s.tool_calls, s.tool_call_id) == (Role.SYSTEM, summary, None, None)
        assert h.role is Role.ASSISTANT and h.content is not None and "compacted" in h.content.lower()
        assert h.tool_calls is None
        for extra in (s, h):
            self._new_id(sid, extra.id)
        new = [
            MMsg(x.id, x.role, x.content, None, None, NO_TOKENS, x.agent_name, False, next(self.seq))
            for x in (s, h)
        ]
        new[1].completed = new[1].hint = True
        msgs[at:at] = new
        self.dirty.add(sid)

    @precondition(lambda self: any(m.archived for s in self.model.values() for m in s.messages))
    @rule()
    def purge_all(self) -> None:
        expected = sum(1 for s in self.model.values() for m in s.messages if m.archived)
        assert self.store.purge_compacted(0) == expected
        for sid, s in self.model.items():
            if any(m.archived for m in s.messages):
                s.messages = [m for m in s.messages if not m.archived]
                self.dirty.add(sid)

    @rule(sid=sessions, key=st.sampled_from(KEYS), value=texts)
    def set_metadata(self, sid: str, key: str, value: str) -> None:
        if sid in self.deleted:
            with pytest.raises(SessionNotFoundError):
                self.store.set_metadata(sid, key, value)
            assert not session_dir(self.root, sid).exists()
            return
        self.store.set_metadata(sid, key, value)
        if key == "todo":
            self.model[sid].todo = value
        else:
            self.model[sid].metadata[key] = value
        self.dirty.add(sid)

    @rule(sid=sessions, value=texts)
    def set_todo(self, sid: str, value: str) -> None:
        if sid in self.deleted:
            with pytest.raises(SessionNotFoundError):
                self.store.set_todo(sid, value)
            return
        self.store.set_todo(sid, value)
        self.model[sid].todo = value
        self.dirty.add(sid)

    @rule(sid=sessions, value=texts, which=st.sampled_from(["title", "mode"]))
    def set_title_or_mode(self, sid: str, value: str, which: str) -> None:
        setter = self.store.set_session_title if which == "title" else self.store.set_session_mode
        if sid in self.deleted:
            with pytest.raises(SessionNotFoundError):
                setter(sid, value)
            assert not session_dir(self.root, sid).exists()
            return
        setter(sid, value)
        setattr(self.model[sid], which, value)
        self.dirty.add(sid)

    @rule(data=st.data(), known=st.booleans())
    def mark_complete(self, data: st.DataObject, known: bool) -> None:
        """Mark a stored message (any session, archived or not, maybe again) or an id nobody has."""
        stored = [(sid, m) for sid, s in self.model.items() for m in s.messages]
        if known and stored:
            sid, m = data.draw(st.sampled_from(stored))
            self.store.mark_message_complete(m.id)
            m.completed = True
            self.root_tracks = True
            self.dirty.add(sid)
            return
        alive = {m.id for _, m in stored}
        gone = sorted(self.handed - alive)  # purged, deleted with a session
        use_gone: bool = bool(gone) and data.draw(st.booleans())
        msg_id: int = data.draw(st.sampled_from(gone)) if use_gone else max(self.handed, default=0) + 1000
        with pytest.raises(KodaFilesError, match=str(msg_id)):
            self.store.mark_message_complete(msg_id)

    @precondition(lambda self: len(self.model) >= 2)
    @rule(sid=sessions)
    def delete(self, sid: str) -> None:
        existed = sid in self.model
        assert self.store.delete_session(sid) is existed
        assert not session_dir(self.root, sid).exists()
        if existed:
            del self.model[sid]
            self.deleted.add(sid)
        self.dirty.add(sid)

    @rule()
    def reopen(self) -> None:
        """A new store on the same root (a new process) sees exactly what the old one wrote."""
        self.store = FileStore(self.root)
        self.dirty.update(self.model)
        self.dirty.update(self.deleted)

    # ---------------------------------------------------------------- checks

    def _check_session(self, sid: str) -> None:
        st_ = self.store
        if sid in self.deleted:
            assert st_.load_all_messages(sid) == []
            assert st_.load_context(sid) == []
            assert st_.last_assistant_message(sid) == ""
            assert st_.last_user_message(sid) == ""
            assert st_.has_pending_tool_calls(sid) is False
            assert st_.session_token_usage(sid) == SessionUsage()
            assert st_.session_usage_by_agent(sid) == []
            assert st_.get_todo(sid) is None
            for key in KEYS:
                assert st_.get_metadata(sid, key) is None
            assert st_.get_session_mode(sid) is None
            assert st_.get_session_idle_secs(sid) is None
            assert st_.detect_interruption(sid) is None
            return
        model = self.model[sid]
        msgs = model.messages
        stored = st_.load_all_messages(sid)
        assert [_view(m) for m in stored] == [_mview(m) for m in msgs]
        assert all(m.session_id == sid for m in stored)
        assert [m.completed_at is not None for m in stored] == [m.completed for m in msgs]
        assert st_.get_session_mode(sid) == model.mode
        active = [m for m in msgs if not m.archived]
        keep = sanitize_indices(
            [Msg(m.role, m.content, m.tool_calls, m.tool_call_id, m.completed) for m in active],
            tracking=model.tracking(),
        )
        last_kept = next((active[i] for i in reversed(keep) if active[i].role is not Role.SYSTEM), None)
        expected_interruption = None
        if last_kept is not None and last_kept.role is Role.USER:
            expected_interruption = Interruption("prompt", (last_kept.content or "")[:80])
        elif last_kept is not None and last_kept.role is Role.TOOL:
            expected_interruption = Interruption("tool")
        assert st_.detect_interruption(sid) == expected_interruption

        context = st_.load_context(sid)
        assert [_view(m) for m in context] == [_mview(active[i]) for i in keep]
        assert [m.completed_at is not None for m in context] == [active[i].completed for i in keep]
        assert st_.get_session_idle_secs(sid) is not None  # just loaded

        def last(role: Role) -> str:
            found = [m.content for m in msgs if m.role is role and m.content is not None]
            return found[-1] if found else ""

        assert st_.last_assistant_message(sid) == last(Role.ASSISTANT)
        assert st_.last_user_message(sid) == last(Role.USER)
        pending = (
            bool(active)
            and active[-1].role is Role.ASSISTANT
            and active[-1].tool_calls is not None
            and active[-1].tool_calls.strip() not in ("", "[]", "null")
        )
        assert st_.has_pending_tool_calls(sid) is pending

        assert st_.session_token_usage(sid) == _usage(msgs)
        groups: dict[str, list[MMsg]] = defaultdict(list)
        for m in msgs:
            if m.tokens[0] is not None or m.tokens[1] is not None:
                groups[m.agent_name or "main"].append(m)
        by_agent = sorted(
            ((name, _usage(group)) for name, group in groups.items()),
            key=lambda pair: (-(pair[1].prompt_tokens + pair[1].completion_tokens), pair[0]),
        )
        assert st_.session_usage_by_agent(sid) == by_agent

        assert st_.get_todo(sid) == model.todo
        assert st_.get_metadata(sid, "todo") == model.todo
        for key in KEYS:
            if key != "todo":
                assert st_.get_metadata(sid, key) == model.metadata.get(key)

    def _check_store(self) -> None:
        st_ = self.store
        for project in PROJECTS:
            listed = st_.list_sessions(100, self.root.parent / project)
            mine = sorted(
                ((sid, s) for sid, s in self.model.items() if s.project == project),
                key=lambda pair: -pair[1].order,
            )
            assert [i.id for i in listed] == [sid for sid, _ in mine]
            for info, (_, s) in zip(listed, mine, strict=True):
                assert info.agent_name == s.agent_name
                assert (info.title, info.mode) == (s.title, s.mode)
                assert info.message_count == len(s.messages)
                assert info.total_tokens == sum((m.tokens[0] or 0) + (m.tokens[1] or 0) for m in s.messages)
            assert [i.id for i in st_.list_sessions(1, os.path.join(self.root.parent, project))] == [
                sid for sid, _ in mine[:1]
            ]

        users = sorted(
            (m for s in self.model.values() for m in s.messages if m.role is Role.USER and m.content),
            key=lambda m: -m.seq,
        )
        assert st_.recent_user_messages(1000) == [m.content for m in users]
        assert st_.recent_user_messages(2) == [m.content for m in users[:2]]

        archived = [(sid, m) for sid, s in self.model.items() for m in s.messages if m.archived]
        stats = st_.compacted_stats()
        expected = CompactedStats(
            message_count=len(archived),
            session_count=len({sid for sid, _ in archived}),
            size_bytes=sum(
                len((m.content or "").encode()) + len((m.tool_calls or "").encode()) for _, m in archived
            ),
            oldest=stats.oldest,
        )
        assert stats == expected
        assert (stats.oldest is None) == (not archived)

    @invariant()
    def matches_model(self) -> None:
        for sid in sorted(self.dirty):
            self._check_session(sid)
        self.dirty.clear()
        self._check_store()


def test_store_matches_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    base_dir = tmp_path_factory.mktemp("model")

    class Machine(StoreMachine):
        base = base_dir

    run_state_machine_as_test(
        Machine,
        settings=settings(
            # KODA_FILES_STRESS=1 runs a longer campaign than CI's.
            max_examples=1000 if os.environ.get("KODA_FILES_STRESS") == "1" else 50,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_model_sanitiser_agrees_with_spec_examples() -> None:
    """The model's sanitiser itself, on the spec's cases, so a wrong model cannot pass silently."""
    calls = json.dumps([{"id": "c1"}])
    rows = [
        Msg(Role.USER, "q", None, None),
        Msg(Role.ASSISTANT, None, calls, None),
        Msg(Role.TOOL, "r", None, "c1"),
        Msg(Role.TOOL, "orphan", None, "zz"),
        Msg(Role.ASSISTANT, None, None, None),
        Msg(Role.ASSISTANT, "  \n", None, None),
        Msg(Role.ASSISTANT, None, json.dumps([{"id": "lost"}]), None),
        Msg(Role.ASSISTANT, "fine", None, None),
    ]
    assert sanitize_indices(rows) == [0, 1, 2, 7]
