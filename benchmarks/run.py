#!/usr/bin/env python3
"""Side-by-side benchmark: `koda_files.FileStore` against koda's SQLite design (`sqlite_ref.py`).

    python benchmarks/run.py [--scale F] [--repeat N] [--json PATH] [--big] [--sessions N ...] [--messages N ...]
                             [--history]

Every workload runs against both stores in the same process, repetitions
interleaved (files, sqlite, sqlite, files, ...) so that machine noise hits both alike. For each
workload it prints the median of the file store, the median of SQLite, the ratio SQLite / files
(above 1: the files are faster) and, where there is an obvious one, the raw floor (the same
bytes written with `os.write` to an open file; the same lines read and `orjson.loads`-ed).
A compacted session with a long archived history (2,000 archived + 210 active, and
100,000 + 200) is loaded cold and compacted again; the cost bars compare the latter with a
session without history (compaction with and without its byte copy, cold `load_context`).
At the end: the geometric mean of the ratios, the tail check (the `last_*` queries on a short
and on a long session) and, with `--big`, the peak RSS of compaction and purge on a ~200 MB
session, measured in child processes. At each number of sessions the whole-store workloads also
report the geometric mean of their ratios, purge's floor (the same rewrites as bare system
calls) and the peak RSS of each query in a child process, building the summary and after.

All data lives in a fresh temporary directory that is removed at the end; the user's data
directory is never touched (every store gets an explicit root).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("koda_files") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO))

from sqlite_ref import SqliteStore  # noqa: E402

from koda_files import FileStore, Role, TokenUsage  # noqa: E402

Kind = Literal["files", "sqlite"]
Store = FileStore | SqliteStore  # the two stores compared: koda's core contract on both
Durability = Literal["flush", "fsync"]
KINDS: tuple[Kind, Kind] = ("files", "sqlite")
SYNC = {"flush": "NORMAL", "fsync": "FULL"}
MsgSpec = tuple[Role, str | None, str | None, str | None, TokenUsage | None]

PROJECT = "/home/dev/projects/koda-app"
OTHER_PROJECT = "/home/dev/projects/other"
SUMMARY = (
    "Summary of the conversation so far: the user asked to refactor the storage layer of the "
    "CLI into a trait with two backends, we read src/db.rs and src/persistence.rs, moved the "
    "queries behind the trait, fixed two failing tests in tests/db.rs and left a TODO about "
    "the migration of old databases. Next step: wire the file backend into the config loader."
)


# ── stores ──────────────────────────────────────────────────────────────────


def open_store(kind: Kind, loc: Path, durability: Durability = "flush") -> Store:
    """A new store object on `loc` (a root directory for files, a directory holding koda.db)."""
    if kind == "files":
        return FileStore(root=loc, durability=durability)
    return SqliteStore(loc / "koda.db", synchronous="NORMAL" if durability == "flush" else "FULL")


def close_store(store: object) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


def copy_loc(src: Path, dst: Path) -> None:
    """A fresh copy of a store's directory (every store object on `src` must be closed)."""
    shutil.copytree(src, dst, symlinks=True)


def settle(loc: Path) -> None:
    """Sync every file under `loc` (a fresh copy), so its write-back is not timed with what follows."""
    for path in loc.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def messages_file(root: Path, session_id: str) -> Path:
    return root / "sessions" / session_id / "messages.jsonl"


# ── realistic messages ──────────────────────────────────────────────────────

_WORD_TEXT = (
    "the function returns a Result and the caller unwraps it so the error path panics instead of "
    "propagating we should use the question mark operator here and add context with anyhow "
    "let me read the file first then run cargo test to see which tests fail after the change "
    "storage layer trait backend session message compaction summary token usage tool call "
    "config loader path buffer string slice iterator closure borrow lifetime mutable reference "
    "async await tokio runtime spawn blocking channel sender receiver timeout retry backoff"
)
_WORDS = _WORD_TEXT.split()
_SNIPPETS = (
    'fn load(path: &Path) -> Result<Config> {\n    let text = std::fs::read_to_string(path)?;\n'
    '    Ok(toml::from_str(&text)?)\n}\n',
    'error[E0502]: cannot borrow `self.sessions` as mutable because it is also borrowed as immutable\n',
    'test db::tests::compact_preserves_tail ... FAILED\nthread \'main\' panicked at "assertion failed"\n',
    'C:\\Users\\dev\\koda\\src\\main.rs:42:17 — “smart quotes”, émojis 🚀 and a tab\there\n',
)
_TOOLS = (
    ("read_file", '{"path": "src/db.rs", "start_line": 120, "end_line": 220}'),
    ("bash", '{"command": "cargo test -p koda-core --lib db::tests -- --nocapture", "timeout": 120}'),
    ("grep", '{"pattern": "fn compact_session", "path": "koda-core/src", "context": 3}'),
    ("edit_file", '{"path": "src/persistence.rs", "old": "fn load(&self)", "new": "fn load(&mut self)"}'),
)


