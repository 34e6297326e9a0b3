"""Whole-store answers without a stat per session: `<root>/.summary`, kept true by the change journal.

`compacted_stats`, `recent_user_messages` and `list_sessions` answer from a small root-level
summary: the archive statistics, the newest user prompts and each project's newest sessions.
It stands while four things, each read with one call, are as they were when it was built:

- the boot it was built in (after an OS crash the files may have lost writes it counted);
- the inode and mtime of `sessions/`, which every session created, moved in or removed moves,
  whether by the store or by hand (`cp -r`, `mv`, `rm -rf`);
- the journal `.changes` (`_session/journal.py`): its token and the offset read up to; every store write
  to a session appends the session's id after the change, before the session lock is released;
- the nonce of `.index`, the per-session entries it was computed from.

Otherwise it is brought up to date: sessions named in the journal since that offset, sessions
new in `sessions/` and sessions still settling are checked against their files (`index.py`);
the others' entries are taken as they are, without a stat. So a hand edit to an existing
session's files reaches these aggregates with the next store write to that session, or with
`FileStore.reindex()`. Rows returned (sessions listed, prompts) are re-checked against their
files; if one changed, the query falls back to a stat of every session. A prompt is re-read at
the offset its line had when the summary was built, if its log still has that (inode, size,
mtime); otherwise its log is walked back from the end.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import atomic_write, open_read, read_file
from .._format.classify import classify
from .._format.framing import body, lines_containing_backwards
from .._format.layout import MESSAGES, METADATA, SESSION_ID_PATTERN, SESSIONS
from .._session.journal import JOURNAL, new_journal, rotate_journal
from .._session.scan import USER_MARK, backwards
from ..types import CompactedStats, Message, Role
from .index import SessionIndex

__all__ = ["LIST_KEEP", "RECENT_KEEP", "SUMMARY_FILE", "RootSummary"]

log = logging.getLogger("koda_files")

SUMMARY_FILE = ".summary"
_VERSION = 2
RECENT_KEEP = 100  # user prompts kept: recent_user_messages(limit <= 100) answers from the summary
LIST_KEEP = 50  # newest sessions kept per project: list_sessions(limit <= 50) answers from it
JOURNAL_LIMIT = 1 << 20  # past this size the journal starts again (one stat of every session)
# A `sessions/` mtime this recent may be shared by a later change in the same clock tick: a
# summary keyed on it is not trusted (git's "racily clean" rule). Linux stamps files from a
# clock of 1-10 ms ticks; a file system storing whole seconds (mtime a multiple of 1 s) gets 2 s.
DIR_SLACK_NS = 50_000_000
COARSE_DIR_SLACK_NS = 2_000_000_000
# A session that appeared by hand and was written to this recently may still be being copied
# in: it is checked again by every query until it is older.
SETTLE_NS = 2_000_000_000
_NONE = [-1, -1, -1]
_CHUNK = 512  # sessions checked against their files at a time
Row = list[Any]  # [created_at, id, agent, count, tokens, project_root, title, mode, header key, log key]
Prompt = list[Any]  # [created_at, id, session, offset of its line, length of its line, log key when read]


@functools.cache
def boot_id() -> str:
    """This boot's id on Linux ("" elsewhere: there a summary is not voided by a reboot)."""
    try:
        raw = read_file(Path("/proc/sys/kernel/random/boot_id"))
    except OSError:
        return ""
    return raw.decode(errors="replace").strip() if raw else ""


def _key(path: str) -> list[int]:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return _NONE
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class _Key:
    """What a summary must match, read before anything it summarises."""

    def __init__(self, root: Path) -> None:
        self.boot = boot_id()
        self.now = time.time_ns()
        try:
            st = os.stat(root / SESSIONS, follow_symlinks=False)
            self.dir: list[int] | None = [st.st_ino, st.st_mtime_ns]
        except OSError:
            self.dir = None
        self.token, self.size, self.notes = "", -1, b""
        self._journal = root / JOURNAL

    def read_journal(self, offset: int) -> None:
        """Token and size of the journal, and its bytes from `offset` (none if absent)."""
        try:
            fd = open_read(self._journal)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, 64, 0)
            if b"\n" not in head:
                return
            self.token = head.split(b"\n", 1)[0].decode(errors="replace")
            self.size = size
            if 0 <= offset < size:
                self.notes = os.pread(fd, size - offset, offset)
        finally:
            os.close(fd)


