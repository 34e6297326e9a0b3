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

import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from .._files.fileops import open_read
from .._format.classify import COMPACTION, COMPACTION_MARK, archived_as, classify, compaction_of, last_compaction
from .._format.codec import Completion, LineError, apply_note, decode_lines, note_fields
from .._format.framing import body, iter_lines_backwards, split_bodies
from ..errors import ConcurrentEditError
from ..types import Message
from .completion import counts_as_mark

__all__ = ["BadLine", "MessageLog", "paused_gc", "read_backwards"]

log = logging.getLogger("koda_files")

_GUARD = 32
_CHUNK = 1 << 22
_MAX_REREADS = 100

# After our own append the file's mtime is not asked for (a stat per insert costs more than it
# saves): `mtime_ns` then holds minus the wall time of the append, and the first read takes any
# mtime up to that time (plus the kernel clock's coarseness) as ours; a later one means an edit.
_COARSE_CLOCK_NS = 20_000_000
_ID = attrgetter("id")
_PROMOTE_AT = 10_000


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with automatic garbage collection off (then on again, if it was on).

    Building a long log makes a tracked object per line and nothing cyclic: left on, the
    collector would walk every object built so far again and again (a third of a 100,000-line
    load). Other threads run without automatic collection meanwhile. After a big build (over
    `_PROMOTE_AT` new objects) they go straight to the oldest generation (`gc.freeze` then
    `gc.unfreeze`), unless the process froze objects of its own: a log's messages live as long
    as its cache, and a young collection walking them all at once costs a sixth of a load.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] >= _PROMOTE_AT and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


@dataclass(frozen=True)
class BadLine:
    """A line that is not a message: kept in the file, skipped by reads, reported by `check`."""

    line_no: int
    reason: str
    raw: bytes


def read_backwards(
    path: Path, session_id: str, marker: bytes = b"", *, end: int | None = None, archived_at: str | None = None
) -> Generator[Message, None, None]:
    """The messages of a file before `end` (default: all), last first, reading only as far back as asked.

    With `marker`, lines without those bytes are skipped undecoded (a cheap pre-filter).
    Annotations come after their message, so they are met first and applied to it (with a
    marker, only those that contain it). Messages above a compaction line come archived (see
    `classify`); `archived_at` is the time of the compaction at `end`, if one starts there.
    """
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return
    try:
        notes: dict[int, Completion] = {}  # id -> what its annotations set
        for _, line in iter_lines_backwards(fd, os.fstat(fd).st_size if end is None else end):
            if marker not in line and COMPACTION_MARK not in line:
                continue
            kind, entry = classify(line, session_id)
            if entry is None:
                continue
            if type(entry) is Completion:
                # Met last to first: the earliest completion wins, the latest thinking text.
                known = notes.get(entry.id)
                if known is not None:
                    done = entry.completed_at or known.completed_at
                    entry = Completion(entry.id, done, known.thinking_content or entry.thinking_content)
                notes[entry.id] = entry
                continue
            message: Message = entry  # type: ignore[assignment]
            if notes and message.id in notes:
                message = apply_note(message, notes.pop(message.id)) or message
            if archived_at is not None:
                message = archived_as(message, archived_at)
            if kind == COMPACTION:  # what is above it was archived by it
                found = compaction_of(line)
                archived_at = found.at if found is not None else archived_at
            if marker in line:
                yield message
    finally:
        os.close(fd)