class TextPool:
    """Deterministic text of a given size, drawn from pools so that generating 500k is quick."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pools: dict[int, list[str]] = {}

    def _make(self, size: int) -> str:
        rng = self.rng
        parts: list[str] = []
        n = 0
        while n < size:
            if rng.random() < 0.08:
                piece = rng.choice(_SNIPPETS)
            else:
                piece = " ".join(rng.choices(_WORDS, k=rng.randint(4, 12))) + rng.choice(
                    (". ", ", ", ".\n", "? ", ": ")
                )
            parts.append(piece)
            n += len(piece)
        return "".join(parts)[:size]

    def text(self, size: int, step: int) -> str:
        pool = self.pools.get(size)
        if pool is None:
            pool = self.pools[size] = [self._make(size) for _ in range(64)]
        prefix = f"[{step}] "
        return prefix + self.rng.choice(pool)[len(prefix) :]


def conversation(n: int, seed: int, size: int = 360) -> list[MsgSpec]:
    """`n` messages of an agent conversation: user turns, assistant tool calls, tool results.

    Contents (plus tool_calls) average about `size` bytes; every assistant message carries
    usage (about half of all messages). About 2% of turns are interrupted (a tool call left
    unanswered) and 1% leave an empty assistant message, so the sanitising passes have work.
    """
    rng = random.Random(seed)
    pool = TextPool(rng)
    out: list[MsgSpec] = []
    step = 0
    ncall = 0

    def usage(stop: str) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=rng.randint(2_000, 60_000),
            completion_tokens=rng.randint(20, 2_000),
            cache_read_tokens=rng.randint(0, 50_000),
            cache_creation_tokens=rng.randint(0, 4_000),
            thinking_tokens=rng.randint(0, 1_000),
            stop_reason=stop,
        )

    while len(out) < n:
        step += 1
        out.append((Role.USER, pool.text(size, step), None, None, None))
        for _ in range(1 if rng.random() < 0.75 else 2):
            calls = []
            for _ in range(1 if rng.random() < 0.8 else 2):
                ncall += 1
                name, args = rng.choice(_TOOLS)
                cid = f"toolu_{seed:02d}{ncall:08d}{rng.getrandbits(40):010x}"
                calls.append({"id": cid, "type": "function", "function": {"name": name, "arguments": args}})
            tool_calls = json.dumps(calls)
            text_size = max(16, size - len(tool_calls))
            out.append((Role.ASSISTANT, pool.text(text_size, step), tool_calls, None, usage("tool_use")))
            if rng.random() < 0.02:
                break  # interrupted: the calls are never answered
            for c in calls:
                out.append((Role.TOOL, pool.text(size, step), None, str(c["id"]), None))
        if rng.random() < 0.01:
            out.append((Role.ASSISTANT, rng.choice(("", "\n\n", None)), None, None, usage("end_turn")))
        out.append((Role.ASSISTANT, pool.text(size, step), None, None, usage("end_turn")))
    return out[:n]


def insert_all(store: Store, session_id: str, msgs: Sequence[MsgSpec]) -> None:
    ins = store.insert_message
    for role, content, tool_calls, tool_call_id, usage in msgs:
        ins(session_id, role, content, tool_calls, tool_call_id, usage)


# ── timing ──────────────────────────────────────────────────────────────────


def fmt_t(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Result:
    name: str
    files: list[float] = field(default_factory=list)
    sqlite: list[float] = field(default_factory=list)
    floor: float | None = None
    floor_what: str = ""
    in_geomean: bool = True

    def samples(self, kind: Kind) -> list[float]:
        return self.files if kind == "files" else self.sqlite

    def median(self, kind: Kind) -> float:
        return statistics.median(self.samples(kind))

    @property
    def ratio(self) -> float:
        return self.median("sqlite") / self.median("files")

    def as_json(self) -> dict[str, Any]:
        return {
            "files_median_s": self.median("files"),
            "sqlite_median_s": self.median("sqlite"),
            "ratio_sqlite_over_files": self.ratio,
            "floor_s": self.floor,
            "floor": self.floor_what or None,
            "in_geomean": self.in_geomean,
            "files_samples_s": self.files,
            "sqlite_samples_s": self.sqlite,
        }


def _steady(r: Result) -> list[float]:
    """The files' samples but a cold whole-store query's first two (building the summary)."""
    return r.files[2:] if "cold (" in r.name and len(r.files) > 3 else r.files


def order(rep: int) -> tuple[Kind, Kind]:
    """Alternate which store goes first, so neither always runs on a warmer machine."""
    return KINDS if rep % 2 == 0 else (KINDS[1], KINDS[0])


def timed(fn: Callable[..., object], *args: Any, per: int = 1) -> float:
    """Seconds one call of `fn(*args)` takes, divided by `per` (the operations it runs)."""
    gc.collect()
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) / per


def call_into(into: list[Any], fn: Callable[..., object], *args: Any) -> None:
    into.append(fn(*args))


def call_set(into: dict[Any, Any], key: object, fn: Callable[..., object], *args: Any) -> None:
    into[key] = fn(*args)


class Checks:
    """Cross-checks that both stores gave the same answers (the comparison is only fair if so)."""

    def __init__(self) -> None:
        self.mismatches: list[str] = []

    def same(self, what: str, files: object, sqlite: object) -> None:
        if files != sqlite:
            a, b = repr(files), repr(sqlite)
            msg = f"{what}: files={a[:300]} sqlite={b[:300]}"
            self.mismatches.append(msg)
            print(f"  !! MISMATCH {msg}", flush=True)


def context_key(msgs: Sequence[Any], hint_free: bool = False) -> list[tuple[Any, ...]]:
    """What must agree between the stores in a message list (ids and timestamps may differ)."""
    out = []
    for m in msgs:
        content = m.content
        if hint_free and m.role == Role.ASSISTANT and content and "compacted" in content and not m.tool_calls:
            content = "<continuation hint>"
        out.append(
            (
                str(m.role),
                content,
                m.tool_calls,
                m.tool_call_id,
                m.prompt_tokens,
                m.completion_tokens,
                m.cache_read_tokens,
                m.cache_creation_tokens,
                m.thinking_tokens,
            )
        )
    return out


# ── many sessions, written directly ─────────────────────────────────────────


class DirectFiles:
    """Sessions written as `FileStore` writes them, byte for byte, without its per-call syncs.

    The root comes from the store itself (marker, `sessions/`); each session gets `metadata.json`
    from `encode_header`, a log of `encode_new` lines with ids from one counter, and, when
    compacted, the lines `compact_session(sid, SUMMARY, preserve)` writes: with the installed
    koda_files' layout (the summary line recording the compaction before the kept tail, the
    marker raised; or, before that layout, archived lines marked with `compacted_at`), keeping
    call groups whole as the store does. `.ids` ends above them. `same_as_store` checks the claim.
    """

    def __init__(self, root: Path) -> None:
        from koda_files._store.root import StoreRoot

        self.store_root = StoreRoot(root)
        self.store_root.ensure_root()
        self.root = root
        self.next_id = 1
        self.journal = [secrets.token_hex(16).encode()]  # `.changes`: a line per locked write
        try:
            from koda_files._format.layout import COMPACTION_LAYOUT
        except ImportError:  # a koda_files that rewrites archived lines
            COMPACTION_LAYOUT = 0
        self.compaction_layout = COMPACTION_LAYOUT

    def session(self, project: str, msgs: Sequence[MsgSpec], preserve: int | None = None) -> str:
        """A new session of `msgs`, compacted keeping the last `preserve` (None: not compacted); its id."""
        from koda_files._format.codec import decode_line, encode_new, with_id
        from koda_files._format.header import encode_header
        from koda_files._format.layout import new_session_id, utc_now
        from koda_files._session.sanitize import CallOwners, group_start

        sid = new_session_id()
        header = {"agent_name": "main", "created_at": utc_now(), "id": sid, "metadata": {}, "project_root": project}
        lines = []
        owners = CallOwners()
        owner_of = []
        for role, content, tool_calls, tool_call_id, usage in msgs:
            line = with_id(encode_new(role, content, tool_calls, tool_call_id, usage, None, utc_now()), self.next_id)
            lines.append(line[:-1])  # without its newline
            owner_of.append(owners.feed(decode_line(line, sid)))
            self.next_id += 1
        writes = len(msgs)
        cut = group_start(owner_of, max(0, len(lines) - preserve)) if preserve is not None else 0
        if cut > 0:
            lines = self._compacted(lines, cut)
            writes += 1
        self.journal += [sid.encode()] * writes
        directory = self.root / "sessions" / sid
        os.mkdir(directory, 0o700)
        # `.lock` too: the store's first write to a session leaves it there for good.
        log = b"\n".join(lines) + b"\n"
        for name, data in (("metadata.json", encode_header(header)), ("messages.jsonl", log), (".lock", b"")):
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return sid

    def _compacted(self, lines: list[bytes], cut: int) -> list[bytes]:
        """`lines` after a compaction archiving the first `cut` of them."""
        from koda_files._format.codec import add_field, encode_record, field_suffix, fold_fields, with_id
        from koda_files._format.layout import utc_now
        from koda_files._store.rewrite import COMPACTION_HINT

        first = self.next_id
        self.next_id += 2
        now = utc_now()
        if self.compaction_layout:
            from koda_files._store.rewrite import _records  # the store's own encoder of the two lines

            self.store_root.ensure_layout(self.compaction_layout)
            summary, hint = _records(SUMMARY, now, False)
            inserted = [with_id(summary, first)[:-1], with_id(hint, first + 1)[:-1]]
            return lines[:cut] + inserted + lines[cut:]
        hint = encode_record(first + 1, Role.ASSISTANT, COMPACTION_HINT, None, None, None, None, now)[:-1]
        inserted = [
            encode_record(first, Role.SYSTEM, SUMMARY, None, None, None, None, now)[:-1],
            fold_fields(hint, {"completed_at": now}),
        ]
        archived = field_suffix("compacted_at", now)
        return [add_field(line, archived) for line in lines[:cut]] + inserted + lines[cut:]

    def finish(self) -> None:
        with open(self.root / ".ids", "wb") as f:
            f.write(b"%020d\n" % self.next_id)
        if importlib.util.find_spec("koda_files._session.journal") is not None:
            with open(self.root / ".changes", "wb") as f:
                f.write(b"\n".join(self.journal) + b"\n")


_STAMP = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"')
_ID = re.compile(rb'"id":\s*\d+')


def _normal(data: bytes, sid: str) -> bytes:
    """A session file with its times, message ids and session id blanked, to compare writers."""
    return _ID.sub(b'"id":0', _STAMP.sub(b'"T"', data.replace(sid.encode(), b"SID")))


def same_as_store(tmp: Path, checks: Checks) -> None:
    """Cross-check `DirectFiles` against the store: the same sessions through the API and written
    directly, compacted with every `preserve` from 0 up (call groups split and not), must match."""
    msgs = conversation(24, seed=9)
    api_root, direct_root = tmp / "direct-check-api", tmp / "direct-check-direct"
    api = FileStore(root=api_root)
    direct = DirectFiles(direct_root)
    for preserve in (None, *range(0, 26, 3)):
        sid = api.create_session("main", PROJECT)
        insert_all(api, sid, msgs)
        if preserve is not None:
            api.compact_session(sid, SUMMARY, preserve)
        did = direct.session(PROJECT, msgs, preserve)
        for name in ("metadata.json", "messages.jsonl", ".lock"):
            got = _normal((direct_root / "sessions" / did / name).read_bytes(), did)
            want = _normal((api_root / "sessions" / sid / name).read_bytes(), sid)
            checks.same(f"direct writer = store: {name}, preserve {preserve}", got, want)
    direct.finish()
    api.close()
    marker = "koda-files.json"
    got, want = (direct_root / marker).read_bytes(), (api_root / marker).read_bytes()
    checks.same(f"direct writer = store: {marker}", got, want)
    shutil.rmtree(api_root)
    shutil.rmtree(direct_root)


def purge_floor(root: Path) -> float:
    """Seconds the bare system calls of purge take on `root`, as many threads as the store uses:
    for each log with a compaction line, read it, write what follows that line to a new file,
    fdatasync it and rename it over the log (`"flush"` mode's rewrite, without any Python of the
    store: no lock, no checks, no journal). Which logs, and where to cut, is found untimed."""
    from concurrent.futures import ThreadPoolExecutor

    from koda_files._format.classify import COMPACTION_MARK
    from koda_files._store.maintenance import _PURGE_THREADS

    cuts = []
    for directory in (root / "sessions").iterdir():
        data = (directory / "messages.jsonl").read_bytes()
        at = data.rfind(COMPACTION_MARK)
        if at >= 0:
            cuts.append((str(directory), data.rfind(b"\n", 0, at) + 1))

    def rewrite(item: tuple[str, int]) -> None:
        directory, cut = item
        fd = os.open(f"{directory}/messages.jsonl", os.O_RDONLY)
        try:
            data = os.read(fd, os.fstat(fd).st_size)
            out = os.open(f"{directory}/.floor.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(out, data[cut:])
                os.fdatasync(out)
            finally:
                os.close(out)
            os.rename(f"{directory}/.floor.tmp", f"{directory}/messages.jsonl")
        finally:
            os.close(fd)

    gc.collect()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=_PURGE_THREADS) as pool:
        list(pool.map(rewrite, cuts))
    return time.perf_counter() - t0


# ── the benchmark ───────────────────────────────────────────────────────────


class Bench:
    def __init__(self, tmp: Path, scale: float, repeat: int) -> None:
        self.tmp = tmp
        self.scale = scale
        self.repeat = repeat
        self.results: list[Result] = []
        self.extra: dict[str, Any] = {}
        self.checks = Checks()
        self._n = 0

    def n(self, base: int, minimum: int = 10) -> int:
        return max(minimum, round(base * self.scale))

    def fresh(self, label: str) -> Path:
        self._n += 1
        return self.tmp / f"{self._n:04d}-{label}"

    def add(self, r: Result) -> Result:
        self.results.append(r)
        fl = f"   floor {fmt_t(r.floor)} ({r.floor_what})" if r.floor is not None else ""
        print(
            f"  {r.name:<44} files {fmt_t(r.median('files')):>10}   sqlite {fmt_t(r.median('sqlite')):>10}"
            f"   x{r.ratio:6.2f}{fl}",
            flush=True,
        )
        return r

    # insert_message ----------------------------------------------------------

    def insert(self, durability: Durability) -> None:
        batch = self.n(200 if durability == "flush" else 40, 20)
        reps = self.repeat
        msgs = conversation(batch * reps + 10, seed=1 if durability == "flush" else 2)
        stores: dict[Kind, Store] = {}
        sids: dict[Kind, str] = {}
        locs: dict[Kind, Path] = {}
        for kind in KINDS:
            locs[kind] = self.fresh(f"insert-{durability}-{kind}")
            stores[kind] = open_store(kind, locs[kind], durability)
            sids[kind] = stores[kind].create_session("main", PROJECT)
            insert_all(stores[kind], sids[kind], msgs[:10])  # open descriptors, caches, WAL
        r = Result(f"insert_message ({durability} / {SYNC[durability]})")
        for rep in range(reps):
            chunk = msgs[10 + rep * batch : 10 + (rep + 1) * batch]
            for kind in order(rep):
                s, sid = stores[kind], sids[kind]
                r.samples(kind).append(timed(insert_all, s, sid, chunk, per=batch))
        self.checks.same(
            f"insert {durability}: load_all_messages",
            context_key(stores["files"].load_all_messages(sids["files"])),
            context_key(stores["sqlite"].load_all_messages(sids["sqlite"])),
        )
        for kind in KINDS:
            close_store(stores[kind])
        # floor: the very bytes the file store appended, os.write-n to an open file
        path = messages_file(locs["files"], sids["files"])
        if path.exists():
            raw = path.read_bytes().splitlines(keepends=True)[10:]
            target = self.fresh("floor-insert") / "raw.jsonl"
            target.parent.mkdir(parents=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                samples = []
                for rep in range(reps):
                    part = raw[rep * batch : (rep + 1) * batch]
                    t0 = time.perf_counter()
                    for line in part:
                        os.write(fd, line)
                        if durability == "fsync":
                            os.fdatasync(fd)
                    samples.append((time.perf_counter() - t0) / len(part))
                r.floor = statistics.median(samples)
                r.floor_what = "os.write" + (" + fdatasync" if durability == "fsync" else "")
            finally:
                os.close(fd)
        self.add(r)

    # one long session: load_context, last_*, usage, compaction ---------------

    def long_session(self, n: int | None = None, *, resume_only: bool = False) -> None:
        """The one-session workloads on `n` messages (default: 10,000 times the scale).

        `resume_only`: only what a resume waits for (cold and warm `load_context`, `last_*`).
        """
        n = self.n(10_000, 50) if n is None else n
        msgs = conversation(n + 200, seed=3)
        base: dict[Kind, Path] = {}
        sids: dict[Kind, str] = {}
        for kind in KINDS:
            base[kind] = self.fresh(f"long-{kind}")
            s = open_store(kind, base[kind])
            sids[kind] = s.create_session("main", PROJECT)
            insert_all(s, sids[kind], msgs[:n])
            close_store(s)
        reps = self.repeat

        # cold load_context: a new store object on the root, then one load_context
        r = Result(f"load_context {n} msgs, cold (new store)")
        out: dict[Kind, Any] = {}
        for rep in range(reps):
            for kind in order(rep):
                holder: list[Store] = []

                def cold(kind: Kind = kind, holder: list[Store] = holder) -> None:
                    s = open_store(kind, base[kind])
                    holder.append(s)
                    out[kind] = s.load_context(sids[kind])

                r.samples(kind).append(timed(cold))
                close_store(holder[0])
        self.checks.same("load_context", context_key(out["files"]), context_key(out["sqlite"]))
        path = messages_file(base["files"], sids["files"])
        if path.exists():

            def floor() -> None:
                with open(path, "rb") as f:
                    data = f.read()
                loads = orjson.loads
                [loads(line) for line in data.splitlines()]

            r.floor = statistics.median(timed(floor) for _ in range(reps))
            r.floor_what = "read + orjson.loads"
        self.add(r)

        # warm: the same object, one append (not timed) then load_context (timed)
        stores = {kind: open_store(kind, base[kind]) for kind in KINDS}
        for kind in KINDS:
            stores[kind].load_context(sids[kind])
        r = Result(f"load_context {n} msgs, warm (after 1 append)")
        extra = msgs[n:]
        for rep in range(max(reps, 10)):
            for kind in order(rep):
                role, content, tc, tcid, usage = extra[rep]
                s, sid = stores[kind], sids[kind]
                s.insert_message(sid, role, content, tc, tcid, usage)
                r.samples(kind).append(timed(call_set, out, kind, s.load_context, sid))
        self.checks.same("warm load_context", context_key(out["files"]), context_key(out["sqlite"]))
        one = orjson.dumps({"id": 1, "role": "user", "content": extra[0][1]})

        def parse_one(times: int = 1000) -> None:
            for _ in range(times):
                orjson.loads(one)

        r.floor = statistics.median(timed(parse_one, per=1000) for _ in range(reps))
        r.floor_what = "orjson.loads of 1 line"
        self.add(r)

        # last_user_message + has_pending_tool_calls, one unit, on the warm objects
        k = 200
        r = Result(f"last_user_message + has_pending_tool_calls ({n} msgs)")
        for rep in range(reps):
            for kind in order(rep):
                s, sid = stores[kind], sids[kind]

                def unit(s: Store = s, sid: str = sid) -> None:
                    for _ in range(k):
                        s.last_user_message(sid)
                        s.has_pending_tool_calls(sid)

                r.samples(kind).append(timed(unit, per=k))
        self.checks.same(
            "last_user_message",
            stores["files"].last_user_message(sids["files"]),
            stores["sqlite"].last_user_message(sids["sqlite"]),
        )
        self.checks.same(
            "has_pending_tool_calls",
            stores["files"].has_pending_tool_calls(sids["files"]),
            stores["sqlite"].has_pending_tool_calls(sids["sqlite"]),
        )
        self.add(r)
        if resume_only:
            for kind in KINDS:
                close_store(stores[kind])
            return

        k = 20
        r = Result("session_token_usage")
        for rep in range(reps):
            for kind in order(rep):
                s, sid = stores[kind], sids[kind]

                def usage_unit(s: Store = s, sid: str = sid) -> None:
                    for _ in range(k):
                        s.session_token_usage(sid)

                r.samples(kind).append(timed(usage_unit, per=k))
        self.checks.same(
            "session_token_usage",
            stores["files"].session_token_usage(sids["files"]),
            stores["sqlite"].session_token_usage(sids["sqlite"]),
        )
        self.add(r)
        for kind in KINDS:
            close_store(stores[kind])

        # compact_session(preserve 8) on a fresh copy of the session each time
        r = Result(f"compact_session {n} msgs (preserve 8)")
        answers: dict[Kind, list[Any]] = {"files": [], "sqlite": []}
        for rep in range(reps):
            for kind in order(rep):
                loc = self.fresh(f"compact-{kind}")
                copy_loc(base[kind], loc)
                s = open_store(kind, loc)
                sid = sids[kind]
                r.samples(kind).append(timed(call_into, answers[kind], s.compact_session, sid, SUMMARY, 8))
                if rep == 0:
                    answers[kind].append(context_key(s.load_context(sid), hint_free=True))
                    answers[kind].append(len(s.load_all_messages(sid)))
                close_store(s)
                shutil.rmtree(loc)
        self.checks.same("compact_session", answers["files"], answers["sqlite"])
        self.add(r)

        # The same, as koda's engine does it: on the live session, with the store that has just
        # served its load_context (the load is not timed).
        r = Result(f"compact_session {n} msgs, warm (after load_context)")
        warm_answers: dict[Kind, list[Any]] = {"files": [], "sqlite": []}
        for rep in range(reps):
            for kind in order(rep):
                loc = self.fresh(f"compact-warm-{kind}")
                copy_loc(base[kind], loc)
                s = open_store(kind, loc)
                sid = sids[kind]
                s.load_context(sid)
                r.samples(kind).append(timed(call_into, warm_answers[kind], s.compact_session, sid, SUMMARY, 8))
                close_store(s)
                shutil.rmtree(loc)
        self.checks.same("compact_session (warm)", warm_answers["files"], warm_answers["sqlite"])
        self.add(r)

    # a long archived history: cold load_context, compaction, the cost bars ----

    def history(self, archived: int, active: int, seed: int) -> tuple[dict[Kind, Path], dict[Kind, str]]:
        """Both stores holding one session compacted so that exactly `archived` messages are
        archived and `active` are active (summary and hint included), built fast: the files
        written directly (`DirectFiles`), SQLite's rows inserted in one transaction."""
        # The kept part is a conversation of its own, so no call group spans the cut.
        msgs = conversation(archived, seed) + conversation(active - 2, seed + 1)
        locs: dict[Kind, Path] = {}
        sids: dict[Kind, str] = {}
        for kind in KINDS:
            locs[kind] = self.fresh(f"history-{kind}")
        files = DirectFiles(locs["files"])
        sids["files"] = files.session(PROJECT, msgs, active - 2)
        files.finish()
        s = open_store("sqlite", locs["sqlite"])
        assert isinstance(s, SqliteStore)
        sids["sqlite"] = s.create_session("main", PROJECT)
        s._conn.execute("BEGIN")
        insert_all(s, sids["sqlite"], msgs)
        s._conn.execute("COMMIT")
        got = s.compact_session(sids["sqlite"], SUMMARY, active - 2)
        assert got == archived, (got, archived)
        close_store(s)
        return locs, sids

    def cold_load(self, name: str, locs: dict[Kind, Path], sids: dict[Kind, str]) -> Result:
        """`load_context` by a new store object on the root, both stores, cross-checked."""
        r = Result(name)
        out: dict[Kind, Any] = {}
        for rep in range(self.repeat):
            for kind in order(rep):
                holder: list[Store] = []

                def cold(kind: Kind = kind, holder: list[Store] = holder) -> None:
                    s = open_store(kind, locs[kind])
                    holder.append(s)
                    out[kind] = s.load_context(sids[kind])

                r.samples(kind).append(timed(cold))
                close_store(holder[0])
        self.checks.same(name, context_key(out["files"], True), context_key(out["sqlite"], True))
        return self.add(r)

    def cold_compact(
        self, name: str, locs: dict[Kind, Path], sids: dict[Kind, str], copy_alone: list[float] | None = None
    ) -> Result:
        """`compact_session(sid, SUMMARY, 8)` by a new store on a fresh copy of the root, both stores.

        The copy is synced before the timed call, so its write-back does not land in the
        compaction's fsync. `copy_alone`: also time the store's atomic rewrite copying the
        session's whole log unchanged (the byte copy a compaction does, alone), where it has one.
        """
        r = Result(name)
        answers: dict[Kind, list[Any]] = {"files": [], "sqlite": []}
        splice = getattr(importlib.import_module("koda_files._files.fileops"), "atomic_splice", None)
        for rep in range(self.repeat):
            for kind in order(rep):
                loc = self.fresh(f"compact-history-{kind}")
                copy_loc(locs[kind], loc)
                settle(loc)
                s = open_store(kind, loc)
                sid = sids[kind]
                r.samples(kind).append(timed(call_into, answers[kind], s.compact_session, sid, SUMMARY, 8))
                if rep == 0:
                    answers[kind].append(context_key(s.load_context(sid), hint_free=True))
                close_store(s)
                shutil.rmtree(loc)
            if copy_alone is not None and splice is not None:
                # As in a compaction, the new copy replaces an old file of the same size, which is
                # freed then: that is part of the copy's cost too.
                path = messages_file(locs["files"], sids["files"])
                scratch = path.parent / "copy-alone.jsonl"
                fd = os.open(path, os.O_RDONLY)
                try:
                    whole = [(fd, 0, os.fstat(fd).st_size)]
                    splice(scratch, whole)
                    copy_alone.append(timed(splice, scratch, whole))
                finally:
                    os.close(fd)
                    scratch.unlink()
        self.checks.same(name, answers["files"], answers["sqlite"])
        return self.add(r)

    def long_history(self) -> None:
        """The workloads on a compacted session with a long archived history."""
        archived = self.n(2_000, 100)
        locs, sids = self.history(archived, 210, seed=7)
        label = f"{archived} archived + 210 active"
        self.cold_load(f"load_context {label}, cold (new store)", locs, sids)
        self.cold_compact(f"compact_session {label} (preserve 8), cold store", locs, sids)
        for loc in locs.values():
            shutil.rmtree(loc)

    def cost_bars(self) -> None:
        """Compaction and cold load of 100,000 archived + 200 active against a session without history."""
        archived = self.n(100_000, 1000)
        big, big_sids = self.history(archived, 200, seed=8)
        small: dict[Kind, Path] = {}
        small_sids: dict[tuple[Kind, int], str] = {}
        for kind in KINDS:
            small[kind] = self.fresh(f"bars-small-{kind}")
            s = open_store(kind, small[kind])
            for n in (200, 210):
                small_sids[kind, n] = s.create_session("main", PROJECT)
                insert_all(s, small_sids[kind, n], conversation(n, seed=10))
            # A first compaction in a root raises its layout marker, once: done here, as in `big`.
            other = s.create_session("main", PROJECT)
            insert_all(s, other, conversation(20, seed=11))
            s.compact_session(other, SUMMARY, 8)
            close_store(s)
        label = f"{archived} archived + 200 active"
        load_big = self.cold_load(f"load_context {label}, cold (new store)", big, big_sids)
        load_small = self.cold_load(
            "load_context 210 msgs, cold (new store)", small, {k: small_sids[k, 210] for k in KINDS}
        )
        copies: list[float] = []
        compact_big = self.cold_compact(f"compact_session {label} (preserve 8), cold store", big, big_sids, copies)
        compact_small = self.cold_compact(
            "compact_session 200 msgs (preserve 8), cold store", small, {k: small_sids[k, 200] for k in KINDS}
        )
        size = messages_file(big["files"], big_sids["files"]).stat().st_size
        info: dict[str, Any] = {"archived": archived, "log_bytes": size}
        print(f"\n  cost bars: {label} ({size / 2**20:.1f} MB log) against a session without history")
        for kind in KINDS:
            c_big, c_small = compact_big.median(kind), compact_small.median(kind)
            l_big, l_small = load_big.median(kind), load_small.median(kind)
            line = (
                f"    {kind:<6} compact {fmt_t(c_small):>9} -> {fmt_t(c_big):>9} x{c_big / c_small:5.2f}"
                f"   cold load_context {fmt_t(l_small):>9} -> {fmt_t(l_big):>9} x{l_big / l_small:5.2f}"
            )
            entry: dict[str, Any] = {
                "compact_small_s": c_small, "compact_big_s": c_big, "compact_big_over_small": c_big / c_small,
                "load_small_s": l_small, "load_big_s": l_big, "load_big_over_small": l_big / l_small,
            }
            if kind == "files" and copies:
                copy = statistics.median(copies)
                # paired: each compaction less the copy timed right after it, on the same file
                without = statistics.median(c - k for c, k in zip(compact_big.files, copies, strict=True)) / c_small
                line += (
                    f"\n           byte copy alone (atomic rewrite of the whole log over an old one) {fmt_t(copy)},"
                    f" {copy / c_big:.0%} of the compaction; without it x{without:5.2f}"
                )
                entry.update(copy_alone_s=copy, copy_share=copy / c_big, compact_without_copy_over_small=without)
            print(line, flush=True)
            info[kind] = entry
        print("    bars (files): compaction without the copy, and cold load_context, within 2x")
        self.extra["cost_bars"] = info
        for loc in (*big.values(), *small.values()):
            shutil.rmtree(loc)

    # many sessions: list, recent, stats, purge --------------------------------

    def same_as_store(self) -> None:
        tmp = self.fresh("direct-check")
        tmp.mkdir()
        same_as_store(tmp, self.checks)

    def many_sessions(self, count: int) -> None:
        per = 20
        base: dict[Kind, Path] = {}
        stores: dict[Kind, Store] = {}
        for kind in KINDS:
            base[kind] = self.fresh(f"many-{kind}")
            stores[kind] = open_store(kind, base[kind])
        # Build both stores in the same global order (recent_user_messages spans sessions): SQLite
        # through its API, the files written directly with the store's own encoders (the API's
        # fsync per created session would make 10,000 sessions take minutes); see DirectFiles.
        files = DirectFiles(base["files"])
        for i in range(count):
            project = OTHER_PROJECT if i % 10 == 9 else PROJECT
            msgs = conversation(per, seed=4 + i)
            sid = stores["sqlite"].create_session("main", project)
            insert_all(stores["sqlite"], sid, msgs)
            if i % 3 == 0:
                stores["sqlite"].compact_session(sid, SUMMARY, 8)
            files.session(project, msgs, 8 if i % 3 == 0 else None)
        files.finish()
        for kind in KINDS:
            close_store(stores[kind])
        reps = self.repeat
        label = f"{count} sessions x {per}"

        def cold_call(name: str, call: Callable[[Store], Any], key: Callable[[Any], Any]) -> None:
            r = Result(f"{name}, cold ({label})")
            out: dict[Kind, Any] = {}
            for rep in range(reps):
                for kind in order(rep):
                    holder: list[Store] = []

                    def run(kind: Kind = kind, holder: list[Store] = holder) -> None:
                        s = open_store(kind, base[kind])
                        holder.append(s)
                        out[kind] = call(s)

                    r.samples(kind).append(timed(run))
                    close_store(holder[0])
            self.checks.same(name, key(out["files"]), key(out["sqlite"]))
            self.add(r)

        cold_call(
            "list_sessions(20, root)",
            lambda s: s.list_sessions(20, PROJECT),
            lambda v: [(i.message_count, i.total_tokens, i.agent_name) for i in v],
        )
        cold_call("recent_user_messages(10)", lambda s: s.recent_user_messages(10), lambda v: v)
        cold_call(
            "compacted_stats()",
            lambda s: s.compacted_stats(),
            lambda v: (v.message_count, v.session_count, v.size_bytes),
        )

        r = Result(f"purge_compacted(0) ({label})")
        answers: dict[Kind, list[Any]] = {"files": [], "sqlite": []}
        floors: list[float] = []
        for rep in range(reps if count <= 1000 else min(reps, 3)):  # a copy of 10,000 sessions each
            loc = self.fresh("purge-floor")
            copy_loc(base["files"], loc)
            os.sync()
            floors.append(purge_floor(loc))
            shutil.rmtree(loc)
            for kind in order(rep):
                loc = self.fresh(f"purge-{kind}")
                copy_loc(base[kind], loc)
                os.sync()  # the copy's write-back is not purge's: it would be synced with purge's own
                s = open_store(kind, loc)
                r.samples(kind).append(timed(call_into, answers[kind], s.purge_compacted, 0))
                if rep == 0:
                    answers[kind].append(
                        [(i.message_count, i.total_tokens) for i in s.list_sessions(count, PROJECT)]
                    )
                close_store(s)
                shutil.rmtree(loc)
        self.checks.same("purge_compacted", answers["files"], answers["sqlite"])
        r.floor, r.floor_what = statistics.median(floors), "the same rewrites as bare system calls"
        self.add(r)
        self.whole_store_memory(base, count)
        mine = self.results[-4:]
        ratios = [r.ratio for r in mine]
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"    geometric mean of the whole-store ratios at {count} sessions: {geo:.2f}", flush=True)
        self.extra.setdefault("whole_store_geomean", {})[str(count)] = geo

    def whole_store_memory(self, base: dict[Kind, Path], count: int) -> None:
        """Peak RSS above baseline of each whole-store query, each in a new child process.

        "cold": the files' derived `.summary` and `.index` removed first, so the call builds
        them from every session (for SQLite: a new connection); "later": the next call, on
        what the cold one left. Purge runs on copies (with and without those files).
        """
        derived = (".summary", ".index")
        info: dict[str, Any] = {}
        print(f"    peak RSS above baseline, {count} sessions (cold: summary and index built; later: next call)")
        queries = (
            ("list", "list_sessions(20, root)"),
            ("recent", "recent_user_messages(10)"),
            ("stats", "compacted_stats()"),
            ("purge", "purge_compacted(0)"),
        )
        for op, name in queries:
            row: dict[str, Any] = {}
            for kind in KINDS:
                for when in ("cold", "later"):
                    loc = base[kind]
                    if op == "purge":
                        loc = self.fresh(f"purge-rss-{kind}")
                        copy_loc(base[kind], loc)
                    if when == "cold" and kind == "files":
                        for d in derived:
                            (loc / d).unlink(missing_ok=True)
                    got = child_rss(kind, op, loc, "")
                    row[f"{kind} {when}"] = {"peak_bytes": got["peak"], "seconds": got["seconds"]}
                    if op == "purge":
                        shutil.rmtree(loc)
            info[name] = row
            cells = "   ".join(f"{k} +{v['peak_bytes'] / 2**20:5.1f} MB" for k, v in row.items())
            print(f"      {name:<26} {cells}", flush=True)
        self.extra.setdefault("whole_store_memory", {})[str(count)] = info

    # the command line: `koda-files --help` must start in under 150 ms ---------

    def cli_startup(self) -> None:
        # Bytecode caching on, as on a user's machine (the first run writes the cache).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cli = [sys.executable, "-m", "koda_files", "--help"]
        bare = [sys.executable, "-c", "pass"]
        subprocess.run(cli, env=env, stdout=subprocess.DEVNULL, check=True)
        runs: dict[str, list[float]] = {"cli": [], "bare": []}
        for _ in range(max(self.repeat, 15)):
            for key, cmd in (("cli", cli), ("bare", bare)):
                start = time.perf_counter()
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
                runs[key].append(time.perf_counter() - start)
        info = {key: statistics.median(v) for key, v in runs.items()}
        print(
            f"\n  start-up: koda-files --help {fmt_t(info['cli'])} (target < 150 ms); "
            f"python -c pass {fmt_t(info['bare'])}",
            flush=True,
        )
        self.extra["cli_startup"] = info

    # tail: cost of the last_* queries must not depend on session length -----

    def tail(self) -> None:
        short_n, long_n = 10, self.n(100_000, 100)
        msgs = conversation(long_n, seed=5)
        locs: dict[Kind, Path] = {}
        sids: dict[tuple[Kind, int], str] = {}
        for kind in KINDS:
            locs[kind] = self.fresh(f"tail-{kind}")
            s = open_store(kind, locs[kind])
            for n in (short_n, long_n):
                sids[kind, n] = s.create_session("main", PROJECT)
                insert_all(s, sids[kind, n], msgs[:n])
            close_store(s)
        reps = max(self.repeat, 9)
        k = 200
        cold: dict[tuple[Kind, int], list[float]] = {}
        warm: dict[tuple[Kind, int], list[float]] = {}
        for kind in KINDS:
            for n in (short_n, long_n):
                cold[kind, n] = []
                warm[kind, n] = []
        for rep in range(reps):
            for kind in order(rep):
                for n in (short_n, long_n) if rep % 2 == 0 else (long_n, short_n):
                    sid = sids[kind, n]
                    s = open_store(kind, locs[kind])

                    def unit(s: Store = s, sid: str = sid) -> None:
                        s.last_user_message(sid)
                        s.has_pending_tool_calls(sid)

                    cold[kind, n].append(timed(unit))

                    def many(s: Store = s, sid: str = sid) -> None:
                        for _ in range(k):
                            s.last_user_message(sid)
                            s.has_pending_tool_calls(sid)

                    warm[kind, n].append(timed(many, per=k))
                    close_store(s)
        print(f"\n  tail check: last_user_message + has_pending_tool_calls, {short_n} vs {long_n} messages")
        info: dict[str, Any] = {"short_messages": short_n, "long_messages": long_n}
        for kind in KINDS:
            for mode, data in (("first call on a new store", cold), ("repeated, same store", warm)):
                a = statistics.median(data[kind, short_n])
                b = statistics.median(data[kind, long_n])
                print(
                    f"    {kind:<6} {mode:<26} {fmt_t(a):>10} -> {fmt_t(b):>10}   long/short x{b / a:5.2f}"
                )
                info[f"{kind} {mode}"] = {"short_s": a, "long_s": b, "long_over_short": b / a}
        self.extra["tail"] = info

    # --big: peak RSS of compaction and purge, in child processes ------------

    def big(self) -> None:
        target = 200 * 1024 * 1024 * self.scale
        size = 4000
        n = max(100, int(target / (size + 200)))
        print(f"\n  peak RSS above baseline, {n} messages of ~{size} bytes (~{target / 2**20:.0f} MB)")
        msgs = conversation(n, seed=6, size=size)
        base: dict[Kind, Path] = {}
        sids: dict[Kind, str] = {}
        for kind in KINDS:
            base[kind] = self.fresh(f"big-{kind}")
            s = open_store(kind, base[kind])
            sids[kind] = s.create_session("main", PROJECT)
            insert_all(s, sids[kind], msgs)
            close_store(s)
        del msgs
        info: dict[str, Any] = {"messages": n, "bytes": {}}
        for kind in KINDS:
            info["bytes"][kind] = sum(p.stat().st_size for p in base[kind].rglob("*") if p.is_file())
            loc = self.fresh(f"big-compact-{kind}")
            copy_loc(base[kind], loc)
            peak = child_rss(kind, "compact", loc, sids[kind])
            # purge: compact in one child (not measured), purge in another (measured)
            child_rss(kind, "compact", loc, sids[kind])
            peak_p = child_rss(kind, "purge", loc, sids[kind])
            shutil.rmtree(loc)
            info[kind] = {"compact_peak_bytes": peak["peak"], "purge_peak_bytes": peak_p["peak"]}
            print(
                f"    {kind:<6} store {info['bytes'][kind] / 2**20:7.1f} MB   compact_session "
                f"+{peak['peak'] / 2**20:6.1f} MB ({fmt_t(peak['seconds'])})   purge_compacted "
                f"+{peak_p['peak'] / 2**20:6.1f} MB ({fmt_t(peak_p['seconds'])})   [{peak['method']}]",
                flush=True,
            )
        self.extra["big"] = info


