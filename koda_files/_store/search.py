"""Full-text search over the logs of many sessions (`FileStore.search`).

A literal pattern is looked for in the raw bytes of each log first, in its JSON-escaped form
(`koda_files.bytescan`), and only the lines holding it are parsed. When the pattern has
characters a person may write as escapes (non-ASCII as `\\u00e9`, `/` as `\\/`), lines
holding such escapes are parsed too; plain ASCII spelled as `\\u0061` is not looked for (no
JSON writer does that). A regular expression has no such shortcut: every line is parsed.
Lines that are not messages (damage, completion annotations) are skipped.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from .._format.codec import LineError, decode_line
from .._format.layout import MESSAGES, parse_time
from ..types import Message, SearchHit
from .bytescan import LogScanner

__all__ = ["Query", "search_sessions"]


@dataclass(frozen=True)
class Query:
    """What to look for and where; `needle` is the raw-bytes pre-filter (None: parse every line)."""

    find: Callable[[str], Iterator[int]]  # start offsets of the matches in a text
    needle: bytes | None
    tools: bool
    archived: bool
    roles: frozenset[str] | None
    since: datetime | None

    @staticmethod
    def make(
        pattern: str, regex: bool, tools: bool, archived: bool, roles: frozenset[str] | None, since: str | None
    ) -> Query:
        """Validate the pattern and the filters; a bad regex or date is a `ValueError` naming it."""
        if not pattern:
            raise ValueError("the search pattern is empty")
        when = None
        if since is not None:
            when = parse_time(since)
            if when is None:
                raise ValueError(f"not a date or time: {since!r} (e.g. 2026-11-27 or 2026-11-27T11:09)")
        if regex:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
            return Query(lambda t: (m.start() for m in compiled.finditer(t)), None, tools, archived, roles, when)
        return Query(_literal(pattern), orjson.dumps(pattern)[1:-1], tools, archived, roles, when)

    def texts(self, m: Message) -> list[tuple[Literal["content", "tool_calls"], str]]:
        """(field, text) of a message to search: content, and with tools the calls and results."""
        role = m.role.value
        if self.roles is not None and role not in self.roles:
            return []
        if self.since is not None:
            when = parse_time(m.created_at or "")
            if when is None or when < self.since:
                return []
        out: list[tuple[Literal["content", "tool_calls"], str]] = []
        if m.content and (role != "tool" or self.tools or self.roles is not None):
            out.append(("content", m.content))
        if m.tool_calls and self.tools:
            out.append(("tool_calls", m.tool_calls))
        return out


def _literal(pattern: str) -> Callable[[str], Iterator[int]]:
    def find(text: str) -> Iterator[int]:
        at = text.find(pattern)
        while at >= 0:
            yield at
            at = text.find(pattern, at + len(pattern))

    return find


def search_sessions(sessions_dir: Path, ids: list[str], query: Query, progress: Any) -> Iterator[SearchHit]:
    """Hits of each session in the order of `ids`, each session's last message first."""
    since_ns = query.since.timestamp() * 1e9 if query.since is not None else None
    scanner = LogScanner(query.needle, since_ns)
    for done, sid in enumerate(ids, 1):
        # Closed on the way out, also early (`--limit`): that closes the log at once.
        with contextlib.closing(scanner.lines(f"{sessions_dir}/{sid}/{MESSAGES}", sid)) as lines:
            yield from _search_log(lines, sid, query)
        if progress is not None:
            progress(done, len(ids))


def _search_log(lines: Iterable[tuple[bool, bytes]], sid: str, query: Query) -> Iterator[SearchHit]:
    for above_compaction, line in lines:
        try:
            m = decode_line(line, sid)
        except LineError:
            continue
        archived = above_compaction or m.compacted_at is not None
        if archived and not query.archived:
            continue
        for field, text in query.texts(m):
            found = _matching_lines(text, query.find)
            if found:
                yield SearchHit(sid, m.id, m.role.value, m.created_at, archived, field, found)


def _matching_lines(text: str, find: Callable[[str], Iterator[int]]) -> tuple[str, ...]:
    """The lines of `text` in which a match starts, each once, in order."""
    out: list[str] = []
    last_start = -1
    with contextlib.suppress(StopIteration):
        for at in find(text):
            start = text.rfind("\n", 0, at) + 1
            if start == last_start:
                continue
            last_start = start
            end = text.find("\n", at)
            out.append(text[start:] if end < 0 else text[start:end])
    return tuple(out)
