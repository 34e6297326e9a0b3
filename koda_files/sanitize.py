"""What `load_context` hands the model: koda's sanitising passes over the active messages.

koda's passes, in order:
1. drop every message referring to a tool-call id seen on one side only (a call nobody
   answered, or a result for a call nobody made);
2. drop assistant messages with neither non-blank content nor tool calls;
3. drop assistant messages without tool calls whose content is whitespace only.
`ContextCache` applies them incrementally: a new message can only change the verdict on
messages that share one of its tool-call ids, so an append re-judges the recent few, not all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache

import orjson

from .types import Message, Role

__all__ = ["ContextCache", "call_ids", "has_tool_calls", "sanitize"]


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


def _refs(m: Message) -> tuple[str, ...]:
    if m.role is Role.ASSISTANT:
        return call_ids(m.tool_calls) if m.tool_calls else ()
    if m.role is Role.TOOL and m.tool_call_id is not None:
        return (m.tool_call_id,)
    return ()


class ContextCache:
    """The sanitised context of a growing list of active messages, updated in place."""

    def __init__(self) -> None:
        self._reset(-1)

    def _reset(self, generation: int) -> None:
        self._generation = generation
        self._seen = 0
        self._called: set[str] = set()
        self._answered: set[str] = set()
        self._refs: dict[str, list[int]] = {}  # call id -> indices of the messages naming it
        self._out: list[Message] = []
        self._out_index: list[int] = []  # index in the active list of each message in _out
        self._patches = 0  # how many entries of `patched` were applied

    def update(self, active: Sequence[Message], generation: int, patched: Sequence[int] = ()) -> list[Message]:
        """The sanitised context of `active` (a new list); `generation` changes when it was rewritten.

        `patched` lists, in order, the indices of `active` whose message was replaced in place by
        a copy that differs only in `completed_at` (a completion annotation); it grows within a
        generation. That field changes no verdict, so the kept copies are swapped in as they are.
        """
        if generation != self._generation or len(active) < self._seen:
            self._reset(generation)
        if len(patched) > self._patches:
            self._swap(active, patched)
        if len(active) == self._seen:
            return list(self._out)
        earliest = self._seen
        for index in range(self._seen, len(active)):
            m = active[index]
            for call in _refs(m):
                (self._called if m.role is Role.ASSISTANT else self._answered).add(call)
                indices = self._refs.setdefault(call, [])
                if indices and indices[0] < earliest:
                    earliest = indices[0]  # an older message naming this id may change verdict
                indices.append(index)
        self._seen = len(active)
        cut = bisect_left(self._out_index, earliest)
        del self._out[cut:]
        del self._out_index[cut:]
        for index in range(earliest, len(active)):
            m = active[index]
            if self._keep(m):
                self._out.append(m)
                self._out_index.append(index)
        return list(self._out)

    def _swap(self, active: Sequence[Message], patched: Sequence[int]) -> None:
        for index in patched[self._patches :]:
            if index < self._seen:  # later ones are judged as new messages below
                at = bisect_left(self._out_index, index)
                if at < len(self._out_index) and self._out_index[at] == index:
                    self._out[at] = active[index]
        self._patches = len(patched)

    def _one_sided(self, call: str) -> bool:
        return (call in self._called) != (call in self._answered)

    def _keep(self, m: Message) -> bool:
        if m.role is Role.ASSISTANT:
            if has_tool_calls(m):
                return not any(self._one_sided(c) for c in call_ids(m.tool_calls))
            return m.content is not None and bool(m.content.strip())  # passes 2 and 3
        if m.role is Role.TOOL and m.tool_call_id is not None:
            return not self._one_sided(m.tool_call_id)
        return True


def sanitize(messages: Sequence[Message]) -> list[Message]:
    """Apply koda's passes to `messages` in one go; the order is kept."""
    return ContextCache().update(messages, 0)
