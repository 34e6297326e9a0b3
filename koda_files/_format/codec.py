"""The line format of `messages.jsonl`: turning messages into JSON lines and lines back into messages.

Encoding validates everything first, so a bad value raises before a byte is written. Decoding is
strict about types (a line that is JSON but not a message is an error naming the problem), and
lenient about framing (CRLF, a UTF-8 BOM, blank lines) because people edit these files by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

import orjson

from ..types import Message, Role, TokenUsage
from .layout import parse_time

__all__ = [
    "ARCHIVED_MARK",
    "INT64_MAX",
    "INT64_MIN",
    "NOTABLE",
    "TOKEN_FIELDS",
    "Completion",
    "LineError",
    "add_field",
    "apply_note",
    "check_int",
    "check_text",
    "decode_entry",
    "decode_line",
    "decode_lines",
    "encode_completion",
    "encode_new",
    "encode_record",
    "encode_record_line",
    "encode_thinking",
    "field_suffix",
    "fold_fields",
    "note_fields",
    "project_root_text",
    "replace_fields",
    "with_id",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_ROLES: dict[str, Role] = {r.value: r for r in Role}
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
)
# In every archived line, as a key; a line without these bytes cannot be archived (a JSON string
# value quotes its quotes), so scans can skip it unparsed.
ARCHIVED_MARK = b'"compacted_at"'
_TEXT_FIELDS = (
    "content",
    "tool_calls",
    "tool_call_id",
    "agent_name",
    "created_at",
    "compacted_at",
    "completed_at",
    "full_content",
    "thinking_content",
    "stop_reason",
)


class LineError(ValueError):
    """A line of `messages.jsonl` that is not a message; the store names file and line around it."""


def check_text(name: str, value: object, *, optional: bool = True) -> str | None:
    """Return `value` if it is a str that encodes as UTF-8 (no lone surrogates), else raise."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str{' or None' if optional else ''}, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not valid Unicode (lone surrogate at index {exc.start})") from None
    return value


