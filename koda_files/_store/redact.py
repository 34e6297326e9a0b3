"""Redaction: `clear_message_content(ids, replacement)` removes a secret from history for good.

Every log holding one of the ids is rewritten under its session's lock: the message's `content`
becomes the replacement and its `full_content` and `thinking_content` go (they hold the same
text, whole or reasoned about), as do thinking annotations of it. Lines the store could not read
(a torn or hand-broken line) that name such an id or hold its old text go too, the matching
`quarantine.jsonl` entries keep their place but lose their text, and crash leftovers (`.*.tmp`)
in those session directories are removed. All new files are written and synced first, then
renamed into place; a failure before the last rename puts every file back: all or nothing.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .._files.fileops import fsync_dir, link, rename, temp_name, unlink, write_temp
from .._format.codec import Completion, LineError, check_int, check_text, decode_entry
from .._format.framing import iter_file_lines
from .._format.layout import utc_now
from .._session.session import SessionDir
from ..errors import MessageNotFoundError
from .check import QUARANTINE
from .root import StoreRoot

__all__ = ["Redact"]

_TEXT_FIELDS = ("content", "full_content", "thinking_content")


class _Plan:
    """What one session's rewrite changes: found ids, old texts, and the new files to put in place."""

    def __init__(self, s: SessionDir, ids: set[int]) -> None:
        self.s = s
        self.ids = ids
        self.found: set[int] = set()
        self.secrets: set[str] = set()
        self.swaps: list[tuple[Path, Path]] = []  # (temp file, target)

    def names_id(self, text: str) -> bool:
        return any(int(n) in self.ids for n in re.findall(r'"id"\s*:\s*(\d+)', text))

    def leaks(self, text: str) -> bool:
        return self.names_id(text) or any(secret in text for secret in self.secrets)

    def scan(self) -> None:
        for _, line in self.s.iter_lines():
            try:
                entry = decode_entry(line, self.s.id) if line.strip() else None
            except LineError:
                continue
            if entry is not None and entry.id in self.ids:
                self.found.add(entry.id)
                values = [getattr(entry, f, None) for f in _TEXT_FIELDS]
                self.secrets.update(v for v in values if isinstance(v, str) and v.strip())

    def log_lines(self, replacement: str) -> Iterator[bytes]:
        for _, line in self.s.iter_lines():
            try:
                entry = decode_entry(line, self.s.id) if line.strip() else None
            except LineError:
                if not self.leaks(line.decode("utf-8", "replace")):
                    yield line + b"\n"
                continue
            if entry is None or entry.id not in self.ids:
                yield line + b"\n"
            elif type(entry) is Completion:
                if entry.completed_at is not None:  # a completion holds no text: keep it
                    yield orjson.dumps({"id": entry.id, "completed_at": entry.completed_at}) + b"\n"
            else:
                record: dict[str, Any] = orjson.loads(line)
                record["content"] = replacement
                record.pop("full_content", None)
                record.pop("thinking_content", None)
                yield orjson.dumps(record) + b"\n"

    def quarantine_lines(self, replacement: str, now: str) -> Iterator[bytes] | None:
        """The quarantine with the text of entries that leak taken out; None if none does."""
        out, changed = [], False
        for _, line in iter_file_lines(self.s.path / QUARANTINE, with_tail=True):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                leaked = self.leaks(line.decode("utf-8", "replace"))
                changed |= leaked
                if not leaked:
                    out.append(line + b"\n")
                continue
            kept = record.get("text")
            if not isinstance(kept, str):
                with contextlib.suppress(ValueError, TypeError):
                    kept = base64.b64decode(record.get("base64") or "").decode("utf-8", "replace")
            if isinstance(kept, str) and self.leaks(kept):
                changed = True
                record.pop("base64", None)
                record.update(text=replacement, redacted_at=now)
                out.append(orjson.dumps(record) + b"\n")
            else:
                out.append(line + b"\n")
        return iter(out) if changed else None


class Redact:
    """`clear_message_content` over a store's `StoreRoot`."""

    def __init__(self, root: StoreRoot) -> None:
        self._root = root

    def clear_message_content(self, message_ids: Sequence[int], replacement: str) -> None:
        """Replace the content of these messages by `replacement`, leaving no copy of the old text.

        Ids found in no session raise `MessageNotFoundError` and nothing changes; no ids: nothing
        happens. See the module docstring for what is rewritten.
        """
        check_text("replacement", replacement, optional=False)
        ids = {check_int("message_id", i) for i in message_ids}
        if not ids:
            return
        candidates = [sid for sid in self._root.session_ids() if self._may_hold(sid, ids)]
        with contextlib.ExitStack() as stack:
            plans = []
            for sid in sorted(candidates):  # one lock order for every redaction: no deadlock
                s = stack.enter_context(self._root.session(sid))
                stack.enter_context(s.locked())
                plan = _Plan(s, ids)
                plan.scan()
                if plan.found:
                    plans.append(plan)
            missing = ids - set().union(*(p.found for p in plans))
            if missing:
                raise MessageNotFoundError(missing, self._root.sessions_dir)
            self._swap_all(plans, replacement)

    def _may_hold(self, session_id: str, ids: set[int]) -> bool:
        path = self._root.sessions_dir / session_id / "messages.jsonl"
        pattern = re.compile(rb'"id"\s*:\s*(\d+)')
        for _, line in iter_file_lines(path, with_tail=True):
            if any(int(n) in ids for n in pattern.findall(line)):
                return True
        return False

    def _swap_all(self, plans: list[_Plan], replacement: str) -> None:
        now = utc_now()
        backups: list[tuple[Path, Path]] = []  # (hard link of the old file, target)
        try:
            for plan in plans:
                s = plan.s
                for entry in os.scandir(s.path):  # a crash's leftovers may hold the old text
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        unlink(Path(entry.path))
                plan.swaps.append((write_temp(s.messages_path, plan.log_lines(replacement)), s.messages_path))
                quarantined = plan.quarantine_lines(replacement, now)
                if quarantined is not None:
                    target = s.path / QUARANTINE
                    plan.swaps.append((write_temp(target, quarantined), target))
            for plan in plans:
                for tmp, target in plan.swaps:
                    backup = target.parent / temp_name(target.name)
                    link(target, backup)
                    backups.append((backup, target))
                    rename(tmp, target)
        except BaseException:
            for backup, target in reversed(backups):
                with contextlib.suppress(OSError):
                    # rename(2) of a hard link onto its twin does nothing: unlink it instead.
                    if os.path.samefile(backup, target):
                        unlink(backup)
                    else:
                        rename(backup, target)
            for plan in plans:
                for tmp, _ in plan.swaps:
                    with contextlib.suppress(OSError):
                        unlink(tmp)
            raise
        finally:
            for plan in plans:
                # Every cache of these logs is stale: the parsed log, the context built on it,
                # the append position. (Other stores see the new inode on their next read.)
                plan.s.forget_cache()
        for backup, _ in backups:
            unlink(backup)
        for plan in plans:
            fsync_dir(plan.s.path)
