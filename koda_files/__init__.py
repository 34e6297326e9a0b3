"""koda-files: koda's conversation history as plain files you can git, grep, jq and edit.

from koda_files import FileStore, Role
store = FileStore()                       # $KODA_FILES_DIR or the platform data dir
sid = store.create_session("main", ".")
store.insert_message(sid, Role.USER, "hello")
"""

from __future__ import annotations

from .aio import AsyncFileStore
from .errors import InvalidSessionIdError, KodaFilesError, SessionNotFoundError
from .protocol import AsyncPersistence, Persistence
from .store import FileStore
from .types import CompactedStats, Message, Role, SessionInfo, SessionUsage, TokenUsage

__version__ = "0.1.0"

__all__ = [
    "AsyncFileStore",
    "AsyncPersistence",
    "CompactedStats",
    "FileStore",
    "InvalidSessionIdError",
    "KodaFilesError",
    "Message",
    "Persistence",
    "Role",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionUsage",
    "TokenUsage",
    "__version__",
]
