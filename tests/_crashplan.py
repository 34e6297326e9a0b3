"""Crash states of a recording (tests/_crashstate.py): which trees a power loss can leave.

The weak model: a name op is durable once its directory is synced after it, else kept or lost
independently of other names (ops on one name stay in order: a later one is kept only with the
earlier ones, so a rename never resurrects a name its create did not make); a file's data is
durable once it is synced, else a prefix of its pending writes survives, the next one possibly
torn. Per directory prefixes would be more realistic for journaling file systems, but would hide
a lost create behind a later rename in the same directory (a quarantine file gone while the log
rewrite that relies on it survived), which POSIX allows. The ordered model: a prefix of all ops,
its last write possibly torn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from _crashstate import DATA_OPS, META, NAME_OPS, SYNC, WRITE, Op, Recording, apply, copy_tree, files_of


@dataclass(frozen=True)
class Plan:
    """One crash state: ops[:crash] were issued; of those not yet durable, `names` (indices) of
    the name ops persisted, and file `ino` kept `cuts[ino] = (k, torn)`: its first k pending
    writes, plus `torn` bytes (-1: none) of the next one."""

    crash: int
    names: frozenset[int]
    cuts: tuple[tuple[int, int, int], ...]
    model: str
    note: str


def _next_sync(ops: list[Op]) -> list[int]:
    """For each op, the index of the first later sync of its inode (len(ops) if none)."""
    out = [len(ops)] * len(ops)
    last: dict[int, int] = {}
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if op.kind == SYNC:
            last[op.ino] = i
        elif op.kind in NAME_OPS or op.kind in DATA_OPS:
            out[i] = last.get(op.ino, len(ops))
    return out


def _torn_points(op: Op) -> list[int]:
    # A write past the old end can be cut anywhere; these keep "just the first byte", half, and
    # "all but the last byte" (a record missing only its newline).
    n = len(op.data)
    return sorted({t for t in (1, n // 2, n - 1) if 0 < t < n}) if op.kind == WRITE else []


class Planner:
    """The crash states of one recording, as `Plan`s (cheap) to `build` into trees."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.sync_at = _next_sync(rec.ops)

    def pending(self, crash: int) -> tuple[list[int], dict[int, list[int]]]:
        """At `crash`: the name ops not yet durable, and per file its writes not yet durable."""
        names: list[int] = []
        data: dict[int, list[int]] = {}
        for i, op in enumerate(self.rec.ops[:crash]):
            if self.sync_at[i] < crash:
                continue
            if op.kind in NAME_OPS:
                names.append(i)
            elif op.kind in DATA_OPS:
                data.setdefault(op.ino, []).append(i)
        return names, data

    def _closure(self, names: list[int], start: int, forward: bool) -> set[int]:
        """`start` and the pending name ops that must go with it: later ones on the same names
        when dropping it (forward), earlier ones when keeping it."""
        keys = set(self.rec.ops[start].keys())
        out = {start}
        for i in names if forward else reversed(names):
            if (i > start if forward else i < start) and keys & set(self.rec.ops[i].keys()):
                out.add(i)
                keys |= set(self.rec.ops[i].keys())
        return out

    def plans(self, crash: int, rng: random.Random, samples: int) -> Iterator[Plan]:
        """The weak model's states at `crash`: all, none, each name change lost alone or kept
        alone, each file's pending writes cut, and `samples` random mixes; then the ordered ones."""
        names, data = self.pending(crash)
        full = tuple((ino, len(ix), -1) for ino, ix in data.items())
        every = frozenset(names)
        yield Plan(crash, every, full, "weak", "all pending kept")
        yield Plan(crash, frozenset(), tuple((ino, 0, -1) for ino in data), "weak", "all pending lost")
        for i in names:
            lost = every - self._closure(names, i, True)
            yield Plan(crash, lost, full, "weak", f"lost only op {i}")
            yield Plan(crash, frozenset(self._closure(names, i, False)), full, "weak", f"kept only name op {i}")
        for ino, ix in data.items():
            last = self.rec.ops[ix[-1]]
            for k, torn in [(0, -1), (len(ix) - 1, -1)] + [(len(ix) - 1, t) for t in _torn_points(last)]:
                cuts = tuple((j, k if j == ino else len(jx), torn if j == ino else -1) for j, jx in data.items())
                yield Plan(crash, every, cuts, "weak", f"inode {ino} cut at ({k}, {torn})")
        for _ in range(samples):
            kept: set[int] = set()
            blocked: set[tuple[int, str]] = set()
            for i in names:  # each kept at random, unless an earlier change of one of its names was lost
                keys = set(self.rec.ops[i].keys())
                if keys & blocked or rng.random() < 0.5:
                    blocked |= keys
                else:
                    kept.add(i)
            mix = []
            for ino, ix in data.items():
                k = rng.randint(0, len(ix))
                tears = _torn_points(self.rec.ops[ix[k]]) if k < len(ix) else []
                mix.append((ino, k, rng.choice(tears) if tears and rng.random() < 0.5 else -1))
            yield Plan(crash, frozenset(kept), tuple(mix), "weak", "random mix")
        # Ordered: the prefix, its last op torn if it is a write.
        if crash and self.rec.ops[crash - 1].kind == WRITE:
            op = self.rec.ops[crash - 1]
            for t in _torn_points(op):
                tear = {op.ino: (len(data[op.ino]) - 1, t)}
                cuts = tuple((j, *tear.get(j, (len(jx), -1))) for j, jx in data.items())
                yield Plan(crash, every, cuts, "ordered", f"last write torn at {t}")

    def build(self, plan: Plan) -> dict[str, bytes | None]:
        """The tree `plan` leaves, as relative path -> bytes (None: a directory)."""
        tree = copy_tree(self.rec.initial)
        cuts = {ino: (k, torn) for ino, k, torn in plan.cuts}
        seen: dict[int, int] = {}  # file -> pending writes met so far
        for i, op in enumerate(self.rec.ops[: plan.crash]):
            durable = self.sync_at[i] < plan.crash
            if op.kind in NAME_OPS:
                if durable or i in plan.names:
                    apply(tree, op)
            elif op.kind in DATA_OPS:
                if durable:
                    apply(tree, op)
                    continue
                k, torn = cuts.get(op.ino, (1 << 30, -1))
                n = seen[op.ino] = seen.get(op.ino, -1) + 1
                if n < k:
                    apply(tree, op)
                elif n == k and torn >= 0:
                    apply(tree, op, torn)
        return files_of(tree)


def crash_points(rec: Recording) -> list[int]:
    """Every point worth crashing at: the start, and after each op that changes or syncs."""
    return [0] + [i + 1 for i, op in enumerate(rec.ops) if op.kind != META]


def completed_calls(rec: Recording, crash: int) -> int:
    """How many calls had returned when ops[:crash] were issued (calls run one after another)."""
    return sum(1 for c in rec.calls if c.end <= crash)
