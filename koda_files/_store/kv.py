"""Store-wide key-value settings: one small `kv.json` at the root, rewritten atomically under a lock.

koda keeps settings (the last provider used, …) in a key-value table; here it is a JSON object of
string keys to string values, pretty-printed with sorted keys so it reads and diffs well and can
be edited by hand. Reads take no lock (the file is replaced by rename, never written in place).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from .._files.fileops import atomic_write, read_file
from .._files.locking import FileMutex
from .._format.codec import check_text
from ..errors import CorruptFileError
from .root import StoreRoot

__all__ = ["KV_FILE", "KeyValue"]

KV_FILE = "kv.json"
_KV_LOCK = ".kv.lock"


def _read_kv(root: Path) -> dict[str, str]:
    """The whole map; {} when there is no file. A file that is not a map of strings raises, naming it."""
    path = root / KV_FILE
    raw = read_file(path)
    if raw is None or not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptFileError(path, f"does not parse: {exc}", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise CorruptFileError(path, "is not a JSON object")
    for key, value in data.items():
        if not isinstance(value, str):
            raise CorruptFileError(path, f"the value of {key!r} is not a string")
    return data


class KeyValue:
    """`kv_get`, `kv_set`, `kv_delete`, `kv_list_prefix` over a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root
        self._mutex = FileMutex(root.root / _KV_LOCK)

    def close(self) -> None:
        self._mutex.close()

    def _kv_change(self, key: str, value: str | None) -> None:
        self._root.ensure_root()
        mutex = self._mutex
        mutex.acquire()
        try:
            data = _read_kv(self._root.root)
            if data.get(key) == value:
                return
            if value is None:
                del data[key]
            else:
                data[key] = value
            atomic_write(
                self._root.root / KV_FILE,
                [orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)],
            )
        finally:
            mutex.release()

    def kv_get(self, key: str) -> str | None:
        """The value stored under `key`, or None."""
        check_text("key", key, optional=False)
        return _read_kv(self._root.root).get(key)

    def kv_set(self, key: str, value: str) -> None:
        """Insert or replace `key`. Atomic: readers see the old file or the new one."""
        check_text("key", key, optional=False)
        check_text("value", value, optional=False)
        self._kv_change(key, value)

    def kv_delete(self, key: str) -> None:
        """Remove `key`; nothing happens if it is not there."""
        check_text("key", key, optional=False)
        self._kv_change(key, None)

    def kv_list_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """(key, value) pairs whose key starts with `prefix` (case-sensitive, no wildcards), by key."""
        check_text("prefix", prefix, optional=False)
        return sorted((k, v) for k, v in _read_kv(self._root.root).items() if k.startswith(prefix))
