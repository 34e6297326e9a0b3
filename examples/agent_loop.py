"""A realistic agent loop on koda-files: a scripted model answers, calls tools and gets their
results; the user interrupts it once in the middle of a tool call; the conversation is compacted
when the prompt passes a token budget; and a second process follows the same session meanwhile,
reading the files while they are written.

Run: KODA_FILES_DIR=/tmp/koda-demo python examples/agent_loop.py
(without KODA_FILES_DIR the session goes to the platform's data dir for "koda")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from koda_files import FileStore, Message, Role, TokenUsage

TOKEN_BUDGET = 2_500  # compact when a model call's prompt is larger than this
KEEP_AFTER_COMPACTION = 2

# A tiny project the tools work on.
PROJECT = {
    "app.py": "def add(a, b):\n    return a - b\n",
    "test_app.py": "from app import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}


class Interrupted(Exception):
    """The user pressed Ctrl-C while a tool was running."""


def run_tool(name: str, args: dict[str, str], interrupt: bool) -> str:
    if interrupt:
        raise Interrupted(name)
    if name == "list_files":
        return "\n".join(sorted(PROJECT))
    if name == "read_file":
        return PROJECT.get(args["path"], f"error: no such file {args['path']}")
    if name == "write_file":
        PROJECT[args["path"]] = args["content"]
        return f"wrote {len(args['content'])} bytes to {args['path']}"
    if name == "run_tests":
        ok = "return a + b" in PROJECT["app.py"]
        return "1 passed" if ok else "FAILED test_app.py::test_add - assert -1 == 5"
    return f"error: unknown tool {name}"


@dataclass
class Reply:
    content: str | None
    calls: list[tuple[str, dict[str, str]]]


def scripted_model() -> Iterator[Reply]:
    """What the 'model' says, turn by turn (a real agent would call an LLM here)."""
    yield Reply("Let me look at the project.", [("list_files", {})])
    yield Reply(None, [("read_file", {"path": "app.py"}), ("read_file", {"path": "test_app.py"})])
    yield Reply("Running the tests first.", [("run_tests", {})])  # interrupted by the user
    yield Reply("The test fails: add subtracts. Fixing it.",
                [("write_file", {"path": "app.py", "content": "def add(a, b):\n    return a + b\n"})])  # fmt: skip
    yield Reply(None, [("run_tests", {})])
    yield Reply("Fixed: `add` now adds, and the test passes.", [])


def context_tokens(context: list[Message]) -> int:
    """A rough token count of what the model would be sent (4 characters a token)."""
    return 900 + sum(len(m.content or "") + len(m.tool_calls or "") for m in context) // 4 * 8


def follow(store: FileStore, sid: str, ready_fd: int) -> int:
    """The second process: read the session while the agent writes it, check nothing is lost."""
    seen: dict[int, Message] = {}
    os.write(ready_fd, b"!")  # tell the agent we are reading
    os.close(ready_fd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        messages = store.load_all_messages(sid)
        now = {m.id: m for m in messages}
        lost = [i for i in seen if i not in now]
        if lost:
            print(f"[reader] messages {lost} disappeared", flush=True)
            return 1
        for m in messages:
            if m.id not in seen:
                print(f"[reader]   saw #{m.id} {m.role.value}", flush=True)
            seen[m.id] = m
        if store.get_metadata(sid, "status") == "done":
            archived = sum(1 for m in messages if m.compacted_at)
            print(f"[reader] session done: {len(messages)} messages, {archived} archived", flush=True)
            return 0
        time.sleep(0.01)
    print("[reader] timed out", flush=True)
    return 1


def agent(store: FileStore, sid: str) -> None:
    store.insert_message(sid, Role.SYSTEM, "You are koda, a coding agent. Use the tools.")
    store.insert_message(sid, Role.USER, "The tests fail. Can you fix them?")
    store.set_todo(sid, "- [ ] find why test_add fails\n- [ ] fix it\n")
    call_no = 0
    interrupted_once = False
    for reply in scripted_model():
        context = store.load_context(sid)
        prompt = context_tokens(context)
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=40 + 10 * len(reply.calls),
                           cache_read_tokens=prompt // 2)  # fmt: skip
        calls: list[dict[str, Any]] = []
        for name, args in reply.calls:
            call_no += 1
            calls.append({"id": f"call_{call_no}", "type": "function",
                          "function": {"name": name, "arguments": json.dumps(args)}})  # fmt: skip
        store.insert_message(sid, Role.ASSISTANT, reply.content, json.dumps(calls) if calls else None,
                             usage=usage)  # fmt: skip
        names = ", ".join(c["function"]["name"] for c in calls)
        print(f"[agent] model call with a {prompt}-token prompt: {reply.content or ''} {names}", flush=True)
        try:
            for call, (name, args) in zip(calls, reply.calls, strict=True):
                interrupt = name == "run_tests" and not interrupted_once
                result = run_tool(name, args, interrupt)
                store.insert_message(sid, Role.TOOL, result, tool_call_id=call["id"])
        except Interrupted:
            interrupted_once = True
            # The call stays unanswered on disk; load_context leaves it out from now on.
            assert store.has_pending_tool_calls(sid)
            print("[agent] interrupted by the user during a tool call")
            store.insert_message(sid, Role.USER, "Stop, don't run the tests yet. Read app.py and fix add.")
            assert all(m.tool_calls is None or "run_tests" not in m.tool_calls for m in store.load_context(sid))
        # A sub-agent reviews each change; its usage is counted separately.
        if any(name == "write_file" for name, _ in reply.calls):
            store.insert_message_with_agent(sid, Role.ASSISTANT, "Review: the fix looks right.", None, None,
                                            TokenUsage(300, 12), "reviewer")  # fmt: skip
        if prompt > TOKEN_BUDGET:
            summary = ("Summary: the user asked to fix failing tests. app.py's add() subtracted; "
                       "the agent is fixing it and will re-run the tests.")  # fmt: skip
            archived = store.compact_session(sid, summary, KEEP_AFTER_COMPACTION)
            print(f"[agent] prompt of {prompt} tokens passed the budget: compacted {archived} messages")
        time.sleep(0.05)  # a real model call takes a while; the reader catches up meanwhile
    store.set_todo(sid, "- [x] find why test_add fails\n- [x] fix it\n")
    store.set_metadata(sid, "status", "done")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--follow":
        return follow(FileStore(), sys.argv[2], int(sys.argv[3]))
    store = FileStore()
    sid = store.create_session("main", os.getcwd())
    print(f"session {sid} in {store.root}")
    ready_r, ready_w = os.pipe()
    reader = subprocess.Popen([sys.executable, __file__, "--follow", sid, str(ready_w)], pass_fds=[ready_w])
    os.close(ready_w)
    os.read(ready_r, 1)  # wait until the reader runs
    os.close(ready_r)
    try:
        agent(store, sid)
    finally:
        reader_status = reader.wait(timeout=120)
    total = store.session_token_usage(sid)
    print(f"\nusage: {total.prompt_tokens} prompt + {total.completion_tokens} completion tokens "
          f"in {total.api_calls} calls")  # fmt: skip
    for name, u in store.session_usage_by_agent(sid):
        print(f"  {name:<9} {u.prompt_tokens + u.completion_tokens:>6} tokens, {u.api_calls} calls")
    print("\nwhat the model sees next turn:")
    for m in store.load_context(sid):
        print(f"  #{m.id:<3} {m.role.value:<9} {(m.content or m.tool_calls or '').splitlines()[0][:60]}")
    print(f"\ntodo:\n{store.get_todo(sid)}")
    print(f"try: koda-files show {sid[:13]} --all")
    compacted = any(m.compacted_at for m in store.load_all_messages(sid))
    return reader_status if compacted else 1


if __name__ == "__main__":
    sys.exit(main())
