"""Human-readable output of the `koda-files` command: tables, conversations, colour and progress.

Colour is used only when the stream is a terminal and `NO_COLOR` is not set; progress goes to
stderr only when stderr is a terminal. `--json` output goes through `dump_json`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..types import Message, Role

__all__ = [
    "Progress",
    "Style",
    "dump_json",
    "first_line",
    "format_bytes",
    "plural",
    "render_messages",
    "render_table",
    "short_time",
]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TOOL_LINES = 6


def wants_colour(stream: TextIO, when: str = "auto") -> bool:
    """`always`/`never` as told; `auto`: only on a terminal, never when NO_COLOR is set (non-empty)."""
    if when != "auto":
        return when == "always"
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


class Style:
    """ANSI styling that is a no-op when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


ROLE_STYLE = {
    Role.SYSTEM: "magenta",
    Role.USER: "green",
    Role.ASSISTANT: "cyan",
    Role.TOOL: "yellow",
}


def dump_json(value: Any, out: TextIO) -> None:
    import orjson

    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def visible(text: str) -> str:
    """Control characters (other than newline and tab) shown as escapes, never sent to a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def first_line(text: str | None, width: int = 0) -> str:
    line = visible((text or "").strip().split("\n", 1)[0])
    if width and len(line) > width:
        line = line[: max(width - 1, 0)] + "…"
    return line


def short_time(stamp: str | None) -> str:
    """`2026-11-27T11:09:22.123456Z` as `2026-11-27 11:09`."""
    if not stamp:
        return ""
    return stamp[:16].replace("T", " ")


def plural(n: int, word: str, many: str = "") -> str:
    """`1 session`, `2 sessions`; `many` for words that do not just take an s."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, style: Style, numeric: set[int]
) -> None:
    """Aligned columns; on a terminal the last column is cut to its width (a pipe gets it whole)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if out.isatty():
        total = shutil.get_terminal_size((120, 24)).columns
        used = sum(widths[:-1]) + 2 * (len(headers) - 1)
        widths[-1] = max(10, min(widths[-1], total - used))

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i in numeric:
                parts.append(cell.rjust(widths[i]))
            elif i == len(cells) - 1:
                parts.append(cell if len(cell) <= widths[i] else cell[: widths[i] - 1] + "…")
            else:
                parts.append(cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    out.write(style(line(headers), "bold") + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def _tool_calls(raw: str) -> list[str]:
    """`name(arg=value, ...)  [call id]` per call; the raw string when it is not koda's JSON."""
    import json

    try:
        calls = json.loads(raw)
    except ValueError:
        return [first_line(raw, 120)]
    if not isinstance(calls, list):
        return [first_line(raw, 120)]
    out = []
    for call in calls:
        if not isinstance(call, dict):
            out.append(first_line(json.dumps(call), 120))
            continue
        raw_fn = call.get("function")
        fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
        name = str(fn.get("name") or call.get("name") or "?")
        args = fn.get("arguments", "")
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            parsed = args
        if isinstance(parsed, dict):
            shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in parsed.items())
        else:
            shown = str(parsed)
        text = first_line(f"{name}({shown})", 110)
        out.append(f"{text}  [{call.get('id', '')}]")
    return out


def _is_hint(m: Message) -> bool:
    return m.role is Role.ASSISTANT and m.tool_calls is None and "compacted" in (m.content or "").lower()


def compaction_labels(messages: Sequence[Message]) -> list[str | None]:
    """Per message: "summary" for an active compaction summary, "note" for the hint after one, else None."""
    labels: list[str | None] = [None] * len(messages)
    for i, m in enumerate(messages):
        after = messages[i + 1] if i + 1 < len(messages) else None
        if m.role is Role.SYSTEM and after is not None and _is_hint(after) and after.compacted_at is None:
            labels[i] = "summary"
        elif _is_hint(m) and i > 0 and messages[i - 1].role is Role.SYSTEM:
            labels[i] = "note"
    return labels


def render_messages(messages: Sequence[Message], out: TextIO, style: Style, full: bool = False) -> None:
    """The conversation as a person reads it: a header per message, tool output cut unless `full`."""
    for m, mark in zip(messages, compaction_labels(messages), strict=True):
        label = "summary" if mark == "summary" else m.role.value
        notes: list[str] = []
        if mark is not None:
            notes.append(f"compaction {mark}")
        if m.agent_name:
            notes.append(f"agent {m.agent_name}")
        if m.prompt_tokens is not None or m.completion_tokens is not None:
            notes.append(plural((m.prompt_tokens or 0) + (m.completion_tokens or 0), "token"))
        if m.role is Role.TOOL and m.tool_call_id:
            notes.append(f"result of {m.tool_call_id}")
        archived = m.compacted_at is not None
        if archived:
            notes.append(f"archived {short_time(m.compacted_at)}")
        head = style(f"── {label}", "bold", ROLE_STYLE[m.role]) + style(
            f"  #{m.id}  {short_time(m.created_at)}" + "".join(f"  · {n}" for n in notes), "dim"
        )
        out.write(head + "\n")
        body_style = ("dim",) if archived else ()
        lines = visible(m.content or "").split("\n") if m.content else []
        if m.role is Role.TOOL and not full and len(lines) > _TOOL_LINES:
            hidden = len(lines) - _TOOL_LINES
            lines = [*lines[:_TOOL_LINES], style(f"… {plural(hidden, 'more line')} (--full shows them)", "dim")]
        for line in lines:
            out.write("  " + style(line, *body_style) + "\n")
        if m.tool_calls is not None:
            for call in _tool_calls(m.tool_calls):
                out.write("  " + style("→ " + call, "blue", *body_style) + "\n")
        out.write("\n")


class Progress:
    """`progress(done, total)` as a self-overwriting line on stderr, only when it is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label} {done}/{total}")
            self.stream.flush()
            self._shown = True

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r{text}")
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
