"""koda-files: koda's conversation history as plain files you can git, grep, jq and edit.

from koda_files import FileStore, Role
store = FileStore()                       # $KODA_FILES_DIR or the platform data dir
sid = store.create_session("main", ".")
store.insert_message(sid, Role.USER, "hello")
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._store.protocol import AsyncPersistence, Persistence
from .errors import (
    ConcurrentEditError,
    CorruptFileError,
    InvalidSessionIdError,
    KodaFilesError,
    MessageNotFoundError,
    NotAStoreError,
    SessionNotFoundError,
    UnsupportedLayoutError,
)
from .types import (
    CheckReport,
    CompactedStats,
    Durability,
    Interruption,
    InterruptionKind,
    Message,
    Problem,
    ProblemKind,
    PurgePreview,
    Role,
    SearchHit,
    SessionEvent,
    SessionInfo,
    SessionOverview,
    SessionUsage,
    StoreStats,
    TokenUsage,
)

if TYPE_CHECKING:
    from .aio import AsyncFileStore
    from .kodadb import ExportReport, ImportReport, export_sqlite, import_sqlite
    from .store import FileStore

# Imported on first use: the store (with filelock and orjson), asyncio and sqlite3 cost more
# start-up time than the rest of the package, and `koda-files --help` needs none of them.
_LAZY = {
    "FileStore": "store",
    "AsyncFileStore": "aio",
    "ExportReport": "kodadb",
    "ImportReport": "kodadb",
    "export_sqlite": "kodadb",
    "import_sqlite": "kodadb",
}


class _LazyModule(ModuleType):
    """The package's module type: a public name of `_LAZY` is imported on first use.

    (A class, not a module-level `__getattr__`, so that `help(koda_files)` lists only the API.)
    """

    def __getattr__(self, name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'koda_files' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        # Tools that list the package (help(), completion) see the lazy names too.
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _LazyModule


__version__ = "0.1.0"

__all__ = [
    "AsyncFileStore",
    "AsyncPersistence",
    "CheckReport",
    "CompactedStats",
    "ConcurrentEditError",
    "CorruptFileError",
    "Durability",
    "ExportReport",
    "FileStore",
    "ImportReport",
    "Interruption",
    "InterruptionKind",
    "InvalidSessionIdError",
    "KodaFilesError",
    "Message",
    "MessageNotFoundError",
    "NotAStoreError",
    "Persistence",
    "Problem",
    "ProblemKind",
    "PurgePreview",
    "Role",
    "SearchHit",
    "SessionEvent",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionOverview",
    "SessionUsage",
    "StoreStats",
    "TokenUsage",
    "UnsupportedLayoutError",
    "__version__",
    "export_sqlite",
    "import_sqlite",
]
