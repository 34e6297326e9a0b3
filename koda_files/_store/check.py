"""Integrity checking and repair of a store: `FileStore.check(repair=False)`.

`check_store` walks `<root>/sessions/` and reports, per session, what a reader has to skip or a
crash left behind: lines that are not messages (with file and line number), a torn last line
(no final newline), temporary files and half-created or half-deleted session directories,
headers (`metadata.json`) that do not parse, a missing `messages.jsonl`, and entries that cannot
be sessions (symlinks, plain files, bad names).

`repair=True`, per session and under the session's lock: unreadable lines are appended to
`quarantine.jsonl` in the session directory (one JSON object per line holding the exact bytes;
the file is only ever appended to) and then removed from `messages.jsonl` by an atomic rewrite
that copies every other line byte for byte; a torn last line that is a whole message only lacking
its newline gets the newline; temporary files are removed. Nothing is ever followed through a
symbolic link, and nothing a person wrote is deleted without first being kept in quarantine.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import open_append, open_read, remove_entry, sync, write_all
from .._format.codec import LineError, decode_entry
from .._format.header import read_header
from .._format.layout import MESSAGES, METADATA, utc_now, validate_session_id
from .._session.session import SessionDir
from ..errors import KodaFilesError, SessionNotFoundError
from ..types import CheckReport, Problem
from .root import StoreRoot

__all__ = ["QUARANTINE", "STAGING_GRACE_SECONDS", "check_store"]

QUARANTINE = "quarantine.jsonl"
# A `.new-*` / `.deleted-*` directory or root temp file younger than this may belong to an
# operation still running in another process (they are not covered by a session lock): it is
# reported but left alone.
STAGING_GRACE_SECONDS = 60.0

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


def check_store(store: StoreRoot, repair: bool) -> CheckReport:
    """Check every session under the store's root; with `repair`, fix what can be fixed safely."""
    sessions_dir = store.sessions_dir
    problems: list[Problem] = []
    problems += _root_leftovers(store.root, repair)
    try:
        entries = sorted(os.scandir(sessions_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return CheckReport(0, tuple(problems))
    count = 0
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            problems += _dot_entry(path, repair)
            continue
        try:
            sid = validate_session_id(entry.name)
        except KodaFilesError:
            problems.append(Problem("not-a-session", str(path), None, None, "not a valid session id"))
            continue
        if entry.is_symlink():
            problems.append(
                Problem("not-a-session", str(path), sid, None, "a symbolic link, not followed")
            )
            continue
        if not entry.is_dir(follow_symlinks=False):
            problems.append(Problem("not-a-session", str(path), sid, None, "not a directory"))
            continue
        count += 1
        with store.visit(sid) as s:
            problems += _check_session(s, repair)
    return CheckReport(count, tuple(problems))


# ── leftovers outside sessions ──


def _is_old(path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return time.time() - st.st_mtime >= STAGING_GRACE_SECONDS


def _root_leftovers(root: Path, repair: bool) -> list[Problem]:
    out: list[Problem] = []
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            out.append(_leftover(root / name, None, "temporary file left by an interrupted write", repair))
    return out


def _dot_entry(path: Path, repair: bool) -> list[Problem]:
    name = path.name
    if name.startswith(".new-"):
        detail = "session directory whose creation was interrupted"
    elif name.startswith(".deleted-"):
        detail = "session directory whose deletion was interrupted"
    elif name.endswith(".tmp"):
        detail = "temporary file left by an interrupted write"
    else:
        return []
    return [_leftover(path, None, detail, repair)]


def _leftover(path: Path, sid: str | None, detail: str, repair: bool) -> Problem:
    problem = Problem("temp-file", str(path), sid, None, detail)
    if not repair:
        return problem
    if not _is_old(path) and not path.name.startswith(".deleted-"):
        # `.deleted-*` is never in use by anyone (the rename made it unreachable); the others
        # may be an operation still in progress elsewhere.
        return replace(problem, detail=detail + "; recent, may still be in progress: left alone")
    return replace(problem, repaired=remove_entry(path))


# ── one session ──


@contextlib.contextmanager
def _maybe_locked(s: SessionDir) -> Iterator[bool]:
    """Hold the session lock if it can be had (True); a read-only root is checked without it."""
    try:
        s.lock(note=True)  # a hand edit it reads counts for the root summary from now on
    except SessionNotFoundError:
        raise SessionNotFoundError(s.id, "deleted during the check") from None
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        s.unlock()


def _check_session(s: SessionDir, repair: bool) -> list[Problem]:
    try:
        with _maybe_locked(s) as locked:
            problems = _check_session_locked(s, repair and locked)
    except SessionNotFoundError:
        return []
    if repair and not locked:
        why = f"not repaired: the session lock {s.lock_path} cannot be taken (a read-only root?)"
        problems = [replace(p, detail=f"{p.detail}; {why}" if p.detail else why) for p in problems]
    return problems


def _check_session_locked(s: SessionDir, repair: bool) -> list[Problem]:
    out: list[Problem] = []
    # Temporary files: under the session lock nobody is writing one, so every one is a leftover.
    for name in sorted(os.listdir(s.path)):
        if name.startswith(".") and name.endswith(".tmp"):
            p = s.path / name
            problem = Problem("temp-file", str(p), s.id, None, "temporary file left by an interrupted write")
            out.append(replace(problem, repaired=remove_entry(p)) if repair else problem)
    try:
        read_header(s.path, s.id)
    except KodaFilesError as exc:
        out.append(Problem("bad-header", str(s.path / METADATA), s.id, None, str(exc)))
    out += _check_log(s, repair)
    return out


@dataclass
class _Scan:
    bad: list[tuple[int, str, bytes]] = field(default_factory=list)  # (line number, reason, raw line)
    tail: bytes | None = None
    tail_line: int = 0
    tail_ok: bool = False  # the torn tail is a whole message only missing its newline
    st: os.stat_result | None = None


def _raw_lines(fd: int) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes including the terminator) of every line; the last may lack `\\n`."""
    pending = b""
    line_no = 1
    pos = 0
    while chunk := os.pread(fd, _CHUNK, pos):
        pos += len(chunk)
        data = pending + chunk
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            yield line_no, data[start : nl + 1]
            line_no += 1
            start = nl + 1
        pending = data[start:]
    if pending:
        yield line_no, pending


def _body(raw: bytes, line_no: int) -> bytes:
    """The line as a reader parses it: without `\\n`, `\\r` and (on line 1) a BOM."""
    if line_no == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw


def _scan_log(s: SessionDir, fd: int) -> _Scan:
    scan = _Scan(st=os.fstat(fd))
    for line_no, raw in _raw_lines(fd):
        body = _body(raw, line_no)
        terminated = raw.endswith(b"\n")
        if not body.strip():
            if not terminated:  # e.g. a zero-filled or whitespace tail
                scan.tail, scan.tail_line = raw, line_no
            continue
        try:
            decode_entry(body, s.id)  # a message, or a completion annotation of one
            ok, reason = True, ""
        except LineError as exc:
            ok, reason = False, str(exc)
        if not terminated:
            scan.tail, scan.tail_line, scan.tail_ok = raw, line_no, ok
        elif not ok:
            scan.bad.append((line_no, reason, raw[:-1]))  # the exact bytes, without the newline
    return scan


def _check_log(s: SessionDir, repair: bool) -> list[Problem]:
    path = s.messages_path
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return [Problem("missing-log", str(path), s.id, None, f"{MESSAGES} is missing (reads as empty)")]
    except OSError as exc:
        why = "a symbolic link, not followed" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        return [Problem("missing-log", str(path), s.id, None, f"cannot be read: {why}")]
    try:
        scan = _scan_log(s, fd)
    finally:
        os.close(fd)
    problems = [Problem("bad-line", str(path), s.id, n, f"line {n}: {why}") for n, why, _ in scan.bad]
    if scan.tail is not None:
        what = (
            "a whole message without its final newline (read as a message; repair adds the newline)"
            if scan.tail_ok
            else "an incomplete last line (torn write or hand edit), skipped by readers"
        )
        problems.append(
            Problem("torn-tail", str(path), s.id, scan.tail_line, f"line {scan.tail_line}: {what}")
        )
    if not repair or not problems:
        return problems
    try:
        _repair_log(s, scan)
    except (OSError, KodaFilesError) as exc:
        return [replace(p, detail=f"{p.detail}; repair failed: {exc}") for p in problems]
    return [replace(p, repaired=True) for p in problems]


def _quarantine_record(s: SessionDir, line_no: int, reason: str, raw: bytes, now: str) -> bytes:
    record: dict[str, Any] = {
        "session_id": s.id,
        "file": MESSAGES,
        "line": line_no,
        "reason": reason,
        "quarantined_at": now,
    }
    try:
        record["text"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["base64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _repair_log(s: SessionDir, scan: _Scan) -> None:
    """Quarantine the bad lines (durably, first), then rewrite the log without them, atomically."""
    before = scan.st
    assert before is not None
    drop = {n for n, _, _ in scan.bad}
    now = utc_now()
    records = [_quarantine_record(s, n, why, raw, now) for n, why, raw in scan.bad]
    if scan.tail is not None and not scan.tail_ok:
        drop.add(scan.tail_line)
        records.append(_quarantine_record(s, scan.tail_line, "incomplete last line", scan.tail, now))
    if records:
        # Durably kept first, name included: the rewrite below must not be on disk before it.
        qfd, _ = open_append(s.path / QUARANTINE, durable=True)
        try:
            write_all(qfd, b"".join(records))
            sync(qfd)
        finally:
            os.close(qfd)

    def lines() -> Iterator[bytes]:
        fd = open_read(s.messages_path)
        try:
            for line_no, raw in _raw_lines(fd):
                if line_no in drop:
                    continue
                yield raw if raw.endswith(b"\n") else raw + b"\n"
        finally:
            os.close(fd)

    s.replace_log(lines(), before, "the repair")
