"""`koda-files search PATTERN`: full-text search over every session, printed as the hits come.

Hits stream out newest session first (by last activity), each session's last message first.
Progress shows on stderr (a terminal) until the first hit; then the pager, if any, takes over.
`--json` prints one JSON array, written element by element so a large answer streams too.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from ._common import open_store, style_for_stdout

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["cmd_search", "since_time"]

_AGO = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_time(text: str, now: datetime | None = None) -> str:
    """`7d`, `12h`, `30m`, `2w` ago as ISO 8601 UTC; any other text is passed on as a date."""
    from datetime import datetime, timedelta, timezone

    m = _AGO.fullmatch(text.strip())
    if m is None:
        return text
    moment = (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _spans(line: str, pattern: str, regex: bool) -> list[tuple[int, int]]:
    if regex:
        return [m.span() for m in re.finditer(pattern, line) if m.end() > m.start()]
    out, at = [], line.find(pattern)
    while at >= 0:
        out.append((at, at + len(pattern)))
        at = line.find(pattern, at + len(pattern))
    return out


def shown_line(line: str, pattern: str, regex: bool, width: int, style: Any) -> str:
    """The line cut to `width` around its first match, matches highlighted, control characters escaped."""
    from ._render import visible

    spans = _spans(line, pattern, regex)
    lo, hi = 0, len(line)
    if len(line) > width:
        first = spans[0][0] if spans else 0
        lo = max(0, min(first - width // 3, len(line) - width))
        hi = lo + width
    pieces, at = [], lo
    for start, end in spans:
        start, end = max(start, lo), min(end, hi)
        if start >= end or start < at:
            continue
        pieces += [visible(line[at:start]), style(visible(line[start:end]), "bold", "red")]
        at = end
    pieces.append(visible(line[at:hi]))
    return ("…" if lo else "") + "".join(pieces) + ("…" if hi < len(line) else "")


def cmd_search(args: argparse.Namespace) -> int:
    import json
    import shutil

    from ..types import Role
    from ._pager import paged
    from ._render import ROLE_STYLE, Progress, short_time

    store = open_store(args)
    progress = Progress("searching sessions")
    hits = store.search(
        args.pattern, regex=args.regex, tools=args.tools or "tool" in (args.role or ()), archived=args.all,
        roles=frozenset(args.role) if args.role else None, project_root=args.project,
        since=since_time(args.since) if args.since else None, progress=progress,
    )
    limit = args.limit or sys.maxsize
    count = 0

    def quiet_progress() -> None:
        progress.done()
        progress.enabled = False

    with paged(args, quiet_progress):
        out = sys.stdout
        style = style_for_stdout()
        # On a terminal a line is cut around its match; a pipe gets it whole.
        width = max(20, shutil.get_terminal_size().columns - 4) if out.isatty() else sys.maxsize
        if args.json:
            out.write("[")
        for hit in hits:
            if count >= limit:
                break
            quiet_progress()
            if args.json:
                out.write(("," if count else "") + "\n  " + json.dumps(_as_json(hit), ensure_ascii=False))
            else:
                where = "tool call" if hit.field == "tool_calls" else hit.role
                head = style(hit.session_id, "magenta") + style(f"  #{hit.message_id}  ", "dim")
                head += style(where, ROLE_STYLE[Role(hit.role)]) + style(f"  {short_time(hit.created_at)}", "dim")
                if hit.archived:
                    head += style("  archived", "dim")
                out.write(head + "\n")
                for line in hit.lines:
                    out.write("  " + shown_line(line, args.pattern, args.regex, width, style) + "\n")
            count += 1
        quiet_progress()
        if args.json:
            out.write("\n]\n" if count else "]\n")
    if not count and not args.json:
        print("no matches", file=sys.stderr)
    return 0 if count else 1


def _as_json(hit: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(hit)
    data["lines"] = list(hit.lines)
    return data
