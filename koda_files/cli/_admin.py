"""The `koda-files` commands that work on the whole store: purge, check, import-sqlite, export-sqlite.

They share the helpers of `cli` (the store from `--root`, confirmation, JSON and colour) and show
progress on stderr when it is a terminal. sqlite3 is imported only when a command needs it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._main import PROG, confirm, open_store, print_json, session_dirs, style_for_stdout

__all__ = ["cmd_check", "cmd_export", "cmd_import", "cmd_purge"]


def cmd_purge(args: argparse.Namespace) -> int:
    from datetime import datetime, timedelta, timezone

    from .._layout import parse_time
    from ._render import Progress, format_bytes, plural

    store = open_store(args)
    cutoff = datetime.now(timezone.utc) - timedelta(days=args.older_than)
    ids = session_dirs(store)
    count = size = 0
    sessions: list[str] = []
    progress = Progress("scanning")
    for done, sid in enumerate(ids, 1):
        hit = 0
        for m in store.load_all_messages(sid):
            if m.compacted_at is None:
                continue
            when = parse_time(m.compacted_at)
            if args.older_than == 0 or (when is not None and when <= cutoff):
                hit += 1
                size += len((m.content or "").encode()) + len((m.tool_calls or "").encode())
        if hit:
            count += hit
            sessions.append(sid)
        progress(done, len(ids))
    progress.done()
    summary = f"{plural(count, 'archived message')} ({format_bytes(size)}) in {plural(len(sessions), 'session')}"
    data: dict[str, Any] = {"older_than_days": args.older_than, "messages": count, "bytes": size,
                            "sessions": sessions, "dry_run": args.dry_run, "deleted": None}  # fmt: skip
    if args.dry_run or count == 0:
        if args.json:
            print_json(data)
        else:
            print(f"would delete {summary}" if count else "nothing to purge")
        return 0
    if not args.json:
        print(f"to delete: {summary}")
    if not confirm(f"delete {plural(count, 'archived message')} for good?", args.yes):
        print("nothing deleted", file=sys.stderr)
        return 1
    data["deleted"] = store.purge_compacted(args.older_than)
    if args.json:
        print_json(data)
    else:
        print(f"deleted {plural(data['deleted'], 'archived message')}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ._render import Progress, plural

    store = open_store(args)
    progress = Progress("checking")
    progress.note(f"checking {store.root} …")
    try:
        if args.reindex:
            store.reindex()
        report = store.check(repair=args.repair)
    finally:
        progress.done()
    if args.json:
        print_json({"sessions": report.sessions, "ok": report.ok, "problems": [asdict(p) for p in report.problems]})
    else:
        style = style_for_stdout()
        for p in report.problems:
            where = f"{p.path}:{p.line}" if p.line is not None else p.path
            mark = style("repaired", "green") if p.repaired else style("problem", "red")
            print(f"{mark}  {p.kind:<13} {where}" + (f"  {p.detail}" if p.detail else ""))
        verdict = style("ok", "green") if report.ok else style("problems found", "red")
        print(f"checked {plural(report.sessions, 'session')}: {verdict}")
    return 0 if report.ok else 1


def cmd_import(args: argparse.Namespace) -> int:
    from ..kodadb import default_koda_db, import_sqlite
    from ._render import Progress, plural

    store = open_store(args, existing=False)  # importing into a new directory makes the store
    db = args.db or str(default_koda_db())
    progress = Progress("importing sessions")
    try:
        r = import_sqlite(db, store, replace=args.replace, progress=progress)
    finally:
        progress.done()
    if args.json:
        print_json({"db": r.db_path, "imported": list(r.imported), "replaced": list(r.replaced),
               "skipped": list(r.skipped), "renumbered": list(r.renumbered),
               "failed": [{"session_id": s, "reason": why} for s, why in r.failed],
               "messages": r.messages, "metadata": r.metadata, "todos": r.todos})  # fmt: skip
    else:
        print(f"imported {plural(len(r.imported), 'session')} ({plural(r.messages, 'message')}, "
              f"{plural(r.todos, 'todo')}, {plural(r.metadata, 'metadata key')}) from {r.db_path}")  # fmt: skip
        if r.replaced:
            print(f"replaced {plural(len(r.replaced), 'session')} already present")
        if r.skipped:
            print(f"skipped {plural(len(r.skipped), 'session')} already present (--replace overwrites them)")
        for sid in r.renumbered:
            print(f"renumbered {sid}: its koda message ids were already used in this store")
        for sid, why in r.failed:
            print(f"{PROG}: not imported: {sid}: {why}", file=sys.stderr)
    return 0 if r.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from ..kodadb import export_sqlite
    from ._render import Progress, plural

    store = open_store(args)
    progress = Progress("exporting sessions")
    try:
        r = export_sqlite(store, args.out, progress=progress)
    finally:
        progress.done()
    if args.json:
        print_json({"db": r.db_path, "sessions": r.sessions, "messages": r.messages, "metadata": r.metadata,
               "todos": r.todos, "failed": [{"session_id": s, "reason": why} for s, why in r.failed]})  # fmt: skip
    else:
        print(f"exported {plural(r.sessions, 'session')} ({plural(r.messages, 'message')}, {plural(r.todos, 'todo')}, "
              f"{plural(r.metadata, 'metadata key')}) to {r.db_path}")  # fmt: skip
        for sid, why in r.failed:
            print(f"{PROG}: not exported: {sid}: {why}", file=sys.stderr)
    return 0 if not r.failed else 1
