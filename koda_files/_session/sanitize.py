"""What `load_context` hands the model: the active messages, pruned to a well-formed conversation.

The rule (README, "The context the model gets"), over the active messages in order:
- a tool result belongs to the latest assistant message before it that calls its id (its
  *owner*); results with no owner are left out;
- an assistant message is kept when it is complete (or the session does not track completion),
  and either makes no calls and has non-blank text, or makes readable calls (a JSON array of
  objects with distinct string ids) each of which it owns at least one result for;
- a result is kept when its owner is kept and it is the newest result its owner has for its id;
- user and system messages are always kept.
Ownership is fixed before anything is left out, so dropping an assistant turn drops all its
results and nothing else needs judging again: one pass reaches the fixpoint.
`ContextCache` keeps that verdict incrementally: an append can only change the verdict on the
owner of a new result (and the results it owns), so an append re-judges from there, not all.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import compress

import orjson

from ..types import Message, Role

__all__ = ["CallOwners", "ContextCache", "call_ids", "group_start", "has_tool_calls", "sanitize"]


def _read_calls(tool_calls: str) -> tuple[tuple[str, ...], bool]:
    """(the ids the calls name, whether it makes calls that are all readable with distinct ids).

    Blank, `[]` and `null` make no calls: `((), True)`. Anything else that is not a non-empty
    JSON array of objects with distinct string ids is unreadable: `(ids found, False)`.
    """
    if not tool_calls or tool_calls.isspace():
        return _NO_CALLS
    try:
        calls = orjson.loads(tool_calls)
    except orjson.JSONDecodeError:
        return (), False
    if calls is None or calls == []:
        return _NO_CALLS
    if type(calls) is not list:
        return (), False
    ids = tuple([c["id"] for c in calls if type(c) is dict and type(c.get("id")) is str])
    return ids, len(ids) == len(calls) and (len(ids) < 2 or len(set(ids)) == len(ids))


_NO_CALLS: tuple[tuple[str, ...], bool] = ((), True)
# Queries about the last messages ask about the same few call lists again and again.
_parse_calls = lru_cache(maxsize=4096)(_read_calls)


def call_ids(tool_calls: str | None) -> tuple[str, ...]:
    """The ids of the calls in a `tool_calls` string (a JSON array of objects with "id")."""
    if not tool_calls:
        return ()
    return _parse_calls(tool_calls)[0]


def has_tool_calls(message: Message) -> bool:
    """An assistant message makes tool calls if `tool_calls` is set and not blank, `[]` or `null`."""
    tc = message.tool_calls
    return tc is not None and _parse_calls(tc) != ((), True)


class CallOwners:
    """The owner of each tool result among messages fed in order (see the module's rule)."""

    def __init__(self) -> None:
        self.count = 0
        self._caller: dict[str, int] = {}  # call id -> index of the latest assistant calling it

    def feed(self, message: Message) -> int:
        """The index of the owner of this message if it is a tool result with one, else -1."""
        return self.feed_all((message,))[0][0]

    def feed_all(self, messages: Iterable[Message]) -> tuple[list[int], list[tuple[tuple[str, ...], bool]]]:
        """`feed` of each message in order; with what each makes of calls (see `_read_calls`).

        An assistant message's calls are read here once; other messages make none.
        """
        caller = self._caller
        owners: list[int] = []
        calls: list[tuple[tuple[str, ...], bool]] = []
        index = self.count
        for m in messages:
            role = m.role
            if role is Role.ASSISTANT:
                read = _read_calls(m.tool_calls) if m.tool_calls else _NO_CALLS
                for call in read[0]:
                    caller[call] = index
                owners.append(-1)
                calls.append(read)
            else:
                tool_call_id = m.tool_call_id
                owners.append(caller.get(tool_call_id, -1) if role is Role.TOOL and tool_call_id is not None else -1)
                calls.append(_NO_CALLS)
            index += 1
        self.count = index
        return owners, calls


def group_start(owners: Sequence[int], cut: int) -> int:
    """Move `cut` back until no message from `cut` on is a result whose owner comes before it."""
    index = len(owners) - 1
    while index >= cut:
        if 0 <= owners[index] < cut:
            cut = owners[index]  # the owner's whole call group stays together
        index -= 1
    return cut


class ContextCache:
    """The sanitised context of a growing list of active messages, updated in place."""

    def __init__(self) -> None:
        self._reset(-1, False)

    def _reset(self, generation: int, tracking: bool) -> None:
        self._generation = generation
        self._tracking = tracking
        self._seen = 0
        self._owners = CallOwners()
        self._owner: list[int] = []  # per index: the owner of a tool result, else -1
        # Per index: an assistant message's calls, read once (ids, readable); others: none.
        self._calls: list[tuple[tuple[str, ...], bool]] = []
        self._kept: list[bool] = []  # per index: whether the message is in the context
        # Results with an owner: a call id's owners only grow along the log (a later call of an
        # id takes it over), so its latest result tells whether a new one has the same owner.
        self._last: dict[str, int] = {}  # call id -> index of its latest result
        self._superseded: set[int] = set()  # results with a newer one of the same owner and id
        self._answered: list[int] = []  # per index: how many of its call ids have a result
        self._out: list[Message] = []
        self._out_index: list[int] = []  # index in the active list of each message in _out
        self._patches = 0  # how many entries of `patched` were applied

    def update(
        self, active: Sequence[Message], generation: int, patched: Sequence[int] = (), tracking: bool = False
    ) -> list[Message]:
        """The sanitised context of `active` (a new list); `generation` changes when it was rewritten.

        `patched` lists, in order, the indices of `active` whose message was replaced in place by
        a copy that differs only in `completed_at`; it grows within a generation. `tracking`:
        assistant messages without `completed_at` are left out (a change re-judges everything).
        """
        if generation != self._generation or len(active) < self._seen or tracking != self._tracking:
            self._reset(generation, tracking)
        earliest = self._seen
        if len(patched) > self._patches:
            earliest = self._apply_patches(active, patched, earliest)
        if len(active) == self._seen and earliest == self._seen:
            return list(self._out)
        # Both passes run once per message on a cold load: what they use is bound locally.
        seen, count = self._seen, len(active)
        new = active[seen:]
        assistant, tool = Role.ASSISTANT, Role.TOOL
        owners, calls = self._owners.feed_all(new)
        self._calls += calls  # each call list read once, for ownership and for the verdict
        owner_of, last, superseded, answered = self._owner, self._last, self._superseded, self._answered
        owner_of += owners
        answered += [0] * len(new)
        for offset, owner in enumerate(owners):
            if owner >= 0:
                call = new[offset].tool_call_id or ""
                previous = last.get(call)
                if previous is not None and owner_of[previous] == owner:
                    superseded.add(previous)
                else:
                    answered[owner] += 1  # the first result of this call
                last[call] = seen + offset
                earliest = min(earliest, owner)  # the owner's verdict, and its results', may change
        self._seen = count
        cut = bisect_left(self._out_index, earliest)
        out, out_index, all_calls = self._out, self._out_index, self._calls
        tracking = self._tracking
        del out[cut:]
        del out_index[cut:]
        kept = self._kept
        del kept[earliest:]
        for index in range(earliest, count):
            m = active[index]
            role = m.role
            if role is assistant:
                if tracking and m.completed_at is None:
                    keep = False  # interrupted: never marked complete
                else:
                    ids, readable = all_calls[index]
                    if not ids and readable:  # makes no calls: judged by its text
                        text = m.content
                        keep = bool(text) and not text.isspace()  # type: ignore[union-attr]
                    else:  # readable calls have distinct ids: all answered when as many are
                        keep = readable and answered[index] == len(ids)
            elif role is tool:
                # Kept when its owner is, and it is the owner's newest result for its id.
                owner = owner_of[index]
                keep = owner >= 0 and kept[owner] and index not in superseded
            else:
                keep = True
            kept.append(keep)
        out += compress(active[earliest:count], kept[earliest:])
        out_index += compress(range(earliest, count), kept[earliest:])
        return list(out)

    def owners(self) -> list[int]:
        """Per message of the list last passed to `update`: the index of its owner, or -1."""
        return list(self._owner)

    def _apply_patches(self, active: Sequence[Message], patched: Sequence[int], earliest: int) -> int:
        """Swap in completed copies; under tracking a completed assistant message is judged again."""
        for index in patched[self._patches :]:
            if index >= self._seen:
                continue  # judged as a new message below
            if self._tracking and active[index].role is Role.ASSISTANT:
                earliest = min(earliest, index)
                continue
            at = bisect_left(self._out_index, index)
            if at < len(self._out_index) and self._out_index[at] == index:
                self._out[at] = active[index]
        self._patches = len(patched)
        return earliest


def sanitize(messages: Sequence[Message], tracking: bool = False) -> list[Message]:
    """The context of `messages` in one go (the order is kept); see the module's rule."""
    return ContextCache().update(messages, 0, (), tracking)
