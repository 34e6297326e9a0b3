"""Integrity checking and repair of a store: `FileStore.check(repair=False)`.

(Being written: the report types below are the fixed interface the CLI is written against.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CheckReport", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the store; `kind` is one of the KINDS below."""

    kind: str  # "bad-line" | "torn-tail" | "temp-file" | "bad-header" | "missing-log" | "not-a-session"
    path: str  # the file or directory involved
    session_id: str | None = None
    line: int | None = None  # 1-based line number for bad-line / torn-tail
    detail: str = ""
    repaired: bool = False  # True when check(repair=True) fixed or quarantined it


@dataclass(frozen=True)
class CheckReport:
    """What `check` found; `ok` is True when there is nothing (left) to report."""

    sessions: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)
