"""The value types of the Persistence contract, field for field as in koda's trait."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CheckReport",
    "CompactedStats",
    "Durability",
    "Interruption",
    "InterruptionKind",
    "Message",
    "Problem",
    "ProblemKind",
    "PurgePreview",
    "Role",
    "SearchHit",
    "SessionEvent",
    "SessionInfo",
    "SessionOverview",
    "SessionUsage",
    "StoreStats",
    "TokenUsage",
]

Durability = Literal["flush", "fsync"]
"""`FileStore(durability=...)`: "flush" survives a killed process, "fsync" also a power loss."""

InterruptionKind = Literal["prompt", "tool"]
"""`Interruption.kind`: an unanswered user prompt, or tool results no assistant message followed."""

ProblemKind = Literal["bad-line", "torn-tail", "temp-file", "bad-header", "missing-log", "not-a-session"]
"""`Problem.kind`: what `check` found (see the README's "Checking and repairing")."""


class Role(str, enum.Enum):
    """Who wrote a message. Every method that takes a role also takes its string value."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Role:
        """Return the member for a `Role` or its string value; anything else is a `ValueError`."""
        if isinstance(value, Role):
            return value
        if isinstance(value, str):
            member = _BY_VALUE.get(value)
            if member is not None:
                return member
        raise ValueError(f"unknown role: {value!r} (expected one of system, user, assistant, tool)")


_BY_VALUE: dict[str, Role] = {r.value: r for r in Role}


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message; `id` is unique across the store. `created_at` and later fields are extras.

    Slots, not an instance dict: a long session holds one per line, so half the memory or less
    (168 bytes here against 352 and more) and half the objects the garbage collector walks.
    Equality, hashing, repr and pickling are a dataclass's; there is no `__dict__` (use
    `dataclasses.asdict` or `dataclasses.replace`) and no weak reference.
    """

    id: int
    session_id: str
    role: Role
    content: str | None
    tool_calls: str | None
    tool_call_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    thinking_tokens: int | None
    agent_name: str | None = None
    created_at: str | None = None
    compacted_at: str | None = None
    completed_at: str | None = None  # set by `mark_message_complete`; None: in progress or interrupted
    full_content: str | None = None  # a tool result's whole output when `content` shows it cut short
    thinking_content: str | None = None  # the model's reasoning (`update_message_thinking_content`)
    stop_reason: str | None = None  # `TokenUsage.stop_reason` of the call that wrote it; None if empty

    def __reduce__(self) -> tuple[type[Message], tuple[object, ...]]:
        # Pickled as a constructor call, the same on every supported Python (frozen slotted
        # dataclasses gained their own pickling support only in later releases).
        return Message, tuple(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one model call, the input of `insert_message(usage=...)`.

    A non-empty `stop_reason` ("end_turn", "max_tokens", ...) is stored on the message line and
    read back as `Message.stop_reason`.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    thinking_tokens: int = 0
    stop_reason: str = ""


@dataclass(frozen=True)
class SessionUsage:
    """Token totals over the messages of a session that carry usage; `api_calls` counts those."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    thinking_tokens: int = 0
    api_calls: int = 0


@dataclass(frozen=True)
class SessionInfo:
    """One row of `list_sessions`; counts include archived messages."""

    id: str
    agent_name: str
    created_at: str
    message_count: int
    total_tokens: int
    project_root: str | None = None
    title: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class CompactedStats:
    """Archived messages over the whole store; `oldest` is the earliest `compacted_at`."""

    message_count: int = 0
    session_count: int = 0
    size_bytes: int = 0
    oldest: str | None = None


@dataclass(frozen=True)
class Interruption:
    """What `detect_interruption` found at the end of a session's context, for a banner on resume.

    `kind` is `"prompt"` when the context's last message (system ones skipped) is a user message
    nobody answered (then `preview` holds its first 80 characters) and `"tool"` when it is a tool
    result no assistant message followed (`preview` is None).
    """

    kind: InterruptionKind
    preview: str | None = None


@dataclass(frozen=True)
class SessionEvent:
    """One row of a session's event log (`insert_session_event`), in insertion order.

    `parent_tool_call_id` links an event a sub-agent emitted to the tool call that started it;
    None for the session's own events.
    """

    id: int
    session_id: str
    kind: str
    payload: str
    parent_tool_call_id: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class StoreStats:
    """`FileStore.stats()`: the whole store at a glance; counts include archived messages.

    `bytes_on_disk` counts the store's own files only (not a `.git` or `.venv` kept beside them).
    """

    sessions: int
    messages: int
    archived_messages: int
    bytes_on_disk: int
    compacted: CompactedStats


@dataclass(frozen=True)
class PurgePreview:
    """What `purge_compacted(min_age_days)` would delete now: messages, their bytes on disk, sessions.

    `session_ids` are the sessions that would be rewritten, sorted.
    """

    message_count: int
    size_bytes: int
    session_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the store, found by `check`."""

    kind: ProblemKind
    path: str  # the file or directory involved
    session_id: str | None = None
    line: int | None = None  # 1-based line number for bad-line / torn-tail
    detail: str = ""
    repaired: bool = False  # True when check(repair=True) fixed or quarantined it


@dataclass(frozen=True)
class CheckReport:
    """What `check` found; `ok` is True when there is nothing (left) to report."""

    sessions: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)


@dataclass(frozen=True)
class SessionOverview:
    """One session as a listing shows it; counts include archived messages.

    `last_activity` is the later of the last insert and the last `load_context` (as
    `session_last_accessed`), else `created_at`; `first_user_message` is the first line of the
    first user message with text ("" if none), at most 200 characters.
    """

    id: str
    agent_name: str
    created_at: str
    last_activity: str
    message_count: int
    archived_count: int
    total_tokens: int
    project_root: str | None
    title: str | None
    mode: str | None
    first_user_message: str


@dataclass(frozen=True)
class SearchHit:
    """A message that matched `search`; `lines` are the lines of the searched text that match."""

    session_id: str
    message_id: int
    role: str
    created_at: str | None
    archived: bool
    field: Literal["content", "tool_calls"]
    lines: tuple[str, ...]
