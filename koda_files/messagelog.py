"""An incremental reader of one session's `messages.jsonl`.

The file is the truth; a `MessageLog` is a cache of its parsed lines that is checked against the
file on every read (inode, size, mtime, and the bytes just before the end already read) and
re-read when anything else changed it: an append by another process costs a parse of the new
lines only, a rewrite or a hand edit costs one full read. Reads take no lock: appends are whole
lines and rewrites are renames, so a reader sees complete lines of one version of the file.

A last line without its newline is a message when it decodes as one (a hand edit saved without
a final newline, or an append torn by a crash just before its newline): every reader, the id
counter's rebuild, append (which adds the missing newline first) and `check` agree on that.
A last line that does not decode is not a message anywhere (a torn write): readers skip it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .codec import Completion, LineError, apply_note, decode_entry, note_fields
from .completion import counts_as_mark
from .errors import KodaFilesError
from .fileops import open_read
from .types import Message

__all__ = ["ACTIVE", "ARCHIVED", "NOTE", "OTHER", "BadLine", "MessageLog", "read_backwards", "split_lines"]

log = logging.getLogger("koda_files")

_BOM = b"\xef\xbb\xbf"
_GUARD = 32
_CHUNK = 1 << 22
_FIRST_BACK_CHUNK = 1 << 12
_STREAM_CHUNK = 1 << 20
_MAX_REREADS = 100
# What each line of the file is, in `MessageLog.kinds`: rewrites copy lines by these.
OTHER = 0  # blank, or not a message: kept verbatim
ACTIVE = 1
ARCHIVED = 2
NOTE = 3  # an annotation of an earlier message: a rewrite folds it into that line

# After our own append the file's mtime is not asked for (a stat per insert costs more than it
# saves): `mtime_ns` then holds minus the wall time of the append, and the first read takes any
# mtime up to that time (plus the kernel clock's coarseness) as ours; a later one means an edit.
_COARSE_CLOCK_NS = 20_000_000


@dataclass(frozen=True)
class BadLine:
    """A line that is not a message: kept in the file, skipped by reads, reported by `check`."""

    line_no: int
    reason: str
    raw: bytes


def split_lines(data: bytes, first_line_no: int, at_file_start: bool) -> list[tuple[int, bytes]]:
    """Number the complete lines of `data` (which ends at a newline), stripping CR and a BOM."""
    if at_file_start and data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = data.split(b"\n")
    lines.pop()  # the empty piece after the final newline
    return [
        (first_line_no + i, line[:-1] if line.endswith(b"\r") else line) for i, line in enumerate(lines)
    ]


def iter_file_lines(path: Path, *, with_tail: bool) -> Iterator[tuple[int, bytes]]:
    """Stream a log's lines as (line number, bytes without newline), a megabyte at a time.

    `with_tail`: also yield a last line that has no newline (a message if it decodes as one).
    A missing file yields nothing.
    """
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return
    try:
        pending = b""
        line_no = 1
        pos = 0
        while chunk := os.pread(fd, _STREAM_CHUNK, pos):
            pos += len(chunk)
            data = pending + chunk
            end = data.rfind(b"\n") + 1
            pending = data[end:]
            yield from split_lines(data[:end], line_no, line_no == 1)
            line_no += data.count(b"\n", 0, end)
        if pending and with_tail:
            yield line_no, pending
    finally:
        os.close(fd)


def read_backwards(path: Path, session_id: str, marker: bytes = b"") -> Generator[Message, None, None]:
    """The complete messages of a file, last first, reading only as far back as the caller goes.

    With `marker`, lines without those bytes are skipped undecoded (a cheap pre-filter).
    Annotations come after their message, so they are met first and applied to it (with a
    marker, only those that contain it).
    """
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return
    try:
        # An unterminated last line is read too: a message if it decodes, skipped if not.
        carry = b""
        pos = os.fstat(fd).st_size
        notes: dict[int, Completion] = {}  # id -> what its annotations set
        # Start small (the answer is usually in the last few lines, whatever the file's size)
        # and double, so a long walk back still takes few reads.
        step = _FIRST_BACK_CHUNK
        while pos > 0:
            start = max(0, pos - step)
            step = min(step * 2, _STREAM_CHUNK)
            data = os.pread(fd, pos - start, start) + carry
            pos = start
            pieces = data.split(b"\n")
            carry = pieces[0] if pos > 0 else b""
            for piece in reversed(pieces[1:] if pos > 0 else pieces):
                line = piece.rstrip(b"\r")
                if pos == 0 and piece is pieces[0] and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if marker in line and line.strip():
                    try:
                        entry = decode_entry(line, session_id)
                    except LineError:
                        continue
                    if type(entry) is Completion:
                        # Met last to first: the earliest completion wins, the latest thinking text.
                        known = notes.get(entry.id)
                        if known is not None:
                            entry = Completion(
                                entry.id,
                                entry.completed_at or known.completed_at,
                                known.thinking_content or entry.thinking_content,
                            )
                        notes[entry.id] = entry
                    elif notes and entry.id in notes:
                        yield apply_note(entry, notes.pop(entry.id)) or entry  # type: ignore[misc,arg-type]
                    else:
                        yield entry  # type: ignore[misc]
    finally:
        os.close(fd)


@dataclass
class MessageLog:
    """Parsed view of one `messages.jsonl`; `refresh` brings it up to date with the file."""

    session_id: str
    path: Path
    messages: list[Message] = field(default_factory=list)
    active: list[Message] = field(default_factory=list)  # those without `compacted_at`
    bad: list[BadLine] = field(default_factory=list)
    kinds: bytearray = field(default_factory=bytearray)  # one of OTHER/ACTIVE/ARCHIVED/NOTE per line
    largest_id: int = 0
    # Annotations: where each message is, to patch it when its annotation comes.
    where: dict[int, int] = field(default_factory=dict)  # id -> index in `messages` (the latest)
    lines_of: list[int] = field(default_factory=list)  # line index (in `kinds`) of each message
    active_at: list[int] = field(default_factory=list)  # index in `active` of each message, or -1
    noted: dict[int, dict[str, str]] = field(default_factory=dict)  # line index -> fields set by NOTEs
    patched: list[int] = field(default_factory=list)  # indices in `active` replaced, in order
    marked: int = 0  # messages with `completed_at` that count as marks (the session then tracks completion)
    # Identity and extent of what `messages` reflects.
    ino: int = -1
    dev: int = -1
    offset: int = 0
    mtime_ns: int = -1
    line_count: int = 0
    unterminated: bool = False  # the last line read is a message still missing its newline
    guard: bytes = b""
    exists: bool = False
    # Bumped whenever `messages` changes other than by appending, so derived caches can tell.
    generation: int = 0
    _own: list[tuple[int, bytes]] = field(default_factory=list)  # our appends, decoded on next read
    _reported_tail: tuple[int, int, int] = (-1, -1, -1)

    def is_current(self) -> bool:
        """True when the cache matches the file without reading it (one stat)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return not self.exists
        return self.matches(st)

    def matches(self, st: os.stat_result) -> bool:
        return (
            self.exists
            and st.st_ino == self.ino
            and st.st_dev == self.dev
            and st.st_size == self.offset
            and (st.st_mtime_ns == self.mtime_ns or 0 < st.st_mtime_ns <= -self.mtime_ns + _COARSE_CLOCK_NS)
        )

    def refresh(self, tail_is_torn: Callable[[], bool] | None = None, st: os.stat_result | None = None) -> None:
        """Bring `messages` up to date with the file (`st`: its stat, if just taken); missing reads as empty."""
        if st is None:
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                if self.exists or self.messages:
                    self._reset()
                return
        if self.matches(st):
            self.mtime_ns = st.st_mtime_ns
            self._decode_own()
            return
        if st.st_ino == self.ino and st.st_dev == self.dev and self.exists and st.st_size > self.offset:
            self._decode_own()
            if self._read_from(self.offset, st, tail_is_torn):
                return
        self._reset()
        # A rewrite may rename a new file over the path between our stat and open: read again
        # (otherwise this reader would see an empty log).
        for _ in range(_MAX_REREADS):
            if self._read_from(0, st, tail_is_torn):
                return
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                return
        raise KodaFilesError(f"{self.path} was replaced {_MAX_REREADS} times while being read; try again")

    def clear(self) -> None:
        """Forget everything read; the next `refresh` reads the file whole."""
        self._reset()

    def _reset(self) -> None:
        self.messages = []
        self.active = []
        self.bad = []
        self.kinds = bytearray()
        self.largest_id = 0
        self.where = {}
        self.lines_of = []
        self.active_at = []
        self.noted = {}
        self.patched = []
        self.marked = 0
        self._own = []
        self.ino = self.dev = -1
        self.offset = 0
        self.mtime_ns = -1
        self.line_count = 0
        self.unterminated = False
        self.guard = b""
        self.exists = False
        self.generation += 1

    def _read_from(self, start: int, st: os.stat_result, tail_is_torn: Callable[[], bool] | None) -> bool:
        """Parse the lines after `start`; False if the bytes before `start` are not the ones we read."""
        fd = open_read(self.path)
        try:
            held = os.fstat(fd)
            if (held.st_ino, held.st_dev) != (st.st_ino, st.st_dev):
                return False  # replaced between stat and open: the caller reads it whole
            guard_start = max(0, start - _GUARD)
            data = _read_to_end(fd, guard_start)
        finally:
            os.close(fd)
        if data[: start - guard_start] != self.guard[len(self.guard) - (start - guard_start) :]:
            return False
        body = data[start - guard_start :]
        if self.unterminated and body:
            if body[:1] != b"\n":
                return False  # the unterminated last line was extended, not ended: read it all again
            body, start = body[1:], start + 1  # its newline came: no new line
            self.guard = (self.guard + b"\n")[-_GUARD:]
            self.unterminated = False
        end = body.rfind(b"\n") + 1
        complete, tail = body[:end], body[end:]
        for line_no, line in split_lines(complete, self.line_count + 1, start == 0):
            self._take(line_no, line)
        self.line_count += complete.count(b"\n")
        self.guard = (self.guard + complete)[-_GUARD:] if end else self.guard
        self.ino, self.dev, self.exists = held.st_ino, held.st_dev, True
        entry = _decode_tail(tail, self.session_id, start + end == 0) if tail else None
        if entry is not None:
            self.line_count += 1
            self._add(entry)
            self.unterminated = True
            end = len(body)
            self.guard = (self.guard + tail)[-_GUARD:]
        self.offset = start + end
        self.mtime_ns = held.st_mtime_ns if entry is not None or not tail else -1
        if tail and entry is None:
            self._report_tail(tail, tail_is_torn)
        return True

    def _take(self, line_no: int, line: bytes) -> None:
        if not line.strip():
            self.kinds.append(OTHER)
            if line:
                log.warning("%s line %d: blank line (whitespace only), skipped", self.path, line_no)
            return
        try:
            entry = decode_entry(line, self.session_id)
        except LineError as exc:
            self.kinds.append(OTHER)
            self.bad.append(BadLine(line_no, str(exc), line))
            log.warning("%s line %d: skipped, %s", self.path, line_no, exc)
            return
        self._add(entry)

    def _add(self, message: Message | Completion) -> None:
        """Apply one decoded line: a message, or a completion annotation of an earlier one."""
        if type(message) is Completion:
            self._complete(message)
            return
        self.where[message.id] = len(self.messages)
        self.lines_of.append(len(self.kinds))
        self.messages.append(message)  # type: ignore[arg-type]
        if message.id > self.largest_id:
            self.largest_id = message.id
        if message.completed_at is not None and counts_as_mark(message.role, message.content):  # type: ignore[union-attr]
            self.marked += 1
        if message.compacted_at is None:  # type: ignore[union-attr]
            self.active_at.append(len(self.active))
            self.active.append(message)  # type: ignore[arg-type]
            self.kinds.append(ACTIVE)
        else:
            self.active_at.append(-1)
            self.kinds.append(ARCHIVED)

    def _complete(self, note: Completion) -> None:
        """Apply an annotation to the earlier message with its id (see `Completion`)."""
        index = self.where.get(note.id)
        if index is None:
            self.kinds.append(OTHER)  # no such message before it: kept on disk, changes nothing
            return
        self.kinds.append(NOTE)
        message = self.messages[index]
        fields = note_fields(note, message)
        patched = apply_note(message, note)
        if patched is None:
            return
        self.messages[index] = patched
        if "completed_at" in fields and message.completed_at is None:
            self.marked += counts_as_mark(message.role, message.content)
        self.noted.setdefault(self.lines_of[index], {}).update(fields)
        active_index = self.active_at[index]
        if active_index >= 0:
            self.active[active_index] = patched
            self.patched.append(active_index)

    def _decode_own(self) -> None:
        own, self._own = self._own, []
        for line_no, line in own:
            self._take(line_no, line)

    def _report_tail(self, tail: bytes, tail_is_torn: Callable[[], bool] | None) -> None:
        # An unterminated tail is either a write in progress or what a crash left: report it
        # only when no writer holds the session, and once per place it appears.
        key = (self.ino, self.offset, len(tail))
        if key == self._reported_tail or (tail_is_torn is not None and not tail_is_torn()):
            return
        self._reported_tail = key
        log.warning(
            "%s line %d: incomplete last line (%d bytes, no newline), skipped; "
            "the next append starts a new line after it",
            self.path,
            self.line_count + 1,
            len(tail),
        )

    def note_append(self, line: bytes, start: int, ino: int, mtime_ns: int) -> None:
        """Record a line this process just appended at `start`, if the cache was current there.

        `mtime_ns` is the file's mtime just before the append: if it is not the one the cache
        was taken at, someone changed the file in place meanwhile and the cache is dropped. The
        line is decoded on the next read, so an insert pays nothing for the cache.
        """
        if not self.exists or start != self.offset or ino != self.ino:
            return
        if not (mtime_ns == self.mtime_ns or 0 < mtime_ns <= -self.mtime_ns + _COARSE_CLOCK_NS):
            self.clear()
            return
        for piece in line[:-1].split(b"\n"):  # a batch of lines is one write too
            self.line_count += 1
            self._own.append((self.line_count, piece))
        self.offset = start + len(line)
        self.guard = (self.guard + line)[-_GUARD:]
        self.mtime_ns = -time.time_ns()


def _decode_tail(tail: bytes, session_id: str, at_file_start: bool) -> Message | Completion | None:
    """An unterminated last line decoded, or None when it is not a whole entry (a torn write)."""
    if at_file_start and tail.startswith(_BOM):
        tail = tail[len(_BOM) :]
    tail = tail[:-1] if tail.endswith(b"\r") else tail
    if not tail.strip():
        return None
    try:
        return decode_entry(tail, session_id)
    except LineError:
        return None


def _read_to_end(fd: int, start: int) -> bytes:
    # Read until EOF rather than to the size seen by stat: an append may have landed since.
    chunks = []
    pos = start
    while chunk := os.pread(fd, max(_CHUNK, os.fstat(fd).st_size - pos), pos):
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)
