"""Token usage totals, as koda's SQL sums them."""

from __future__ import annotations

from collections.abc import Iterable

from ..types import Message, SessionUsage

__all__ = ["sum_usage", "usage_by_agent"]

MAIN_AGENT = "main"


def _counts(m: Message) -> tuple[int, int, int, int, int]:
    return (
        m.prompt_tokens or 0,
        m.completion_tokens or 0,
        m.cache_read_tokens or 0,
        m.cache_creation_tokens or 0,
        m.thinking_tokens or 0,
    )


def _total(messages: Iterable[Message]) -> SessionUsage:
    p = c = cr = cc = t = calls = 0
    for m in messages:
        if m.prompt_tokens is None and m.completion_tokens is None:
            continue  # not a model call
        mp, mc, mcr, mcc, mt = _counts(m)
        p, c, cr, cc, t, calls = p + mp, c + mc, cr + mcr, cc + mcc, t + mt, calls + 1
    return SessionUsage(p, c, cr, cc, t, calls)


def sum_usage(messages: Iterable[Message]) -> SessionUsage:
    """Totals over messages with prompt or completion tokens; `api_calls` counts them."""
    return _total(messages)


def usage_by_agent(messages: Iterable[Message]) -> list[tuple[str, SessionUsage]]:
    """`sum_usage` per agent ("main" for none), largest prompt + completion first, then by name."""
    groups: dict[str, list[Message]] = {}
    for m in messages:
        if m.prompt_tokens is not None or m.completion_tokens is not None:
            groups.setdefault(MAIN_AGENT if m.agent_name is None else m.agent_name, []).append(m)
    rows = [(name, _total(ms)) for name, ms in groups.items()]
    rows.sort(key=lambda r: (-(r[1].prompt_tokens + r[1].completion_tokens), r[0]))
    return rows