class RootSummary:
    """The summary of one root; every method returns answers valid for the files right now."""

    def __init__(
        self, root: Path, index: SessionIndex, session_ids: Callable[[], list[str]], check_layout: Callable[[], None]
    ) -> None:
        self._check_layout = check_layout  # raises for a root of a newer layout, before any read
        self._root = root
        self._sessions = str(root / SESSIONS)
        self._path = root / SUMMARY_FILE
        self._index = index
        self._session_ids = session_ids
        self._lock = threading.Lock()

    # ── answers ──

    def compacted_stats(self) -> CompactedStats:
        count, sessions, size, oldest = self._current()["stats"]
        return CompactedStats(count, sessions, size, oldest)

    def sessions(self, wanted: str | None, limit: int) -> list[Row] | None:
        """The `limit` newest sessions of project `wanted` and of none (`wanted` None: of every
        project), each re-checked; None: ask the files."""
        data = self._current()
        if wanted is None:
            lists = [*data["projects"].values(), data["none"]]
        else:
            lists = [data["projects"].get(wanted, [[], True]), data["none"]]
        # Each list holds its project's newest rows (all of them when flagged complete), so the
        # newest `limit` of their union are exact when every list is complete or long enough.
        if any(len(rows) < limit and not complete for rows, complete in lists):
            return None
        rows = heapq.nlargest(limit, itertools.chain.from_iterable(r for r, _ in lists), key=lambda r: (r[0], r[1]))
        for row in rows:
            where = f"{self._sessions}/{row[1]}"
            if _key(f"{where}/{METADATA}") != row[8] or _key(f"{where}/{MESSAGES}") != row[9]:
                return None  # changed since the summary: its row would not be exact
        return rows

    def recent_user_messages(self, limit: int) -> list[str] | None:
        """The `limit` newest user prompts, read again from their logs; None: ask the files."""
        data = self._current()
        entries, complete = data["recent"]
        if limit > len(entries) and not complete:
            return None
        chosen = entries[:limit]
        wanted: dict[str, list[Prompt]] = {}
        for prompt in chosen:
            wanted.setdefault(prompt[2], []).append(prompt)
        found: dict[tuple[str, int], str] = {}
        for sid, prompts in wanted.items():
            path = f"{self._sessions}/{sid}/{MESSAGES}"
            got = _at_offsets(path, sid, prompts)
            if got is None:  # the log changed since: find them walking back from its end
                got = _walking_back(path, sid, {p[1] for p in prompts})
            for msg_id, content in got.items():
                found[sid, msg_id] = content
        if len(found) != len(chosen):
            return None  # a prompt is gone or changed by hand
        return [found[p[2], p[1]] for p in chosen]

    def rebuild(self) -> None:
        """Forget the summary and every index entry, and build both again from the files."""
        self._check_layout()
        with self._lock:
            self._index.reload()
            self._index.clear()
            self._update(_Key(self._root), None, force=True)

    # ── keeping it current ──

    def _current(self) -> dict[str, Any]:
        self._check_layout()
        with self._lock:
            key = _Key(self._root)
            if key.dir is None:
                return _empty()
            data = self._load()
            offset = data["journal"][1] if data is not None else 0
            key.read_journal(offset)
            if data is not None and self._valid(data, key):
                return data
            return self._update(key, data)

    def _load(self) -> dict[str, Any] | None:
        try:
            raw = read_file(self._path)
            data = orjson.loads(raw) if raw else None
        except (OSError, ValueError):
            return None
        if type(data) is not dict or data.get("v") != _VERSION:
            return None
        return data

    def _valid(self, data: dict[str, Any], key: _Key) -> bool:
        if not key.token or data.get("boot") != key.boot or data.get("dir") != key.dir:
            return False
        if data.get("journal") != [key.token, key.size]:
            return False
        for sid, (hkey, lkey, settle_at) in data["recheck"].items():
            where = f"{self._sessions}/{sid}"
            if key.now >= settle_at or _key(f"{where}/{METADATA}") != hkey or _key(f"{where}/{MESSAGES}") != lkey:
                return False
        return True

    def _update(self, key: _Key, data: dict[str, Any] | None, force: bool = False) -> dict[str, Any]:
        journal = self._root / JOURNAL
        full = force or data is None or data.get("boot") != key.boot or data["journal"][0] != key.token
        named = _named(key.notes)  # sessions a store wrote: not being copied in by hand
        if key.size < 0 or (full and key.token) or key.size > JOURNAL_LIMIT:
            # A new journal (after a reboot, or a long one): writers already past the old one
            # made their change before this, and the full check below starts after it.
            with contextlib.suppress(OSError):
                if key.size < 0:
                    new_journal(journal)
                else:
                    rotate_journal(journal)
            key.token, key.notes = "", b""
            key.read_journal(0)
            full = True
        offset = key.size
        if not full and data is not None:
            self._index.reload()
            self._index.known()  # loads it
            full = data.get("index") != self._index.nonce or not self._index.nonce
            lines = key.notes.split(b"\n")
            if lines[-1]:
                offset -= len(lines[-1])  # an append still in flight: read it next time
                full = True
            full = full or any(line and line.decode(errors="replace") not in named for line in lines[:-1])
        ids = self._session_ids()
        alive = set(ids)
        settling = set(data["recheck"]) if data is not None else set()
        # Everything, or those named by the journal, still settling, or new in `sessions/`.
        dirty = alive if full else ((named | settling) & alive) | (alive - self._index.known())
        checked = sorted(dirty)
        unsettled: dict[str, Any] = {}
        for at in range(0, len(checked), _CHUNK):  # a chunk at a time: headers are not all held at once
            chunk = checked[at : at + _CHUNK]
            headers = self._index.headers(chunk)
            for sid in chunk:
                self._index.summary(sid)
            unsettled.update(_unsettled(self._index, [s for s in chunk if s not in named], headers, key.now))
            del headers
        self._index.save(ids)
        out = _compute(self._index, ids, self._sessions)
        out["recheck"] = unsettled
        slack = COARSE_DIR_SLACK_NS if key.dir is not None and key.dir[1] % 1_000_000_000 == 0 else DIR_SLACK_NS
        racy = key.dir is not None and key.dir[1] > key.now - slack
        out.update(v=_VERSION, boot=key.boot, dir=None if racy else key.dir, index=self._index.nonce)
        out["journal"] = [key.token, offset]
        if os.path.isdir(self._sessions):
            with contextlib.suppress(OSError):
                atomic_write(self._path, [orjson.dumps(out)], durable=False)
        return out