def child_rss(kind: Kind, op: str, loc: Path, sid: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-rss", kind, op, str(loc), sid],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


# What a child process can measure; each answer is something JSON can carry.
CHILD_OPS: dict[str, Callable[[Store, str], Any]] = {
    "compact": lambda s, sid: s.compact_session(sid, SUMMARY, 8),
    "purge": lambda s, sid: s.purge_compacted(0),
    "list": lambda s, sid: [i.id for i in s.list_sessions(20, PROJECT)],
    "recent": lambda s, sid: s.recent_user_messages(10),
    "stats": lambda s, sid: list(dataclasses.astuple(s.compacted_stats())),
}


def child_main(kind: Kind, op: str, loc: str, sid: str) -> None:
    """In a child process: run one operation and report its peak RSS above the baseline."""
    s = open_store(kind, Path(loc))
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        method = "VmHWM after clear_refs"
        baseline = _status_kb("VmHWM") * 1024
    except OSError:
        method = "ru_maxrss - VmRSS before"
        baseline = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    answer = CHILD_OPS[op](s, sid)
    seconds = time.perf_counter() - t0
    if method.startswith("VmHWM"):
        peak = _status_kb("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    close_store(s)
    report = {"peak": max(0, peak - baseline), "seconds": seconds, "answer": answer, "method": method}
    print(json.dumps(report))


# ── main ────────────────────────────────────────────────────────────────────


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import sqlite3

    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "orjson": orjson.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-rss"]:
        kind, op, loc, sid = argv[1:5]
        child_main("files" if kind == "files" else "sqlite", op, loc, sid)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="multiply data sizes by F (default 1.0)")
    p.add_argument("--repeat", type=int, default=7, help="repetitions per workload (default 7)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    p.add_argument("--big", action="store_true", help="also measure peak RSS on a ~200 MB session")
    p.add_argument("--tmp", metavar="DIR", help="create the scratch directory under DIR")
    p.add_argument(
        "--sessions",
        type=int,
        nargs="+",
        metavar="N",
        help="run only the whole-store workloads, at N sessions each (default: the whole run, at 100, 1000, 10000)",
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="run only the long-history workloads and the cost bars (with --sessions: those too)",
    )
    p.add_argument(
        "--messages",
        type=int,
        nargs="+",
        metavar="N",
        help="run only the resume workloads (load_context cold and warm, last_user + has_pending) "
        "on one session of N messages each",
    )
    args = p.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        p.error("--scale must be > 0 and --repeat >= 1")

    info = machine()
    print(
        f"koda_files benchmark: scale {args.scale}, {args.repeat} repetitions, Python {info['python']}, "
        f"SQLite {info['sqlite']}, {info['cpus']} CPUs ({info['cpu']})"
    )
    load = info["loadavg_at_start"][0]
    if load > 0.5:
        print(f"  note: load average {load:.2f} at start; other processes will add noise")
    print("  ratio = SQLite time / file time (above 1: the files are faster)\n", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="koda-bench-", dir=args.tmp) as tmp:
        b = Bench(Path(tmp), args.scale, args.repeat)
        if args.sessions or args.messages or args.history:
            if args.history:
                b.same_as_store()
                b.long_history()
                b.cost_bars()
            for count in args.sessions or ():
                b.many_sessions(count)
            for count in args.messages or ():
                b.long_session(count, resume_only=True)
        else:
            b.same_as_store()
            b.insert("flush")
            b.insert("fsync")
            b.long_session()
            b.long_history()
            b.cost_bars()
            for count in (100, 1000, 10000):
                b.many_sessions(b.n(count, 30))
            b.tail()
            if args.big:
                b.big()
            b.cli_startup()
    ratios = [r.ratio for r in b.results if r.in_geomean]
    geomean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    elapsed = time.perf_counter() - started
    # Slowest over fastest sample per workload and store; the files' first two runs of a cold
    # whole-store query build the summary (and see sessions written 2 s before): left out.
    spread = {
        r.name: max(max(v) / min(v) for v in (_steady(r), r.sqlite)) for r in b.results
    }

    print()
    w = max(len(r.name) for r in b.results)
    print(f"| {'workload':<{w}} | {'files':>10} | {'sqlite':>10} | {'sqlite/files':>12} | floor |")
    print(f"|{'-' * (w + 2)}|{'-' * 12}:|{'-' * 12}:|{'-' * 14}:|-------|")
    for r in b.results:
        fl = f"{fmt_t(r.floor)} ({r.floor_what})" if r.floor is not None else ""
        print(
            f"| {r.name:<{w}} | {fmt_t(r.median('files')):>10} | {fmt_t(r.median('sqlite')):>10} "
            f"| {r.ratio:>12.2f} | {fl} |"
        )
    print(f"\ngeometric mean of the ratios: {geomean:.2f}   ({len(ratios)} workloads, {elapsed:.0f} s total)")
    for count, geo in b.extra.get("whole_store_geomean", {}).items():
        print(f"  whole-store workloads at {count} sessions: geometric mean {geo:.2f}")
    print(
        f"noise: load average {info['loadavg_at_start'][0]:.2f} at start, {os.getloadavg()[0]:.2f} at the end; "
        f"slowest/fastest sample of one workload and store: median {statistics.median(spread.values()):.1f}x, "
        f"up to {max(spread.values()):.1f}x ({max(spread, key=lambda k: spread[k])})"
    )
    if b.checks.mismatches:
        print(f"WARNING: {len(b.checks.mismatches)} answers differ between the stores (see above)")
    else:
        print("both stores gave the same answers on every workload (cross-checked)")

    if args.json:
        doc = {
            "machine": info,
            "scale": args.scale,
            "repeat": args.repeat,
            "seconds_total": elapsed,
            "workloads": {r.name: r.as_json() for r in b.results},
            "geomean_ratio": geomean,
            "spread_max_over_min": spread,
            "loadavg_at_end": list(os.getloadavg()),
            "mismatches": b.checks.mismatches,
            **b.extra,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
