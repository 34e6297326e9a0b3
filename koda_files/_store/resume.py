"""What koda restores when it resumes a session: title, approval mode, idle time, completion, interruption.

`FileStore` hands these to its `Resume` collaborator.
Title and mode are keys of `metadata.json`; idle time comes from file mtimes (an insert moves
that of `messages.jsonl`, a `load_context` that of `.access`), so no read ever rewrites a file;
completion is an annotation line appended to the log.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable

from .._files.fileops import set_mtime, touch
from .._format.codec import check_int, check_text, encode_completion, encode_thinking
from .._format.layout import ACCESS, MESSAGES, parse_time, utc_now, validate_session_id
from .._session.messagelog import read_backwards
from .._session.sanitize import call_ids, sanitize
from .._session.scan import backwards, logs_by_mtime
from .._session.session import SessionDir
from ..errors import MessageNotFoundError, SessionNotFoundError
from ..types import Interruption, Message, Role
from .root import StoreRoot

__all__ = ["Resume"]


class Resume:
    """Per-session state koda reads back on resume, over a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root

    def last_access_ns(self, session_id: str) -> int | None:
        # An insert (or a completion mark) moves the mtime of a non-empty messages.jsonl; a
        # load_context moves that of `.access`. A new session's log is empty: it does not count.
        validate_session_id(session_id)
        directory = f"{self._root.sessions_dir}/{session_id}"
        try:
            if not stat.S_ISDIR(os.stat(directory, follow_symlinks=False).st_mode):
                return None  # a symlink or a file planted as a session: nothing is read through it
        except OSError:
            return None
        times = []
        with contextlib.suppress(OSError):
            st = os.stat(f"{directory}/{MESSAGES}", follow_symlinks=False)
            if st.st_size > 0:
                times.append(st.st_mtime_ns)
        with contextlib.suppress(OSError):
            times.append(os.stat(f"{directory}/{ACCESS}", follow_symlinks=False).st_mtime_ns)
        return max(times) if times else None

    def get_session_idle_secs(self, session_id: str) -> int | None:
        """Whole seconds since the last insert or `load_context` of the session; None if never."""
        last = self.last_access_ns(session_id)
        if last is None:
            return None
        return max(0, (time.time_ns() - last) // 1_000_000_000)

    def session_last_accessed(self, session_id: str) -> str | None:
        """When the session was last accessed (see `get_session_idle_secs`), as ISO 8601 UTC; or None."""
        last = self.last_access_ns(session_id)
        if last is None:
            return None
        seconds, nanos = divmod(last, 1_000_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"

    def set_session_last_accessed(self, session_id: str, when: str) -> None:
        """Record an access at `when` (ISO 8601, e.g. from an import), not now.

        Sets the mtime of `.access` and of a non-empty `messages.jsonl` to `when`, but never the
        latter to before its newest message's `created_at` (whole-store scans rely on that).
        """
        moment = parse_time(when) if isinstance(when, str) else None
        if moment is None:
            raise ValueError(f"not an ISO 8601 time: {when!r}")
        at_ns = int(moment.timestamp() * 1_000_000) * 1000
        with self._root.session(session_id) as s, s.locked():
            newest = s.newest(lambda m: m)
            created = parse_time(newest.created_at or "") if newest is not None else None
            log_ns = max(at_ns, int(created.timestamp() * 1_000_000) * 1000) if created else at_ns
            with contextlib.suppress(FileNotFoundError):
                if os.stat(s.messages_path, follow_symlinks=False).st_size > 0:
                    set_mtime(s.messages_path, log_ns)
            touch(s.access_path)
            set_mtime(s.access_path, at_ns)

    def mark_message_complete(self, message_id: int) -> None:
        """Record that message `message_id` is complete: its `completed_at` becomes now.

        An annotation line is appended to its session's log (message lines are never edited in
        place). Marking a complete message again changes nothing. Fast for this process's last
        insert; otherwise sessions are searched newest first, each read backwards from its end.
        An id found in no session raises `MessageNotFoundError`.
        """
        check_int("message_id", message_id)
        stamp = utc_now()
        self._annotate(message_id, lambda m: None if m.completed_at else encode_completion(message_id, stamp))
        self._root.note_tracking()

    def update_message_thinking_content(self, message_id: int, thinking_content: str) -> None:
        """Set the model's reasoning behind message `message_id` (`Message.thinking_content`).

        Like `mark_message_complete`: an annotation line is appended (the last one wins); the
        same text again changes nothing; an id found in no session raises `MessageNotFoundError`.
        """
        check_int("message_id", message_id)
        check_text("thinking_content", thinking_content, optional=False)
        line = encode_thinking(message_id, thinking_content)
        self._annotate(message_id, lambda m: None if m.thinking_content == thinking_content else line)

    def _annotate(self, message_id: int, line_for: Callable[[Message], bytes | None]) -> None:
        """Append `line_for(message)` (None: nothing) to the log holding message `message_id`."""
        tried: set[str] = set()
        for sid in self._root.sessions_holding(message_id):
            if sid not in tried:
                tried.add(sid)
                if self._complete_in(sid, message_id, line_for):
                    return
        untried = [sid for sid in self._root.session_ids() if sid not in tried]
        for _, sid in logs_by_mtime(self._root.sessions_dir, untried):
            with contextlib.closing(backwards(self._root.sessions_dir / sid / MESSAGES, sid)) as newest_first:
                found = any(m.id == message_id for m in newest_first)
            if found and self._complete_in(sid, message_id, line_for):
                return
        raise MessageNotFoundError(message_id, self._root.sessions_dir)

    def _complete_in(self, session_id: str, message_id: int, line_for: Callable[[Message], bytes | None]) -> bool:
        """Annotate the message if this session holds it (checked under its lock)."""
        with self._root.session(session_id) as s:
            try:
                with s.locked():
                    found = s.find(message_id)
                    if found is None:
                        return False
                    line = line_for(found)
                    if line is not None:
                        s.append_line(line)
                    return True
            except SessionNotFoundError:
                return False  # deleted meanwhile

    def detect_interruption(self, session_id: str) -> Interruption | None:
        """How the context the model would get ends: an unanswered prompt, tool results, or None.

        Judged on `load_context`'s answer (without recording an access), skipping system
        messages as koda does: a dropped call or an interrupted reply leaves the prompt unanswered.
        """
        with self._root.session(session_id) as s:
            context = None if s.is_parsed() else _context_end(s)
            if context is None:
                context = s.load_context(access=False)
        last = next((m for m in reversed(context) if m.role is not Role.SYSTEM), None)
        if last is None:
            return None
        if last.role is Role.USER:
            return Interruption("prompt", (last.content or "")[:80])
        if last.role is Role.TOOL:
            return Interruption("tool")
        return None


def _context_end(s: SessionDir) -> list[Message] | None:
    """How `load_context`'s answer ends, from the log read backwards to its last user message.

    User messages are always in the context and what follows one is judged by what follows it,
    unless a result there answers a call made above it, or the session's tracking of completion
    decides (an unfinished reply, and no header flag): then None, and the caller reads it all.
    """
    newest_first: list[Message] = []
    with contextlib.closing(read_backwards(s.messages_path, s.id)) as older:
        for m in older:
            if m.compacted_at is not None:
                break  # above the last compaction: not in the context
            newest_first.append(m)
            if m.role is Role.USER:
                break
    tail = newest_first[::-1]
    called: set[str] = set()
    for m in tail:
        if m.role is Role.ASSISTANT:
            called.update(call_ids(m.tool_calls))
        elif m.role is Role.TOOL and m.tool_call_id not in called and tail[0].role is Role.USER:
            return None  # may answer a call made above the user message
    tracking = s.header_flag.get()
    if not tracking and any(m.role is Role.ASSISTANT and m.completed_at is None for m in tail):
        return None  # a mark anywhere in the log would leave it out
    return sanitize(tail, tracking)
