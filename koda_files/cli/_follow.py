"""`koda-files show SESSION --follow`: the conversation, then every change another process makes.

The log is polled (`load_all_messages`, which costs one `stat` while nothing changed) a few
times a second, so an idle follower uses next to no CPU and needs no inotify. New messages are
printed as they come; a rewrite (compaction, purge, a hand edit) is announced with what it
archived, edited or removed, then the messages it added are printed. Ends on Ctrl-C (exit 0)
or when the session is deleted (exit 1).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..types import Message
from ._render import plural, render_messages

if TYPE_CHECKING:
    from ..store import FileStore

__all__ = ["follow"]

POLL_SECONDS = 0.25


def _same(a: Message, b: Message) -> bool:
    return (a.role, a.content, a.tool_calls, a.tool_call_id) == (b.role, b.content, b.tool_calls, b.tool_call_id)


def _unchanged(now: Sequence[Message], before: Sequence[Message]) -> bool:
    # The store hands back the very objects it parsed before while the file is unchanged; any
    # append or rewrite changes the length or the objects at the ends.
    if len(now) != len(before):
        return False
    return not now or (now[0] is before[0] and now[-1] is before[-1])


def follow(store: FileStore, sid: str, shown: Sequence[Message], show_all: bool, style: Any, full: bool) -> int:
    """Poll the session until Ctrl-C, printing what changes after `shown` (already printed)."""
    before = list(shown)
    try:
        while True:
            time.sleep(POLL_SECONDS)
            now = store.load_all_messages(sid)
            if _unchanged(now, before):
                continue
            if not now and store.session_overview(sid) is None:
                print(f"koda-files: session {sid} was deleted", file=sys.stderr)
                return 1
            _report(before, now, show_all, style, full)
            sys.stdout.flush()
            before = now
    except KeyboardInterrupt:
        return 0


def _report(before: Sequence[Message], now: Sequence[Message], show_all: bool, style: Any, full: bool) -> None:
    old = {m.id: m for m in before}
    ids_now = {m.id for m in now}
    new = [m for m in now if m.id not in old]
    archived = [m for m in now if m.id in old and m.compacted_at is not None and old[m.id].compacted_at is None]
    edited = [m for m in now if m.id in old and not _same(m, old[m.id])]
    removed = [i for i in old if i not in ids_now]
    if archived or edited or removed:  # an append, or a completion mark, needs no announcement
        parts = [f"{plural(len(archived), 'message')} archived"] if archived else []
        parts += [f"{len(edited)} edited"] if edited else []
        parts += [f"{len(removed)} removed"] if removed else []
        what = ", ".join(parts)
        sys.stdout.write(style(f"── the log was rewritten: {what}", "bold", "yellow") + "\n\n")
    for m in edited:
        sys.stdout.write(style(f"edited #{m.id}:", "dim") + "\n")
        render_messages([m], sys.stdout, style, full)
    render_messages([m for m in new if show_all or m.compacted_at is None], sys.stdout, style, full)