def check_int(name: str, value: object) -> int:
    """Return `value` if it is an int (not bool) in the signed 64-bit range, else raise."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{name} {value} is outside the signed 64-bit range")
    return value


def encode_record(
    msg_id: int,
    role: Role,
    content: str | None,
    tool_calls: str | None,
    tool_call_id: str | None,
    usage: TokenUsage | None,
    agent_name: str | None,
    created_at: str,
    full_content: str | None = None,
) -> bytes:
    """One `\\n`-terminated line; null fields are left out. Inputs must already be validated."""
    record: dict[str, Any] = {"id": msg_id, "role": role.value}
    if content is not None:
        record["content"] = content
    if full_content is not None:
        record["full_content"] = full_content
    if tool_calls is not None:
        record["tool_calls"] = tool_calls
    if tool_call_id is not None:
        record["tool_call_id"] = tool_call_id
    if usage is not None:
        record["prompt_tokens"] = usage.prompt_tokens
        record["completion_tokens"] = usage.completion_tokens
        record["cache_read_tokens"] = usage.cache_read_tokens
        record["cache_creation_tokens"] = usage.cache_creation_tokens
        record["thinking_tokens"] = usage.thinking_tokens
        if usage.stop_reason:
            record["stop_reason"] = usage.stop_reason
    if agent_name is not None:
        record["agent_name"] = agent_name
    record["created_at"] = created_at
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def encode_record_line(record: Mapping[str, Any], session_id: str, index: int) -> bytes:
    """One line of `messages.jsonl` from a whole record (a message or an annotation), checked
    as a reader checks it; `ValueError` naming record `index` otherwise."""
    try:
        line = orjson.dumps(dict(record), option=orjson.OPT_APPEND_NEWLINE)
        decode_entry(line, session_id)
    except (TypeError, orjson.JSONEncodeError, LineError) as exc:
        raise ValueError(f"session {session_id!r}: record {index} is not a message: {exc}") from None
    return line


def check_usage(usage: object) -> TokenUsage | None:
    """Validate a `usage` argument: None or a TokenUsage whose counts are 64-bit ints."""
    if usage is None:
        return None
    if not isinstance(usage, TokenUsage):
        raise TypeError(f"usage must be a TokenUsage or None, not {type(usage).__name__}")
    for field in TOKEN_FIELDS:
        check_int(f"usage.{field}", getattr(usage, field))
    check_text("usage.stop_reason", usage.stop_reason)  # None: as "", none given
    return usage


_ID_PLACEHOLDER = b'{"id":0,'


def encode_new(
    role: Role,
    content: str | None,
    tool_calls: str | None,
    tool_call_id: str | None,
    usage: TokenUsage | None,
    agent_name: str | None,
    created_at: str,
    full_content: str | None = None,
) -> bytes:
    """Validate and encode a message before its id is known; `with_id` sets the id later.

    Encoding outside the session lock keeps the lock short; every check happens here, so a
    bad value raises before anything is locked or written.
    """
    texts = (
        ("content", content),
        ("tool_calls", tool_calls),
        ("tool_call_id", tool_call_id),
        ("full_content", full_content),
    )
    for name, value in (*texts, ("agent_name", agent_name)):
        if value is not None and type(value) is not str:
            check_text(name, value)  # raises TypeError naming the argument (or accepts a str subclass)
    check_usage(usage)
    try:
        return encode_record(0, role, content, tool_calls, tool_call_id, usage, agent_name, created_at, full_content)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates; say which argument had one.
        for name, value in (*texts, ("agent_name", agent_name)):
            check_text(name, value)
        raise


def with_id(line: bytes, msg_id: int) -> bytes:
    """Put the real id into a line made by `encode_new` (its first field is the id)."""
    return b'{"id":%d,' % msg_id + line[len(_ID_PLACEHOLDER) :]


# Expected JSON types per known field; other fields are allowed and ignored (kept on disk).
_NONE = type(None)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "role": (str,),
    "session_id": (str, _NONE),
    "compaction": (str,),  # on a compaction's summary line: when it was made (see `classify`)
    "tracks_completion": (bool, _NONE),
    **{f: (str, _NONE) for f in _TEXT_FIELDS},
    **{f: (int, _NONE) for f in TOKEN_FIELDS},
}
_MESSAGE_FIELDS: tuple[str, ...] = Message.__slots__
_FIELD_INDEX = {name: i for i, name in enumerate(_MESSAGE_FIELDS)}
_VALUES = attrgetter(*_MESSAGE_FIELDS)


class _Draft:
    """A mutable twin of `Message` (the same slots in the same order), turned into one by `_build`."""

    __slots__ = _MESSAGE_FIELDS


def _build(values: Sequence[Any]) -> Message:
    """The Message with these field values (in field order), values already checked.

    Reading builds one per line: plain slot stores and a class switch cost about a third of the
    frozen dataclass `__init__` (one `object.__setattr__` per field).
    """
    draft: Any = _Draft()
    (
        draft.id,
        draft.session_id,
        draft.role,
        draft.content,
        draft.tool_calls,
        draft.tool_call_id,
        draft.prompt_tokens,
        draft.completion_tokens,
        draft.cache_read_tokens,
        draft.cache_creation_tokens,
        draft.thinking_tokens,
        draft.agent_name,
        draft.created_at,
        draft.compacted_at,
        draft.completed_at,
        draft.full_content,
        draft.thinking_content,
        draft.stop_reason,
    ) = values
    draft.__class__ = Message
    return draft  # type: ignore[no-any-return]


def replace_fields(message: Message, fields: dict[str, Any]) -> Message:
    """`message` with `fields` (name -> value) changed: `dataclasses.replace` without its `__init__`."""
    values = list(_VALUES(message))
    for name, value in fields.items():
        values[_FIELD_INDEX[name]] = value
    return _build(values)


# Record shapes (keys, then the type of each value) whose lines were checked and decoded as a
# message, each with its `NOTABLE` keys: a line of a known shape needs only its role looked up.
# A log has a few shapes.
_GOOD_SHAPES: dict[tuple[Any, ...], frozenset[str]] = {}
_MAX_SHAPES = 1024
# Keys that make a message line more than a message appended: a compaction, one archived on its
# own line (the first layout), one marked complete.
NOTABLE = frozenset({"compaction", "compacted_at", "completed_at"})


class Completion(NamedTuple):
    """An annotation line (no `role`) about an earlier message: `{"id": 7, "completed_at": "..."}`
    (message 7 is complete) or `{"id": 7, "thinking_content": "..."}` (its reasoning).

    Appended by `mark_message_complete` and `update_message_thinking_content` so message lines
    stay immutable and appends stay cheap; readers apply it to the earlier message with that id
    (the first completion wins, the last thinking text wins).
    """

    id: int
    completed_at: str | None
    thinking_content: str | None = None


def encode_completion(msg_id: int, completed_at: str) -> bytes:
    """The `\\n`-terminated annotation line marking message `msg_id` complete."""
    return orjson.dumps({"id": msg_id, "completed_at": completed_at}, option=orjson.OPT_APPEND_NEWLINE)


def encode_thinking(msg_id: int, thinking_content: str) -> bytes:
    """The `\\n`-terminated annotation line setting the thinking text of message `msg_id`."""
    return orjson.dumps({"id": msg_id, "thinking_content": thinking_content}, option=orjson.OPT_APPEND_NEWLINE)


def note_fields(note: Completion, message: Message) -> dict[str, str]:
    """The fields `note` changes on `message`: an unset `completed_at`, any new thinking text."""
    fields = {}
    if note.completed_at is not None and message.completed_at is None:
        fields["completed_at"] = note.completed_at
    if note.thinking_content is not None and note.thinking_content != message.thinking_content:
        fields["thinking_content"] = note.thinking_content
    return fields


def apply_note(message: Message, note: Completion) -> Message | None:
    """`message` with the annotation applied (see `Completion`); None when it changes nothing."""
    fields = note_fields(note, message)
    return replace_fields(message, fields) if fields else None


def decode_line(line: bytes, session_id: str) -> Message:
    """Parse one line (without its `\\n`) into a Message; raise `LineError` saying what is wrong.

    A completion annotation is not a message here either (a `LineError`); readers that apply
    annotations use `decode_entry`.
    """
    entry = decode_entry(line, session_id)
    if type(entry) is Completion:
        raise LineError("a completion annotation, not a message")
    return entry  # type: ignore[return-value]


def decode_entry(line: bytes, session_id: str) -> Message | Completion:
    """Parse one line into a Message or a `Completion` annotation; raise `LineError` otherwise."""
    entry = decode_lines((line,), session_id)[0]
    if type(entry) is LineError:
        raise entry
    return entry  # type: ignore[return-value]


def decode_lines(
    lines: Sequence[bytes], session_id: str, notable: set[str] | None = None
) -> list[Message | Completion | LineError]:
    """`decode_entry` of each line, in order; a line that is not one comes as its `LineError`.

    `notable` gets the `NOTABLE` keys the message lines have (so callers need not search bytes).
    """
    out: list[Message | Completion | LineError] = []
    append = out.append
    loads, not_json, good, roles, build = orjson.loads, orjson.JSONDecodeError, _GOOD_SHAPES, _ROLES, _build
    seen = set() if notable is None else notable
    for line in lines:  # once per line of a log: what a cold load waits for
        try:
            record = loads(line)
        except not_json as exc:
            append(LineError(f"not JSON ({exc})"))
            continue
        # A record of a shape already checked (see `_check`) needs only its role looked up.
        marks = good.get((*record, *map(type, record.values()))) if type(record) is dict else None
        role = roles.get(record["role"]) if marks is not None else None
        if role is None:
            try:
                checked = _check(record)
            except LineError as exc:
                append(exc)
                continue
            if isinstance(checked, Completion):
                append(checked)
                continue
            role, marks = checked, NOTABLE.intersection(record)
        if marks:
            seen |= marks
        get = record.get
        append(
            build(
                (
                    record["id"],
                    session_id,
                    role,
                    get("content"),
                    get("tool_calls"),
                    get("tool_call_id"),
                    get("prompt_tokens"),
                    get("completion_tokens"),
                    get("cache_read_tokens"),
                    get("cache_creation_tokens"),
                    get("thinking_tokens"),
                    get("agent_name"),
                    get("created_at"),
                    get("compacted_at"),
                    get("completed_at"),
                    get("full_content"),
                    get("thinking_content"),
                    get("stop_reason"),
                )
            )
        )  # known fields taken, others ignored (they stay on disk)
    return out


def _check(record: Any) -> Role | Completion:
    """The role of a parsed line that is a message, or the `Completion` it is; `LineError` saying
    what is wrong otherwise. A message's shape (keys, types of values) is remembered as good."""
    if type(record) is not dict:
        raise LineError("not a JSON object")
    for key, value in record.items():
        expected = _FIELD_TYPES.get(key)
        if expected is not None and type(value) not in expected:
            kind = "an integer" if int in expected else "a boolean" if bool in expected else "a string"
            raise LineError(f"'{key}' must be {kind}{' or null' if _NONE in expected else ''}")
    if "compaction" in record and parse_time(record["compaction"]) is None:
        raise LineError(f"'compaction' is not a time: {record['compaction']!r}")
    if "id" not in record:
        raise LineError("missing 'id'")
    role = _ROLES.get(record.get("role"))  # type: ignore[arg-type]
    if role is None:
        done, thinking = record.get("completed_at"), record.get("thinking_content")
        if "role" not in record and (type(done) is str or type(thinking) is str):
            return Completion(record["id"], done, thinking)
        raise LineError(f"missing or unknown 'role' {record.get('role')!r}")
    if "compaction" not in record:  # any record of this shape passes the checks above
        if len(_GOOD_SHAPES) >= _MAX_SHAPES:
            _GOOD_SHAPES.clear()
        shape = (*record, *map(type, record.values()))
        _GOOD_SHAPES[shape] = NOTABLE.intersection(record)
    return role