def _named(notes: bytes) -> set[str]:
    """Session ids in whole journal lines (anything else there is not a session id)."""
    lines = notes.split(b"\n")[:-1]
    return {t for t in (line.decode(errors="replace") for line in lines) if SESSION_ID_PATTERN.fullmatch(t)}


def _empty() -> dict[str, Any]:
    return {"stats": [0, 0, 0, None], "projects": {}, "none": [[], True], "recent": [[], True]}


def _unsettled(index: SessionIndex, sids: list[str], headers: dict[str, Any], now: int) -> dict[str, Any]:
    """Sessions found (not named by the journal) with no readable header or written in the last moments."""
    out = {}
    for sid in sids:
        _, _, hkey, lkey = index.trusted(sid)
        newest = max(hkey[2], lkey[2])
        if sid not in headers:
            out[sid] = [hkey, lkey, 1 << 62]  # until it changes
        elif newest > now - SETTLE_NS:
            out[sid] = [hkey, lkey, newest + SETTLE_NS]
    return out


def _compute(index: SessionIndex, ids: list[str], sessions: str) -> dict[str, Any]:
    """Statistics, per-project newest sessions and newest prompts from the index entries of `ids`."""
    count = with_archive = size = 0
    oldest: str | None = None
    # Bounded min-heaps, so memory does not grow with the store: each project's newest rows (and
    # how many it has), and the sessions with the newest prompts (RECENT_KEEP sessions hold the
    # RECENT_KEEP newest prompts, each giving at least its newest).
    projects: dict[str, tuple[list[tuple[tuple[str, str], Row]], list[int]]] = {}
    none: tuple[list[tuple[tuple[str, str], Row]], list[int]] = ([], [0])
    by_prompt: list[tuple[str, int, str]] = []
    for sid in ids:
        header, n, hkey, lkey = index.trusted(sid)
        if n.archived:
            count += n.archived
            with_archive += 1
            size += n.archived_bytes
            if n.oldest_archived and (oldest is None or n.oldest_archived < oldest):
                oldest = n.oldest_archived
        if n.newest_user is not None:
            _keep(by_prompt, RECENT_KEEP, (n.newest_user, n.newest_user_id, sid))
        if header is None:
            continue
        root = header.get("project_root")
        if root is not None and not isinstance(root, str):
            continue  # listed for no project
        row = [
            str(header.get("created_at") or ""), sid, str(header.get("agent_name") or ""), n.count, n.tokens,
            root, _text(header.get("title")), _text(header.get("mode")), hkey, lkey,
        ]
        heap, seen = none if root is None else projects.setdefault(root, ([], [0]))
        _keep(heap, LIST_KEEP, ((row[0], row[1]), row))
        seen[0] += 1
    lists = {p: _newest(*kept) for p, kept in projects.items()}
    return {
        "stats": [count, with_archive, size, oldest],
        "projects": lists,
        "none": _newest(*none),
        "recent": _prompts(sessions, by_prompt),
    }


