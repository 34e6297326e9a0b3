"""Full-text search over the logs of many sessions (`FileStore.search`).

A literal pattern is looked for in the raw bytes of each log first, in its JSON-escaped form,
and only the lines holding it are parsed. When the pattern has characters a person may write as
escapes (non-ASCII as `\\u00e9`, `/` as `\\/`), lines holding such escapes are parsed too; plain
ASCII spelled as `\\u0061` is not looked for (no JSON writer does that). A regular expression
has no such shortcut: every line is parsed. Lines that are not messages (damage, completion
annotations) are skipped.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from .browse import SearchHit
from .codec import LineError, decode_line
from .fileops import open_read
from .layout import MESSAGES, parse_time
from .types import Message

__all__ = ["Query", "search_sessions"]

Buffer = bytearray | mmap.mmap

# Pages mapped up front: faulting them in one by one costs more than the search itself.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
# Logs up to this size are copied into one buffer; larger ones are mapped.
_MAX_COPY = 64 << 20
# The first log's first bytes tell which byte of the pattern is rarest.
_SAMPLE = 64 << 10
# False hits of the rarest byte a log may have, beyond one per 4 KB, before a plain find takes over.
_MISSES_ALLOWED = 16
# Escapes orjson never writes but a hand edit may: lines holding them are parsed to be sure.
_OTHER_ESCAPES = (b"\\u", b"\\/")


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

    def texts(self, m: Message) -> list[tuple[str, str]]:
        """(field, text) of a message to search: content, and with tools the calls and results."""
        role = m.role.value
        if self.roles is not None and role not in self.roles:
            return []
        if self.since is not None:
            when = parse_time(m.created_at or "")
            if when is None or when < self.since:
                return []
        out = []
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
    reader = _Reader()
    probes: list[_Probe] | None = None
    for done, sid in enumerate(ids, 1):
        try:
            fd = open_read(sessions_dir / sid / MESSAGES)
        except OSError:
            continue  # a session without a readable log has nothing to find (check reports it)
        try:
            st = os.fstat(fd)
            if st.st_size and (since_ns is None or st.st_mtime_ns >= since_ns):
                data, size = reader.read(fd, st.st_size)
                if probes is None and query.needle is not None:
                    probes = _probes(query.needle, data, size)
                spans = _all_lines(data, size) if probes is None else _candidate_lines(data, size, probes)
                yield from _search_log(data, spans, sid, query)
        finally:
            reader.release()
            os.close(fd)
        if progress is not None:
            progress(done, len(ids))


class _Reader:
    """Reads logs into one reused buffer: copying from the page cache costs less than mapping
    pages (and unmapping them); a log too large to copy cheaply is mapped instead."""

    def __init__(self) -> None:
        self._buf = bytearray(1 << 20)
        self._map: mmap.mmap | None = None

    def read(self, fd: int, size: int) -> tuple[Buffer, int]:
        """The first `size` bytes of the file (fewer if it shrank), and how many there are."""
        if size > _MAX_COPY:
            self._map = mmap.mmap(fd, size, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
            return self._map, size
        if size > len(self._buf):
            self._buf = bytearray(size)
        got = 0
        with memoryview(self._buf) as view:
            while got < size:
                n = os.readv(fd, [view[got:size]])
                if not n:
                    break
                got += n
        return self._buf, got

    def release(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


class _Probe:
    """Finds a byte string by `memchr` on its rarest byte, verifying each place it occurs.

    Where that byte turns out common (more than one false hit per 4 KB, as in a log full of
    it), a log's remaining bytes are searched with a plain `find` instead.
    """

    def __init__(self, needle: bytes, sample: Buffer, size: int) -> None:
        head = bytes(sample[: min(size, _SAMPLE)])
        counts = {b: head.count(b) for b in set(needle)}
        self.offset = min(range(len(needle)), key=lambda i: counts[needle[i]])
        self.needle = needle
        self.byte = needle[self.offset : self.offset + 1]

    def lines(self, data: Buffer, size: int) -> Iterator[tuple[int, int]]:
        """(start, end) of each complete line of `data[:size]` holding a match, in order."""
        needle, byte, offset, m = self.needle, self.byte, self.offset, len(self.needle)
        misses, plain, at = 0, False, 0
        while True:
            if plain:
                start = data.find(needle, at, size)
                if start < 0:
                    return
            else:
                hit = data.find(byte, at + offset, size)
                if hit < 0:
                    return
                start = hit - offset
                if start + m > size or data.find(needle, start, start + m) != start:
                    misses += 1
                    plain = misses > _MISSES_ALLOWED + (hit >> 12)
                    at = start + 1
                    continue
            end = data.find(b"\n", start + m, size)
            if end < 0:
                return  # the torn last line: readers skip it
            yield data.rfind(b"\n", 0, start) + 1, end
            at = end + 1


def _probes(needle: bytes, sample: Buffer, size: int) -> list[_Probe]:
    """The byte strings to look for; their rarest bytes are judged on the first log read."""
    # Only a pattern with characters a person may write as escapes (non-ASCII, `/`) needs the
    # lines holding escapes too; each probe is another pass over the log.
    escapes = _OTHER_ESCAPES if not needle.isascii() or b"/" in needle else ()
    return [_Probe(probe, sample, size) for probe in (needle, *escapes)]


def _search_log(data: Buffer, spans: list[tuple[int, int]], sid: str, query: Query) -> Iterator[SearchHit]:
    for start, end in reversed(spans):
        try:
            m = decode_line(bytes(data[start:end]), sid)
        except LineError:
            continue
        if m.compacted_at is not None and not query.archived:
            continue
        for field, text in query.texts(m):
            lines = _matching_lines(text, query.find)
            if lines:
                yield SearchHit(sid, m.id, m.role.value, m.created_at, m.compacted_at is not None, field, lines)


def _candidate_lines(data: Buffer, size: int, probes: list[_Probe]) -> list[tuple[int, int]]:
    """(start, end) of every complete line that may match, in file order."""
    starts: set[int] = set()
    spans: list[tuple[int, int]] = []
    for probe in probes:
        for start, end in probe.lines(data, size):
            if start not in starts:
                starts.add(start)
                spans.append((start, end))
    spans.sort()
    return spans


def _all_lines(data: Buffer, size: int) -> list[tuple[int, int]]:
    spans = []
    start = 0
    end = data.find(b"\n", 0, size)
    while end >= 0:
        if end > start:
            spans.append((start, end))
        start = end + 1
        end = data.find(b"\n", start, size)
    return spans


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
