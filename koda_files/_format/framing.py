"""Lines of a log file, forward and backward: the one place that frames bytes into lines.

One rule for every reader: a line ends at `\\n`; a `\\r` before it and a UTF-8 BOM at the start
of the file are not part of the line; the last line may lack its `\\n` (it is then a message
only if it decodes as one, which `classify` decides). Blank lines are lines; readers skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .._files.fileops import open_read

__all__ = [
    "BOM",
    "body",
    "iter_file_lines",
    "iter_lines_backwards",
    "iter_raw_lines",
    "lines_containing",
    "lines_containing_backwards",
    "lines_containing_in",
    "raw_lines_in",
    "split_bodies",
    "split_lines",
]

BOM = b"\xef\xbb\xbf"
_STREAM_CHUNK = 1 << 20
_FIRST_BACK_CHUNK = 1 << 12


def body(raw: bytes, at_file_start: bool) -> bytes:
    """A line as readers parse it: without its `\\n`, a `\\r` before it, and (first line) a BOM."""
    if at_file_start and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw[:-1] if raw.endswith(b"\r") else raw


def split_bodies(data: bytes, at_file_start: bool) -> list[bytes]:
    """The complete lines of `data` (which ends at a newline), as `body` frames them."""
    if at_file_start and data.startswith(BOM):
        data = data[len(BOM) :]
    lines = data.split(b"\n")
    lines.pop()  # the empty piece after the final newline
    if b"\r" in data:  # only hand-edited files have any: the common case pays one byte search
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines


def split_lines(data: bytes, first_line_no: int, at_file_start: bool) -> list[tuple[int, bytes]]:
    """Number the complete lines of `data` (which ends at a newline), as `body` frames them."""
    return list(enumerate(split_bodies(data, at_file_start), first_line_no))


def iter_raw_lines(fd: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, exact bytes with the terminator) of each line from `start`; the last may lack `\\n`."""
    pending = b""
    pending_at = start
    pos = start
    while chunk := os.pread(fd, _STREAM_CHUNK, pos):
        pos += len(chunk)
        data = pending + chunk
        end = data.rfind(b"\n") + 1
        yield from raw_lines_in(data, 0, end, pending_at)
        pending, pending_at = data[end:], pending_at + end
    if pending:
        yield pending_at, pending


def raw_lines_in(data: bytes, start: int, end: int, base: int = 0) -> Iterator[tuple[int, bytes]]:
    """`iter_raw_lines` over `data[start:end]` in memory (`start` a line start; offsets plus `base`)."""
    at = start
    while at < end:
        newline = data.find(b"\n", at, end)
        stop = end if newline < 0 else newline + 1
        yield base + at, data[at:stop]
        at = stop


def iter_file_lines(path: Path, *, with_tail: bool, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Stream a log's lines as (line number, body), a megabyte at a time; a missing file yields nothing.

    `with_tail`: also yield a last line that has no newline. Line numbers count from `start`.
    """
    try:
        fd = open_read(path)
    except FileNotFoundError:
        return
    try:
        pending = b""
        line_no = 1
        pos = start
        while chunk := os.pread(fd, _STREAM_CHUNK, pos):
            pos += len(chunk)
            data = pending + chunk
            end = data.rfind(b"\n") + 1
            pending = data[end:]
            yield from split_lines(data[:end], line_no, line_no == 1 and start == 0)
            line_no += data.count(b"\n", 0, end)
        if pending and with_tail:
            yield line_no, body(pending, line_no == 1 and start == 0)
    finally:
        os.close(fd)


def iter_lines_backwards(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of the lines before `end`, last first; an unterminated last line included.

    Starts with a small read (the answer is usually in the last few lines, whatever the file's
    size) and doubles, so a long walk back still takes few reads.
    """
    carry = b""
    pos = end
    step = _FIRST_BACK_CHUNK
    while pos > 0:
        start = max(0, pos - step)
        step = min(step * 2, _STREAM_CHUNK)
        data = os.pread(fd, pos - start, start) + carry  # the bytes from `start` up to a newline
        pieces = data.split(b"\n")
        offsets = []
        at = start
        for piece in pieces:
            offsets.append(at)
            at += len(piece) + 1
        last = len(pieces) - 1
        if pos == end and not pieces[last]:
            last -= 1  # the empty piece after a final newline is no line
        # The first piece may be the end of a longer line: carried to the next read, unless at 0.
        first = 1 if start > 0 else 0
        for index in range(last, first - 1, -1):
            yield offsets[index], body(pieces[index], offsets[index] == 0)
        carry = pieces[0] if start > 0 else b""
        pos = start


def lines_containing_backwards(fd: int, marker: bytes, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of the lines before `end` that contain `marker` (no newline in it), last
    first; an unterminated last line included. Reads like `iter_lines_backwards`, but lines are
    found by a byte search, so a long stretch without the marker costs no Python step per line."""
    carry = b""  # a line cut by the previous read: its end, with its newline
    pos = end
    step = _FIRST_BACK_CHUNK
    while pos > 0:
        start = max(0, pos - step)
        step = min(step * 2, _STREAM_CHUNK)
        block = os.pread(fd, pos - start, start)
        # Up to the first newline may be the end of a longer line: carried to the next read, unless at 0.
        head = block.find(b"\n") + 1 if start > 0 else 0
        if start > 0 and head == 0:
            carry, pos = block + carry, start  # no line starts in this read
            continue
        # The last line starting here runs on into `carry`: searched joined (one line, not the block).
        last = max(block.rfind(b"\n", head) + 1, head)
        line = block[last:] + carry
        if marker in line:
            yield start + last, body(line, start + last == 0)
        found = block.rfind(marker, head, last)
        while found >= 0:
            line_start = block.rfind(b"\n", 0, found) + 1
            line_end = block.find(b"\n", found)
            yield start + line_start, body(block[line_start:line_end], start + line_start == 0)
            found = block.rfind(marker, head, line_start)
        carry = block[:head]
        pos = start


def lines_containing(fd: int, marker: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of the lines between `start` and `end` that contain `marker`, found by a
    byte search (lines without it cost no Python step); the last may lack its newline."""
    stop = os.fstat(fd).st_size if end is None else end
    pos = start
    pending = b""
    pending_at = start
    while pos < stop:
        chunk = os.pread(fd, min(_STREAM_CHUNK, stop - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        data = pending + chunk
        cut = data.rfind(b"\n") + 1 if pos < stop else len(data)
        yield from lines_containing_in(data, marker, 0, cut, pending_at)
        pending, pending_at = data[cut:], pending_at + cut


def lines_containing_in(data: bytes, marker: bytes, start: int, end: int, base: int = 0) -> Iterator[tuple[int, bytes]]:
    """`lines_containing` over `data[start:end]` in memory (`start` a line start; offsets plus `base`)."""
    found = data.find(marker, start, end)
    while found >= 0:
        line_start = data.rfind(b"\n", start, found) + 1 or start
        line_end = data.find(b"\n", found, end)
        line_end = end if line_end < 0 else line_end
        yield base + line_start, body(data[line_start:line_end], base + line_start == 0)
        found = data.find(marker, line_end, end)
