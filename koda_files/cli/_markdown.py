"""`koda-files show SESSION --markdown`: a conversation as a Markdown transcript to share.

Roles are headings; tool calls and results sit in collapsible `<details>` blocks (arguments
pretty-printed as JSON when they are JSON, else verbatim); each model call's token usage is a
line under its heading; the compaction summary is marked as such. Code fences are made longer
than any run of backticks inside them, so no stored text can break out of its block.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any, TextIO

from ..types import Message, Role, SessionOverview
from ._render import compaction_labels, plural, short_time

__all__ = ["render_markdown"]

_HEADINGS = {Role.SYSTEM: "System", Role.USER: "User", Role.ASSISTANT: "Assistant", Role.TOOL: "Tool result"}
_TOKENS = (
    ("prompt_tokens", "prompt"),
    ("completion_tokens", "completion"),
    ("cache_read_tokens", "cache read"),
    ("cache_creation_tokens", "cache write"),
    ("thinking_tokens", "thinking"),
)


def fenced(text: str, info: str = "") -> str:
    """`text` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def _pretty(value: Any) -> tuple[str, str]:
    """(text, fence info) of tool arguments: indented JSON when they parse, else as given."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value, ""
    return json.dumps(value, indent=2, ensure_ascii=False), "json"


def _calls(raw: str) -> list[str]:
    """A `<details>` block per tool call; the raw string in one block when it is not koda's JSON."""
    try:
        calls = json.loads(raw)
    except ValueError:
        calls = None
    if not isinstance(calls, list):
        return [_details("Tool calls (not JSON)", fenced(raw))]
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(fn, dict):
            out.append(_details("Tool call", fenced(json.dumps(call, indent=2, ensure_ascii=False), "json")))
            continue
        name = html.escape(str(fn.get("name") or "?"))
        text, info = _pretty(fn.get("arguments", ""))
        ident = f" ({html.escape(str(call['id']))})" if call.get("id") else ""
        out.append(_details(f"Tool call <code>{name}</code>{ident}", fenced(text, info)))
    return out


def _usage(m: Message) -> str:
    parts = [f"{getattr(m, field)} {label}" for field, label in _TOKENS if getattr(m, field)]
    return "tokens: " + ", ".join(parts) if parts else ""


def render_markdown(session: SessionOverview, messages: Sequence[Message], out: TextIO, archived_hidden: int) -> None:
    """Write the transcript of `messages` under a title and the session's facts."""
    title = session.title or session.first_user_message or session.id
    out.write(f"# {(title.strip().splitlines() or [session.id])[0]}\n\n")
    facts = [f"session `{session.id}`", f"agent {session.agent_name or 'main'}"]
    if session.project_root:
        facts.append(f"project `{session.project_root}`")
    facts += [f"created {short_time(session.created_at)}", plural(len(messages), "message")]
    out.write(" · ".join(facts) + "\n")
    if archived_hidden:
        out.write(f"\n*{plural(archived_hidden, 'archived message')} not included (--all includes them).*\n")
    for m, mark in zip(messages, compaction_labels(messages), strict=True):
        heading = "Compaction summary" if mark == "summary" else _HEADINGS[m.role]
        if mark == "note":
            heading += " (compaction note)"
        if m.agent_name:
            heading += f" · {m.agent_name}"
        if m.compacted_at is not None:
            heading += " (archived)"
        out.write(f"\n## {heading}\n\n")
        line = " · ".join(x for x in (f"#{m.id}", short_time(m.created_at), _usage(m)) if x)
        out.write(f"<sub>{html.escape(line)}</sub>\n\n")
        blocks: list[str] = []
        if mark == "summary":
            blocks.append("> *The conversation before this point was compacted into this summary.*")
        content = m.content or ""
        if m.role is Role.TOOL:
            what = f"Result of <code>{html.escape(m.tool_call_id)}</code>" if m.tool_call_id else "Result"
            blocks.append(_details(f"{what} · {plural(len(content.splitlines()), 'line')}", fenced(content)))
        elif m.role is Role.SYSTEM and mark is None:
            blocks.append(_details("System prompt", fenced(content)))
        elif content:
            blocks.append(content.strip("\n"))
        if m.tool_calls is not None:
            blocks += _calls(m.tool_calls)
        out.write("\n\n".join(blocks) + "\n")
