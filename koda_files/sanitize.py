"""What `load_context` hands the model: koda's sanitising passes over the active messages."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import orjson

from .types import Message, Role

__all__ = ["call_ids", "has_tool_calls", "sanitize"]


@lru_cache(maxsize=4096)
def call_ids(tool_calls: str | None) -> tuple[str, ...]:
    """The ids of the calls in a `tool_calls` string (a JSON array of objects with "id")."""
    if not tool_calls:
        return ()
    try:
        calls = orjson.loads(tool_calls)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(calls, list):
        return ()
    return tuple(c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str))


def has_tool_calls(message: Message) -> bool:
    """An assistant message makes tool calls if `tool_calls` is set and not an empty array."""
    tc = message.tool_calls
    return tc is not None and tc.strip() not in ("", "[]", "null")


def sanitize(messages: Sequence[Message]) -> list[Message]:
    """Apply koda's passes in order; the input order is kept.

    1. Drop every message referring to a tool-call id seen on one side only (a call nobody
       answered, or a result for a call nobody made).
    2. Drop assistant messages with neither non-blank content nor tool calls.
    3. Drop assistant messages without tool calls whose content is whitespace only.
    """
    called: set[str] = set()
    answered: set[str] = set()
    for m in messages:
        if m.role is Role.ASSISTANT and m.tool_calls:
            called.update(call_ids(m.tool_calls))
        elif m.role is Role.TOOL and m.tool_call_id is not None:
            answered.add(m.tool_call_id)
    one_sided = called ^ answered
    out: list[Message] = []
    for m in messages:
        if m.role is Role.ASSISTANT:
            calls = has_tool_calls(m)
            if calls and one_sided and any(i in one_sided for i in call_ids(m.tool_calls)):
                continue
            blank = m.content is None or not m.content.strip()
            # Passes 2 and 3 both reduce to: no tool calls and blank content.
            if not calls and blank:
                continue
        elif m.role is Role.TOOL and m.tool_call_id is not None and m.tool_call_id in one_sided:
            continue
        out.append(m)
    return out
