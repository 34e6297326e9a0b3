"""A derived summary of every session, so listing and statistics need not read every file.

`<root>/.index` (a dot-file, JSON) maps each session id to what was read from its files the last
time: header fields of `metadata.json`, and message count, tokens and archived statistics of
`messages.jsonl`, each under the (inode, size, mtime) of the file it came from. A lookup stats
the files and re-reads those whose identity changed; the root summary (`_store/summary.py`) also reads
entries without a stat, for sessions the change journal says are unchanged. Losing or
corrupting the index costs one re-read; writing it is best effort (a read-only root still
answers). Each save gets a new random `nonce`, so a summary can tell the index it was built on.

The file is one JSON object written an entry a line, so it loads by splitting lines: each entry
stays the bytes it was stored as and is parsed only when used (a parsed entry of ten thousand
sessions would take 25 MB; their bytes take about a quarter of that).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from .._files.fileops import atomic_write, open_read, read_file
from .._format.classify import COMPACTION, COMPACTION_MARK, classify, compaction_of
from .._format.codec import ARCHIVED_MARK
from .._format.framing import iter_file_lines
from .._format.header import read_header
from .._format.layout import MESSAGES, METADATA
from ..errors import KodaFilesError
from ..types import Message

__all__ = ["LogSummary", "SessionIndex"]

log = logging.getLogger("koda_files")

INDEX_FILE = ".index"
_VERSION = 4
_HEAD = re.compile(rb'\{"version":4,"nonce":"([0-9a-f]*)","headers":\{')
_BETWEEN = b'},"logs":{'
_END = b"}}"
_FIRST_USER_CHARS = 200
_SCAN_CHUNK = 1 << 20
_ARCHIVE_MARKS = (ARCHIVED_MARK, COMPACTION_MARK)
_ARCHIVE_MARKS_START = b'"compact'
Key = list[int]


@dataclass(frozen=True)
class LogSummary:
    """Counts over one `messages.jsonl` (archived messages included in `count` and `tokens`)."""

    count: int = 0
    tokens: int = 0
    archived: int = 0
    archived_bytes: int = 0
    oldest_archived: str | None = None
    first_user: str = ""  # the first line of the first user message with content (at most 200 chars)
    newest_user: str | None = None  # `created_at` of the newest user message with content
    newest_user_id: int = 0


def _key(st: os.stat_result) -> Key:
    return [st.st_ino, st.st_size, st.st_mtime_ns]  # a list, as it reads back from the JSON


def _pack(entry: list[Any]) -> bytes:
    """An entry as stored: its JSON, copied (orjson's own bytes keep a 4 KB buffer each)."""
    return bytes(memoryview(orjson.dumps(entry)))


def _parse(raw: bytes | None) -> object:
    """An entry as stored (None: none, or bytes that do not parse)."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except ValueError:
        return None


def _entries(raw: bytes, at: int, end: int) -> dict[str, bytes] | None:
    """The `"id":[...]` lines of `raw[at:end]` (each but the last ending in a comma) as id ->
    entry bytes; None if a line is not one."""
    out = {}
    while at < end:
        stop = raw.find(b"\n", at, end)
        stop = end if stop < 0 else stop
        key_end = raw.find(b'":', at, stop)
        if raw[at : at + 1] != b'"' or key_end < 0 or raw.find(b"\\", at, key_end) >= 0:
            return None
        value_end = stop - 1 if raw[stop - 1 : stop] == b"," else stop
        out[raw[at + 1 : key_end].decode(errors="replace")] = raw[key_end + 2 : value_end]
        at = stop + 1
    return out


def _section(table: list[tuple[str, bytes]]) -> Iterator[bytes]:
    """The lines of one table, a few hundred entries to a piece (never the whole table at once)."""
    for at in range(0, len(table), 256):
        last = at + 256 >= len(table)
        part = b",\n".join(b"%s:%s" % (orjson.dumps(sid), raw) for sid, raw in table[at : at + 256])
        yield part + (b"\n" if last else b",\n")


def _current(entry: object, key: Key) -> TypeGuard[list[Any]]:
    """An index entry (`[key, value]` as loaded from JSON) taken from the file as it is now."""
    return type(entry) is list and len(entry) == 2 and entry[0] == key


def summarize(path: Path, session_id: str) -> LogSummary:
    """Read one log and count it; a message is archived as `classify` says."""
    count = tokens = archived = size = 0
    oldest: str | None = None
    first_user = ""
    newest: tuple[str, int] | None = None
    pending = pending_size = 0  # messages since the last compaction line: archived by the next
    for line in _lines(path):
        kind, m = classify(line, session_id)
        if type(m) is not Message:
            continue
        if kind == COMPACTION and pending:
            found = compaction_of(line)
            assert found is not None
            archived, size, pending, pending_size = archived + pending, size + pending_size, 0, 0
            oldest = found.at if oldest is None or found.at < oldest else oldest
        count += 1
        if m.role.value == "user" and m.content:
            stamp = (m.created_at or "", m.id)
            if newest is None or stamp > newest:
                newest = stamp
            if not first_user and m.content.strip():
                first_user = m.content.strip().split("\n", 1)[0][:_FIRST_USER_CHARS]
        tokens += (m.prompt_tokens or 0) + (m.completion_tokens or 0)
        weight = len((m.content or "").encode()) + len((m.tool_calls or "").encode())
        if m.compacted_at is not None:
            archived += 1
            size += weight
            if oldest is None or m.compacted_at < oldest:
                oldest = m.compacted_at
        else:
            pending, pending_size = pending + 1, pending_size + weight
    newest_at, newest_id = newest if newest is not None else (None, 0)
    return LogSummary(count, tokens, archived, size, oldest, first_user, newest_at, newest_id)


def _lines(path: Path) -> Iterator[bytes]:
    """The lines of a log; one that cannot be read (a directory, a symlink) has none."""
    try:
        for _, line in iter_file_lines(path, with_tail=True):
            yield line
    except OSError:
        return


class SessionIndex:
    """The index of one root, loaded once per store and checked against the files on every use.

    Entries are kept as the bytes of the JSON lists they are stored as (`[inode, size, mtime]`
    keys, summary fields in `LogSummary` order) and parsed one at a time when used.
    """

    def __init__(self, root: Path) -> None:
        self._path = root / INDEX_FILE
        self._sessions = str(root / "sessions")  # str paths: pathlib costs more than the stat here
        self._lock = threading.Lock()
        self._loaded = False
        self._dirty = False
        self._headers: dict[str, bytes] = {}  # sid -> JSON of [key, header]
        self._logs: dict[str, bytes] = {}  # sid -> JSON of [key, summary fields]
        self.nonce = ""  # of the file as loaded or last saved ("": none)

    def reload(self) -> None:
        """Forget what is in memory; the next use reads the file as it is now."""
        with self._lock:
            self._loaded = self._dirty = False
            self._headers, self._logs, self.nonce = {}, {}, ""

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            raw = read_file(self._path)
        except OSError as exc:
            log.debug("%s unreadable (%s); rebuilding it", self._path, exc)
            return
        # Derived data: an index not of this shape (damaged, older) is rebuilt, never an error.
        raw = raw or b""
        first = raw.find(b"\n") + 1
        middle = raw.find(b"\n" + _BETWEEN + b"\n")
        head = _HEAD.fullmatch(raw, 0, max(0, first - 1))
        if head is None or middle < first - 1 or not raw.endswith(b"\n" + _END + b"\n"):
            return
        headers = _entries(raw, first, middle)
        logs = _entries(raw, middle + len(_BETWEEN) + 2, len(raw) - len(_END) - 2)
        if headers is not None and logs is not None:
            self._headers, self._logs, self.nonce = headers, logs, head.group(1).decode()

    def headers(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The headers (without key/value metadata) of these sessions; unreadable ones are left out (logged)."""
        out: dict[str, dict[str, Any]] = {}
        stale = []
        with self._lock:
            self._load()
            for sid in session_ids:
                try:
                    key = _key(os.stat(f"{self._sessions}/{sid}/{METADATA}", follow_symlinks=False))
                except OSError:
                    key = [-1, -1, -1]
                cached = _parse(self._headers.get(sid))
                if _current(cached, key) and type(cached[1]) is dict:
                    out[sid] = cached[1]
                else:
                    stale.append((sid, key))
        for sid, key in stale:
            try:
                header = read_header(Path(self._sessions, sid), sid)
            except KodaFilesError as exc:
                log.warning("%s; session skipped", exc)
                with self._lock:
                    if self._headers.pop(sid, None) is not None:
                        self._dirty = True
                continue
            header.pop("metadata", None)  # values can be large; listing never needs them
            out[sid] = header
            with self._lock:
                self._headers[sid] = _pack([key, header])
                self._dirty = True
        return out

    def clear(self) -> None:
        """Drop every entry: the next lookups read every file again."""
        with self._lock:
            self._load()
            self._headers, self._logs, self._dirty = {}, {}, True

    def known(self) -> set[str]:
        """Ids that have an entry (current or not)."""
        with self._lock:
            self._load()
            return set(self._headers) | set(self._logs)

    def trusted(self, session_id: str) -> tuple[dict[str, Any] | None, LogSummary, Key, Key]:
        """The entry as stored, without a stat: header (None if none), log summary, header key, log key."""
        with self._lock:
            self._load()
            h, lg = _parse(self._headers.get(session_id)), _parse(self._logs.get(session_id))
        header = h[1] if type(h) is list and len(h) == 2 and type(h[1]) is dict else None
        summary = LogSummary()
        if type(lg) is list and len(lg) == 2:
            with contextlib.suppress(TypeError):
                summary = LogSummary(*lg[1])
        hkey = h[0] if header is not None and type(h) is list else [-1, -1, -1]
        lkey = lg[0] if type(lg) is list and len(lg) == 2 else [-1, -1, -1]
        return header, summary, hkey, lkey

    def _indexed(self, session_id: str) -> tuple[str, Key | None, LogSummary | None]:
        """The log's path, its key (None: it cannot be stat'ed) and the index's summary if current."""
        path = f"{self._sessions}/{session_id}/{MESSAGES}"
        try:
            key = _key(os.stat(path, follow_symlinks=False))
        except OSError:
            return path, None, None
        with self._lock:
            self._load()
            cached = _parse(self._logs.get(session_id))
        if _current(cached, key):
            with contextlib.suppress(TypeError):
                return path, key, LogSummary(*cached[1])
        return path, key, None

    def summary(self, session_id: str) -> LogSummary:
        """Counts of a session's log, re-read only if the file changed since they were taken."""
        path, key, summary = self._indexed(session_id)
        if key is None:
            with self._lock:
                if self._logs.pop(session_id, None) is not None:
                    self._dirty = True
            return LogSummary()
        if summary is None:
            summary = summarize(Path(path), session_id)
            with self._lock:
                self._logs[session_id] = _pack([key, list(dataclasses.astuple(summary))])
                self._dirty = True
        return summary

    def may_have_archived(self, session_id: str) -> bool:
        """False only if the session surely has no archived message (a cheap pre-check for purge).

        From the index when its entry is current; else from a byte search of the log for the
        `compacted_at` key, which is cheaper than counting the log.
        """
        path, key, summary = self._indexed(session_id)
        if key is None:
            return False
        if summary is not None:
            return summary.archived > 0
        try:
            return _holds_archive_mark(path, key[1])
        except FileNotFoundError:
            return False
        except OSError as exc:  # a directory or a symlink where the log should be: not this scan's to fix
            log.warning("%s: cannot be read (%s); skipped", path, exc.strerror or exc)
            return False

    def save(self, live: list[str]) -> None:
        """Write the index if it changed, keeping only `live` sessions; errors are ignored.

        Never written where there is no `sessions/` directory: a read leaves a non-store as it was.
        """
        if not os.path.isdir(self._sessions):
            return
        with self._lock:
            self._load()
            alive = set(live)
            for table in (self._headers, self._logs):
                for sid in [s for s in table if s not in alive]:
                    del table[sid]
                    self._dirty = True
            if not self._dirty:
                return
            self.nonce = secrets.token_hex(8)
            headers, logs = list(self._headers.items()), list(self._logs.items())
            head = b'{"version":%d,"nonce":"%s","headers":{\n' % (_VERSION, self.nonce.encode())
            self._dirty = False
        data = itertools.chain([head], _section(headers), [_BETWEEN + b"\n"], _section(logs), [_END + b"\n"])
        try:
            atomic_write(self._path, data, durable=False)
        except OSError:
            self.nonce = "unsaved"  # matches no file: a summary built now is not bound to a stale one


def _holds_archive_mark(path: str, size: int) -> bool:
    """True if a mark of archived messages is in the first `size` bytes of the file (its size when
    stat'ed): one byte search per megabyte read, not a step per line. OSError if unreadable."""
    marks = _ARCHIVE_MARKS
    fd = open_read(path)
    try:
        overlap = max(map(len, marks)) - 1  # a mark cut by a read is found joined to the next
        pos, tail = 0, b""
        while pos < size and (chunk := os.pread(fd, min(_SCAN_CHUNK, size - pos), pos)):
            pos += len(chunk)
            data = tail + chunk
            # Most logs hold neither: one search for what both begin with rules both out.
            if _ARCHIVE_MARKS_START in data and any(mark in data for mark in marks):
                return True
            tail = data[-overlap:]
        return False
    finally:
        os.close(fd)
