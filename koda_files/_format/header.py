"""`metadata.json`: the session header, pretty-printed so a diff shows one line per changed value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import read_file
from ..errors import CorruptFileError, KodaFilesError
from .layout import METADATA

__all__ = ["encode_header", "read_header"]


def encode_header(header: dict[str, Any]) -> bytes:
    """`metadata.json` bytes: sorted keys, two-space indent, final newline (one line per value)."""
    return orjson.dumps(header, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def read_header(directory: Path, session_id: str) -> dict[str, Any]:
    """Parse `metadata.json`; raise `KodaFilesError` naming the file if it is missing or not an object."""
    path = directory / METADATA
    try:
        raw = read_file(path)
    except OSError as exc:
        raise KodaFilesError(f"session {session_id!r}: cannot read {path}: {exc.strerror}") from exc
    if raw is None:
        raise KodaFilesError(f"session {session_id!r}: {path} is missing")
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        why = f"metadata of session {session_id!r} does not parse: {exc}"
        raise CorruptFileError(path, why, line=exc.lineno) from None
    if not isinstance(header, dict):
        raise CorruptFileError(path, f"metadata of session {session_id!r} is not a JSON object")
    meta = header.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise CorruptFileError(path, f"metadata of session {session_id!r}: 'metadata' is not an object")
    return header
