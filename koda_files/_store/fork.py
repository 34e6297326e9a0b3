"""Messages written whole in one go: a tool result with its full output, a session forked from another.

`insert_tool_message_with_full` keeps what the model was shown (`content`) beside the whole
output (`full_content`). `copy_messages_into_session` starts a session from another's history
(koda forks a sub-agent this way): one locked append of every line, so the copy is all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._format.codec import add_field, check_text, encode_new, field_suffix
from .._format.layout import utc_now, validate_session_id
from ..types import Message, Role
from .root import StoreRoot

__all__ = ["Fork"]


class Fork:
    """Writing several fields or messages in one go: a tool result with its full output, a fork."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root

    def insert_tool_message_with_full(self, session_id: str, content: str, tool_call_id: str, full_content: str) -> int:
        """Append a tool result answering `tool_call_id`: `content` as shown, `full_content` whole.

        Returns the new id; `SessionNotFoundError` (writing nothing) if the session is absent.
        """
        check_text("content", content, optional=False)
        check_text("tool_call_id", tool_call_id, optional=False)
        check_text("full_content", full_content, optional=False)
        validate_session_id(session_id)
        line = encode_new(Role.TOOL, content, None, tool_call_id, None, None, utc_now(), full_content)
        with self._root.session(session_id) as s, s.locked():
            msg_id = s.append(line, self._root.ids.take)
        self._root.note_insert(session_id, msg_id)
        return msg_id

    def copy_messages_into_session(self, dest_session_id: str, messages: Sequence[Message]) -> None:
        """Append copies of `messages`, in order and with new ids, to `dest_session_id`.

        Kept: role, content, full content, tool calls and call id, thinking text. Token usage and
        agent name stay with the original (not counted twice); assistant copies are born
        complete. One write: all are appended or none. Empty `messages`: nothing happens.
        """
        validate_session_id(dest_session_id)
        if not messages:
            return
        now = utc_now()
        records = []
        for index, m in enumerate(messages):
            if not isinstance(m, Message):
                raise TypeError(f"messages[{index}] must be a Message, not {type(m).__name__}")
            role = Role.parse(m.role)
            line = encode_new(role, m.content, m.tool_calls, m.tool_call_id, None, None, now, m.full_content)
            extra = b""
            if m.thinking_content is not None:
                check_text(f"messages[{index}].thinking_content", m.thinking_content)
                extra += field_suffix("thinking_content", m.thinking_content)[:-1]
            if role is Role.ASSISTANT:
                extra += field_suffix("completed_at", now)[:-1]
            records.append(add_field(line, extra + b"}") + b"\n" if extra else line)
        with self._root.session(dest_session_id) as s, s.locked():
            last = s.append_many(records, self._root.ids.take) + len(records) - 1
        self._root.note_insert(dest_session_id, last)