@dataclass
class MessageLog:
    """Parsed view of one `messages.jsonl`; `refresh` brings it up to date with the file.

    By default a full read starts at the last compaction line (`first`): what is above it is
    archived and not needed for the context, so a long archived history costs nothing to load.
    `refresh(whole=True)` reads the file from its start (and keeps doing so).
    """

    session_id: str
    path: Path
    messages: list[Message] = field(default_factory=list)
    active: list[Message] = field(default_factory=list)  # those not archived
    bad: list[BadLine] = field(default_factory=list)
    largest_id: int = 0
    # Annotations and compactions: where each message is, to patch it when one comes.
    where: dict[int, int] = field(default_factory=dict)  # id -> index in `messages` (the latest)
    active_at: list[int] = field(default_factory=list)  # index in `active` of each message, or -1
    active_src: list[int] = field(default_factory=list)  # index in `messages` of each active one
    patched: list[int] = field(default_factory=list)  # indices in `active` replaced, in order
    marked: int = 0  # marks that make the session track completion (see `completion`)
    # Identity and extent of what `messages` reflects.
    first: int = 0  # byte offset the parse started at: 0, or the last compaction line's
    first_archived_at: str | None = None  # the time of the compaction at `first`, if any
    whole: bool = False  # read from the start whatever the compactions (sticky once asked)
    ino: int = -1
    dev: int = -1
    offset: int = 0
    mtime_ns: int = -1
    line_count: int = 0  # lines read from `first`
    unterminated: bool = False  # the last line read is a message still missing its newline
    guard: bytes = b""
    exists: bool = False
    # Bumped whenever `active` changes other than by appending, so derived caches can tell.
    generation: int = 0
    # When a refresh found the cache current: the file's (inode, device, size, mtime) then, with
    # `messages`, `first` and `first_archived_at`. One tuple, replaced whole, so a reader may
    # use it without the cache lock (`SessionDir.newest`); None after any other change.
    current: tuple[int, int, int, int, list[Message], int, str | None] | None = None
    _own: list[tuple[int, bytes]] = field(default_factory=list)  # our appends, decoded on next read
    _reported_tail: tuple[int, int, int] = (-1, -1, -1)
    _lines_before: int = -1  # lines above `first` (counted only to name a line in a warning)

    def matches(self, st: os.stat_result) -> bool:
        return (
            self.exists
            and st.st_ino == self.ino
            and st.st_dev == self.dev
            and st.st_size == self.offset
            and (st.st_mtime_ns == self.mtime_ns or 0 < st.st_mtime_ns <= -self.mtime_ns + _COARSE_CLOCK_NS)
        )

    def refresh(
        self,
        tail_is_torn: Callable[[], bool] | None = None,
        st: os.stat_result | None = None,
        *,
        whole: bool = False,
    ) -> None:
        """Bring `messages` up to date with the file (`st`: its stat, if just taken); missing reads as empty.

        `whole`: include the archived part above the last compaction (reads it once if needed).
        """
        if whole and not self.whole:
            self.whole = True
            if self.first > 0:
                self._reset()
        if st is None:
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                if self.exists or self.messages:
                    self._reset()
                return
        if self.matches(st):
            self.mtime_ns = st.st_mtime_ns
            if self._own:
                self._decode_own()
            self.current = (
                *(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns),
                *(self.messages, self.first, self.first_archived_at),
            )
            return
        self.current = None
        if st.st_ino == self.ino and st.st_dev == self.dev and self.exists and st.st_size > self.offset:
            self._decode_own()
            if self._read_from(self.offset, st, tail_is_torn):
                return
        self._reset()
        # A rewrite may rename a new file over the path between our stat and open: read again
        # (otherwise this reader would see an empty log).
        for _ in range(_MAX_REREADS):
            if self._read_from(-1, st, tail_is_torn):
                return
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                return
        raise ConcurrentEditError(self.path, f"a read ({_MAX_REREADS} replacements in a row)")

    def clear(self) -> None:
        """Forget everything read; the next `refresh` reads the file again."""
        self._reset()

    def _reset(self) -> None:
        self.current = None
        self.messages = []
        self.active = []
        self.bad = []
        self.largest_id = 0
        self.where = {}
        self.active_at = []
        self.active_src = []
        self.patched = []
        self.marked = 0
        self._own = []
        self.first = 0
        self.first_archived_at = None
        self._lines_before = -1
        self.ino = self.dev = -1
        self.offset = 0
        self.mtime_ns = -1
        self.line_count = 0
        self.unterminated = False
        self.guard = b""
        self.exists = False
        self.generation += 1

    def _read_from(self, start: int, st: os.stat_result, tail_is_torn: Callable[[], bool] | None) -> bool:
        """Parse the lines after `start` (-1: a new read, from the last compaction or the start).

        False if the file is not the one `st` describes, or the bytes before `start` are not the
        ones we read.
        """
        fd = open_read(self.path)
        try:
            held = os.fstat(fd)
            if (held.st_ino, held.st_dev) != (st.st_ino, st.st_dev):
                return False  # replaced between stat and open: the caller reads it whole
            if start < 0:
                found = None if self.whole else last_compaction(fd, held.st_size, self.session_id)
                start = self.first = found.offset if found is not None else 0
                self.first_archived_at = found.at if found is not None else None
                guard_start = start  # nothing read before: no guard to compare
            else:
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
        lines = split_bodies(complete, start == 0)
        with paused_gc():
            self._take_all(self.line_count + 1, lines)
        self.line_count += len(lines)
        self.guard = (self.guard + complete)[-_GUARD:] if end else self.guard
        self.ino, self.dev, self.exists = held.st_ino, held.st_dev, True
        entry = _decode_tail(tail, self.session_id, start + end == 0) if tail else None
        if entry is not None:
            self.line_count += 1
            self._add(entry, tail)
            self.unterminated = True
            end = len(body)
            self.guard = (self.guard + tail)[-_GUARD:]
        self.offset = start + end
        self.mtime_ns = held.st_mtime_ns if entry is not None or not tail else -1
        if tail and entry is None:
            self._report_tail(tail, tail_is_torn)
        return True

    def _line_no(self, counted: int) -> int:
        """The file's line number of the `counted`-th line read from `first`."""
        if self.first == 0:
            return counted
        if self._lines_before < 0:  # only to name a line in a warning: count what was skipped
            fd = open_read(self.path)
            try:
                self._lines_before = os.pread(fd, self.first, 0).count(b"\n")
            finally:
                os.close(fd)
        return self._lines_before + counted

    def _take_all(self, first_line_no: int, lines: Sequence[bytes]) -> None:
        """Apply `lines` (numbered from `first_line_no`) in order.

        A chunk of messages only, none archived by its own line or by a compaction line, is
        appended in bulk; anything else goes line by line through `_add`.
        """
        notable: set[str] = set()
        entries = decode_lines(lines, self.session_id, notable)
        if "compaction" in notable or "compacted_at" in notable or not {*map(type, entries)} <= {Message}:
            for line_no, (line, entry) in enumerate(zip(lines, entries, strict=True), first_line_no):
                self._take(line_no, line, entry)
            return
        messages: list[Message] = entries  # type: ignore[assignment]
        base, active_base, count = len(self.messages), len(self.active), len(messages)
        ids = list(map(_ID, messages))
        self.where.update(zip(ids, range(base, base + count), strict=True))
        self.largest_id = max(self.largest_id, max(ids, default=0))
        if "completed_at" in notable:
            self.marked += sum(
                1 for m in messages if m.completed_at is not None and counts_as_mark(m.role, m.content)
            )
        self.messages += messages
        self.active_at += range(active_base, active_base + count)
        self.active_src += range(base, base + count)
        self.active += messages

    def _take(self, line_no: int, line: bytes, entry: Message | Completion | LineError) -> None:
        """Apply one decoded line (from `decode_lines`): a blank or bad one is only reported."""
        if type(entry) is LineError and not line.strip():
            if line:
                log.warning("%s line %d: blank line (whitespace only), skipped", self.path, self._line_no(line_no))
            return
        if type(entry) is LineError:
            self.bad.append(BadLine(self._line_no(line_no), str(entry), line))
            log.warning("%s line %d: skipped, %s", self.path, self._line_no(line_no), entry)
            return
        self._add(entry, line)  # type: ignore[arg-type]

    def _add(self, message: Message | Completion, line: bytes) -> None:
        """Apply one decoded line: a message (a compaction archives what is active), or an annotation."""
        if type(message) is Completion:
            self._complete(message)
            return
        assert type(message) is Message
        if line[:1] == b"{" and COMPACTION_MARK in line:
            self._compact(line)
        self.where[message.id] = len(self.messages)
        self.messages.append(message)
        if message.id > self.largest_id:
            self.largest_id = message.id
        if message.completed_at is not None and counts_as_mark(message.role, message.content):
            self.marked += 1
        if message.compacted_at is None:
            self.active_at.append(len(self.active))
            self.active_src.append(len(self.messages) - 1)
            self.active.append(message)
        else:
            self.active_at.append(-1)

    def _compact(self, line: bytes) -> None:
        """A compaction line: everything active so far is archived at its time."""
        found = compaction_of(line)
        if found is None:
            return
        if found.tracks_completion:
            self.marked += 1
        for index in self.active_src:
            self.messages[index] = archived_as(self.messages[index], found.at)
            self.active_at[index] = -1
        if self.active:
            self.active, self.active_src, self.patched = [], [], []
            self.generation += 1

    def _complete(self, note: Completion) -> None:
        """Apply an annotation to the earlier message with its id (see `Completion`)."""
        index = self.where.get(note.id)
        if index is None:
            # No such message before it: kept on disk, changes nothing. Above `first`, though, it
            # may mark an archived message (a hint is born complete, so never marked): a mark.
            if self.first > 0 and note.completed_at is not None:
                self.marked += 1
            return
        message = self.messages[index]
        fields = note_fields(note, message)
        patched = apply_note(message, note)
        if patched is None:
            return
        self.messages[index] = patched
        if "completed_at" in fields and message.completed_at is None:
            self.marked += counts_as_mark(message.role, message.content)
        active_index = self.active_at[index]
        if active_index >= 0:
            self.active[active_index] = patched
            self.patched.append(active_index)

    def _decode_own(self) -> None:
        own, self._own = self._own, []
        if own:  # our appends: consecutive lines
            self._take_all(own[0][0], [line for _, line in own])

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
            self._line_no(self.line_count + 1),
            len(tail),
        )

    def note_append(self, line: bytes, start: int, ino: int, mtime_ns: int) -> None:
        """Record a line this process just appended at `start`, if the cache was current there.

        `mtime_ns` is the file's mtime just before the append: if it is not the one the cache
        was taken at, someone changed the file in place meanwhile and the cache is dropped. The
        line is decoded on the next read, so an insert pays nothing for the cache.
        """
        self.current = None
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
    return classify(body(tail, at_file_start), session_id)[1]


def _read_to_end(fd: int, start: int) -> bytes:
    # Read until EOF rather than to the size seen by stat: an append may have landed since.
    chunks = []
    pos = start
    while chunk := os.pread(fd, max(_CHUNK, os.fstat(fd).st_size - pos), pos):
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)
