"""The `koda-files` commands that work on the whole store: purge, check, import-sqlite, export-sqlite.

They share the helpers of `_common` (the store from `--root`, confirmation, JSON and colour) and
show progress on stderr when it is a terminal. sqlite3 is imported only when a command needs it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import PROG, confirm, open_store, print_json, style_for_stdout

__all__ = ["cmd_check", "cmd_export", "cmd_import", "cmd_purge"]

_STRAY = "not-a-session"  # the `Problem.kind` of an entry under sessions/ that is not a session


def cmd_purge(args: argparse.Namespace) -> int:
    from ._render import format_bytes, plural

    store = open_store(args)
    preview = store.purge_preview(args.older_than)
    count, size, sessions = preview.message_count, preview.size_bytes, list(preview.session_ids)
    summary = f"{plural(count, 'archived message')} ({format_bytes(size)}) in {plural(len(sessions), 'session')}"
    data: dict[str, Any] = {
        "older_than_days": args.older_than,
        "messages": count,
        "bytes": size,
        "sessions": sessions,
        "dry_run": args.dry_run,
        "deleted": None,
    }
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
    # Entries under sessions/ that are not sessions are listed, but every command ignores them
    # and --repair leaves them (they are not the store's to remove): they do not fail the check.
    ok = all(p.repaired or p.kind == _STRAY for p in report.problems)
    if args.json:
        print_json({"sessions": report.sessions, "ok": ok, "problems": [asdict(p) for p in report.problems]})
    else:
        style = style_for_stdout()
        for p in report.problems:
            where = f"{p.path}:{p.line}" if p.line is not None else p.path
            if p.repaired:
                mark = style("repaired", "green")
            else:
                mark = style("ignored", "dim") if p.kind == _STRAY else style("problem", "red")
            print(f"{mark}  {p.kind:<13} {where}" + (f"  {p.detail}" if p.detail else ""))
        verdict = style("ok", "green") if ok else style("problems found", "red")
        print(f"checked {plural(report.sessions, 'session')}: {verdict}")
    return 0 if ok else 1


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
        print_json({
            "db": r.db_path,
            "imported": list(r.imported),
            "replaced": list(r.replaced),
            "skipped": list(r.skipped),
            "renumbered": list(r.renumbered),
            "failed": _failed_json(r.failed),
            "messages": r.messages,
            "metadata": r.metadata,
            "todos": r.todos,
        })
    else:
        counts = f"{plural(r.messages, 'message')}, {plural(r.todos, 'todo')}, {plural(r.metadata, 'metadata key')}"
        print(f"imported {plural(len(r.imported), 'session')} ({counts}) from {r.db_path}")
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
        print_json({
            "db": r.db_path,
            "sessions": r.sessions,
            "messages": r.messages,
            "metadata": r.metadata,
            "todos": r.todos,
            "failed": _failed_json(r.failed),
        })
    else:
        counts = f"{plural(r.messages, 'message')}, {plural(r.todos, 'todo')}, {plural(r.metadata, 'metadata key')}"
        print(f"exported {plural(r.sessions, 'session')} ({counts}) to {r.db_path}")
    # A session the store cannot read (no readable metadata.json) is left out, as every listing
    # leaves it out: named here, and reported by `check`, but the export of the rest succeeded.
    for sid, why in r.failed:
        print(f"{PROG}: not exported: {sid}: {why} (see '{PROG} check')", file=sys.stderr)
    return 0


def _failed_json(failed: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"session_id": sid, "reason": why} for sid, why in failed]
