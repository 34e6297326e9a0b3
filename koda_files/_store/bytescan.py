"""The byte scan under `search`: the lines of many logs that may hold a literal, at memory speed.

Each log is copied into one reused buffer (cheaper than mapping its pages and unmapping them)
and the pattern is found by `memchr` on its rarest byte, each place verified; only the lines
holding it are handed on. Without a pattern every complete line is.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Generator, Iterator

from .._files.fileops import open_read
from .._format.classify import COMPACTION, COMPACTION_MARK, classify
from .._format.framing import body

__all__ = ["LogScanner"]

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


def _archive_end(data: Buffer, size: int, session_id: str) -> int:
    """Where the last compaction line starts (what is above it is archived); 0 if there is none."""
    at = size
    while (hit := data.rfind(COMPACTION_MARK, 0, at)) >= 0:
        start = data.rfind(b"\n", 0, hit) + 1
        end = data.find(b"\n", hit, size)
        line = body(bytes(data[start : size if end < 0 else end]), start == 0)
        if classify(line, session_id)[0] == COMPACTION:
            return start
        at = start
    return 0


class LogScanner:
    """Reads logs one after another into one buffer and finds their candidate lines.

    `needle` None: every complete line is a candidate. `since_ns`: a log last written before
    that time has none.
    """

    def __init__(self, needle: bytes | None, since_ns: float | None) -> None:
        self._needle = needle
        self._since_ns = since_ns
        self._probes: list[_Probe] | None = None
        self._buf = bytearray(1 << 20)

    def lines(self, path: str, session_id: str) -> Generator[tuple[bool, bytes], None, None]:
        """The log's candidate lines, last first, read when the first is asked for, each with
        whether it is above the last compaction line (archived).

        A log that cannot be read or is empty has none; close (or finish) this before asking
        for the next log's, whose read reuses the buffer.
        """
        try:
            fd = open_read(path)
        except OSError:
            return  # a session without a readable log has nothing to find (check reports it)
        data: Buffer | None = None
        try:
            st = os.fstat(fd)
            if not st.st_size or (self._since_ns is not None and st.st_mtime_ns < self._since_ns):
                return
            data, size = self._read(fd, st.st_size)
            if self._needle is None:
                spans = _all_lines(data, size)
            else:
                if self._probes is None:
                    self._probes = _probes(self._needle, data, size)
                spans = _candidate_lines(data, size, self._probes)
            archive_end = _archive_end(data, size, session_id)
            with memoryview(data) as view:  # one copy per line, where a slice of the buffer would take two
                for start, end in reversed(spans):
                    yield start < archive_end, bytes(view[start:end])
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
            os.close(fd)

    def _read(self, fd: int, size: int) -> tuple[Buffer, int]:
        """The first `size` bytes of the file (fewer if it shrank), and how many there are."""
        if size > _MAX_COPY:  # a buffer that large would stay with the process
            return mmap.mmap(fd, size, flags=_MAP_FLAGS, prot=mmap.PROT_READ), size
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
