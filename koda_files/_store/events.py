"""Session events: an append-only `events.jsonl` per session, one JSON object per line.

koda records engine events that are not messages (information lines, background-task updates,
what a sub-agent did) so a transcript can show them. Each line is
`{"id", "kind", "payload", "parent_tool_call_id"?, "created_at"}`; ids come from the store's
id counter, so they are unique in the store and increase in insertion order within a session.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import append_whole, open_append, read_file
from .._format.codec import check_text
from .._format.layout import utc_now, validate_session_id
from ..types import SessionEvent
from .root import StoreRoot

__all__ = ["EVENTS", "Events", "encode_event", "read_events"]

log = logging.getLogger("koda_files")

EVENTS = "events.jsonl"


def encode_event(event: SessionEvent) -> bytes:
    """The `\\n`-terminated line of one event; a null parent is left out."""
    record: dict[str, Any] = {"id": event.id, "kind": event.kind, "payload": event.payload}
    if event.parent_tool_call_id is not None:
        record["parent_tool_call_id"] = event.parent_tool_call_id
    if event.created_at is not None:
        record["created_at"] = event.created_at
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _decode(line: bytes, session_id: str) -> SessionEvent:
    record = orjson.loads(line)
    if type(record) is not dict:
        raise ValueError("not a JSON object")
    if type(record.get("id")) is not int:
        raise ValueError("'id' must be an integer")
    for key in ("kind", "payload"):
        if type(record.get(key)) is not str:
            raise ValueError(f"'{key}' must be a string")
    for key in ("parent_tool_call_id", "created_at"):
        if record.get(key) is not None and type(record[key]) is not str:
            raise ValueError(f"'{key}' must be a string or null")
    return SessionEvent(
        record["id"], session_id, record["kind"], record["payload"],
        record.get("parent_tool_call_id"), record.get("created_at"),
    )


def read_events(path: Path, session_id: str) -> list[SessionEvent]:
    """The events of one file in file order; a line that is not an event is skipped with a warning."""
    return _parse(read_file(path) or b"", path, session_id)


def _parse(raw: bytes, path: Path, session_id: str) -> list[SessionEvent]:
    out = []
    lines = raw.split(b"\n")
    for line_no, line in enumerate(lines[:-1], 1):  # an unterminated tail is a write in progress
        if not line.strip():
            continue
        try:
            out.append(_decode(line, session_id))
        except ValueError as exc:
            log.warning("%s line %d: skipped, %s", path, line_no, exc)
    return out


class Events:
    """`insert_session_event` / `load_session_events` over a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root

    def insert_session_event(
        self, session_id: str, kind: str, payload: str, parent_tool_call_id: str | None = None
    ) -> int:
        """Append an event to the session's log; returns its id. `SessionNotFoundError` if absent."""
        check_text("kind", kind, optional=False)
        check_text("payload", payload, optional=False)
        check_text("parent_tool_call_id", parent_tool_call_id)
        validate_session_id(session_id)
        with self._root.session(session_id) as s, s.locked():
            path = s.path / EVENTS
            raw = read_file(path) or b""
            events = _parse(raw, path, session_id)
            event_id = self._root.ids.take(max((e.id for e in events), default=0) + 1)
            line = encode_event(SessionEvent(event_id, session_id, kind, payload, parent_tool_call_id, utc_now()))
            # A torn tail (a crash mid-write) gets its newline first: never glue onto it.
            data = b"\n" + line if raw and not raw.endswith(b"\n") else line
            fd, st = open_append(path, durable=s.durable)
            try:
                append_whole(fd, data, st.st_size, durable=s.durable)
            finally:
                os.close(fd)
        return event_id

    def load_session_events(self, session_id: str) -> list[SessionEvent]:
        """The session's events in insertion order; [] for a session without any (or absent)."""
        with self._root.session(session_id) as s:
            if not s.is_dir():
                return []
            return read_events(s.path / EVENTS, session_id)
