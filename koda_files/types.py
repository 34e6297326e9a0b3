"""The value types of the Persistence contract, field for field as in koda's trait."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CompactedStats",
    "Interruption",
    "Message",
    "Role",
    "SessionEvent",
    "SessionInfo",
    "SessionUsage",
    "TokenUsage",
]


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

    def __reduce__(self) -> tuple[type[Message], tuple[object, ...]]:
        # Pickled as a constructor call, the same on every supported Python (frozen slotted
        # dataclasses gained their own pickling support only in later releases).
        return Message, tuple(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one model call, the input of `insert_message(usage=...)`."""

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

    kind: str
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