def _keep(heap: list[Any], cap: int, item: Any) -> None:
    """Push `item` on the min-heap `heap`, keeping only the `cap` largest."""
    if len(heap) < cap:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _newest(heap: list[tuple[tuple[str, str], Row]], seen: list[int]) -> list[Any]:
    """A project's kept rows, newest first, and whether they are all it has."""
    return [[row for _, row in sorted(heap, key=lambda kept: kept[0], reverse=True)], seen[0] <= LIST_KEEP]


def _prompts(sessions: str, by_prompt: list[tuple[str, int, str]]) -> list[Any]:
    """The RECENT_KEEP newest user prompts (see `Prompt`), and whether that is all of them.

    Sessions are read newest prompt first, each backwards (a log is in time order), until no
    session left can hold a prompt newer than the oldest kept.
    """
    by_prompt.sort(reverse=True)
    best: list[tuple[str, int, str, int, int, list[int]]] = []
    for newest, newest_id, sid in by_prompt:
        if len(best) >= RECENT_KEEP and (newest, newest_id) < best[0][:2]:
            break
        taken = 0
        with contextlib.closing(_user_lines(f"{sessions}/{sid}/{MESSAGES}", sid)) as newest_first:
            for offset, length, m, key in newest_first:
                item = (m.created_at or "", m.id, sid, offset, length, key)
                if len(best) < RECENT_KEEP:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
                else:
                    break  # the rest of this log is older still
                taken += 1
                if taken >= RECENT_KEEP:
                    break
    complete = len(best) < RECENT_KEEP  # fewer than the cap: these are all the prompts there are
    return [[list(item) for item in sorted(best, reverse=True)], complete]


def _prompt(line: bytes, session_id: str) -> Message | None:
    """The user message with content a line holds, else None."""
    m = classify(line, session_id)[1]
    return m if type(m) is Message and m.role is Role.USER and m.content else None


def _user_lines(path: str, session_id: str) -> Generator[tuple[int, int, Message, list[int]], None, None]:
    """(offset, length, message, log key) of each user prompt in a log, newest first; a log that
    cannot be read is logged and has none."""
    try:
        fd = open_read(Path(path))
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("%s: cannot be read (%s); skipped", path, exc.strerror or exc)
        return
    try:
        st = os.fstat(fd)
        key = [st.st_ino, st.st_size, st.st_mtime_ns]
        for offset, line in lines_containing_backwards(fd, USER_MARK, st.st_size):
            m = _prompt(line, session_id)
            if m is not None:
                yield offset, len(line), m, key
    except OSError as exc:
        log.warning("%s: cannot be read (%s); skipped", path, exc.strerror or exc)
    finally:
        os.close(fd)


def _at_offsets(path: str, session_id: str, prompts: list[Prompt]) -> dict[int, str] | None:
    """The prompts read where their lines were, if the log is the file they were read from."""
    try:
        fd = open_read(Path(path))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        out: dict[int, str] = {}
        for created_at, msg_id, _, offset, length, key in prompts:
            if key != [st.st_ino, st.st_size, st.st_mtime_ns]:
                return None
            # A few bytes more than the line: a BOM or CR that `body` strips, and its newline.
            line = body(os.pread(fd, length + 8, offset).split(b"\n", 1)[0], offset == 0)
            m = _prompt(line, session_id)
            if m is None or m.id != msg_id or (m.created_at or "") != created_at:
                return None
            out[msg_id] = m.content or ""  # never empty: `_prompt` takes only prompts with content
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


def _walking_back(path: str, session_id: str, ids: set[int]) -> dict[int, str]:
    """The contents of the user prompts `ids` found walking back from the end of a log."""
    out: dict[int, str] = {}
    lowest = min(ids)
    with contextlib.closing(backwards(Path(path), session_id, USER_MARK)) as newest:
        for m in newest:
            if m.id < lowest:
                break
            if m.id in ids and m.role is Role.USER and m.content:
                out[m.id] = m.content
    return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