def field_suffix(name: str, value: str) -> bytes:
    """The bytes that end a record with one more string field: `,"name":"value"}`."""
    return b',"' + name.encode() + b'":' + orjson.dumps(value) + b"}"


def add_field(line: bytes, suffix: bytes) -> bytes:
    """Add a field (from `field_suffix`) to an encoded message, copying every other byte as it was.

    The new key goes last: JSON readers (orjson included) keep the last of duplicate keys. A
    message has an `id`, so its object is never empty and the comma is always right.
    """
    body = line.rstrip()
    if not body.endswith(b"}"):
        raise LineError("not a JSON object")
    return body[:-1] + suffix


def fold_fields(line: bytes, fields: dict[str, str]) -> bytes:
    """Set string fields of an encoded message (a rewrite folding annotations into its line).

    New keys are spliced on, every other byte copied; a key the line has already is replaced
    by re-encoding the line, so no older value stays behind as a duplicate key.
    """
    if any(b'"' + name.encode() + b'"' in line for name in fields):
        record = orjson.loads(line)
        record.update(fields)
        return orjson.dumps(record)
    for name, value in fields.items():
        line = add_field(line, field_suffix(name, value))
    return line


def project_root_text(project_root: str | os.PathLike[str] | None) -> str | None:
    """A project root as stored and compared: absolute, or None for no project."""
    if project_root is None:
        return None
    root_text = os.path.abspath(os.fspath(project_root))
    check_text("project_root", root_text, optional=False)
    return root_text
