"""Moving history between a koda-files store and koda's own SQLite database (`koda.db`).

`import_sqlite(db_path, store)` copies every session of a koda database into the store: message
ids, order (by id, as koda orders them), timestamps, compaction and completion marks, titles,
approval modes, idle times, metadata and the todo. It opens the database read-only (it works
while koda has it open) and never changes it. Each session is built in a dot-directory and
renamed into place, so it appears whole or not at all (`koda_files/kodadb/_import.py`).

`export_sqlite(store, db_path)` writes a new database in koda's schema (the newest column set,
both indexes, WAL mode), built under a temporary name and moved into place at the end; it never
overwrites an existing file (`koda_files/kodadb/_export.py`).

This module holds what both directions share: koda's schema, the reports, and the conversion of
values. koda's timestamps are SQLite's `CURRENT_TIMESTAMP` text, `YYYY-MM-DD HH:MM:SS` UTC; this
store's are `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Import converts koda's to ours; export converts ours
to koda's (to the second, so koda's text comparisons of times keep working).

How each koda column is kept here:

- `sessions.title`, `sessions.mode`: the top-level `"title"` and `"mode"` of `metadata.json`;
- `sessions.last_accessed_at`: the session's last access, which this store keeps as file mtimes
  (`FileStore.session_last_accessed` / `set_session_last_accessed`), so the idle time carries over;
- `messages.completed_at`: the `"completed_at"` field of the message line;
- `session_metadata`: the header's `"metadata"`, except the key `todo`, which is `todo.md`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..store import FileStore
from ._common import ExportReport, ImportReport, Progress, default_koda_db
from ._export import run_export
from ._import import run_import

__all__ = ["ExportReport", "ImportReport", "Progress", "default_koda_db", "export_sqlite", "import_sqlite"]

# Defined beside the code that fills them; shown (help, repr of the class) where they are public.
ExportReport.__module__ = ImportReport.__module__ = __name__


def import_sqlite(
    db_path: str | os.PathLike[str],
    store: FileStore,
    *,
    replace: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Copy every session of koda's database at `db_path` into `store`; the database is not changed.

    A session already in the store is skipped (and reported) unless `replace` is true. Message ids
    are kept unless they could already have been handed out by this store; then that session is
    renumbered in order with fresh ids (and reported). Afterwards the store's id counter is past
    every imported id.
    """
    return run_import(Path(os.fspath(db_path)), store, replace, progress)


def export_sqlite(
    store: FileStore, db_path: str | os.PathLike[str], *, progress: Progress | None = None
) -> ExportReport:
    """Write every session of `store` into a new koda database at `db_path` (never overwritten)."""
    return run_export(store, Path(os.path.abspath(os.fspath(db_path))), progress)
