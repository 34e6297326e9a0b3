"""A store holds descriptors (locks, appends) only while it lives, or until `close()`."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from koda_files import FileStore, Role


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _use(store: FileStore) -> None:
    sid = store.create_session("main", "/p")
    store.insert_message(sid, Role.USER, "hello")
    store.load_context(sid)


def test_a_store_dropped_without_close_frees_its_descriptors(tmp_path: Path) -> None:
    _use(FileStore(tmp_path))  # warm anything opened once per process
    gc.collect()
    before = _open_descriptors()
    for _ in range(30):
        _use(FileStore(tmp_path))
    gc.collect()
    assert _open_descriptors() == before


def test_close_and_the_with_block_free_descriptors_and_the_store_stays_usable(tmp_path: Path) -> None:
    _use(FileStore(tmp_path))
    gc.collect()
    before = _open_descriptors()
    with FileStore(tmp_path) as store:
        _use(store)
        assert _open_descriptors() > before
    assert _open_descriptors() == before
    _use(store)  # reopens on demand
    store.close()
    assert _open_descriptors() == before
