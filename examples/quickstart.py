"""A short agent conversation through koda-files, written to a fresh temporary store.

Run: python examples/quickstart.py          (a new store under the system's temp dir, kept to look at)
     python examples/quickstart.py --real   (your real store: $KODA_FILES_DIR, else the data dir)
With KODA_FILES_DIR set, the example writes there: setting it is asking for that store.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from koda_files import FileStore, Role, TokenUsage


def tool_call(call_id: str, name: str, arguments: dict[str, str]) -> str:
    """The assistant's tool calls, as the JSON string koda stores verbatim."""
    return json.dumps(
        [{"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]
    )


def open_store(argv: list[str]) -> FileStore:
    """The real store when asked for (`--real` or $KODA_FILES_DIR), else a new temporary one."""
    if "--real" in argv or os.environ.get("KODA_FILES_DIR"):
        return FileStore()  # $KODA_FILES_DIR, else the platform's user data dir for "koda"
    root = tempfile.mkdtemp(prefix="koda-files-demo-")
    print(f"Writing to a temporary store at {root} (--real writes to your real store instead)\n")
    return FileStore(root)


def main() -> None:
    store = open_store(sys.argv[1:])
    sid = store.create_session("main", os.getcwd())

    store.insert_message(sid, Role.SYSTEM, "You are koda, a coding agent.")
    store.insert_message(sid, Role.USER, "Which Python files are in this project?")
    store.insert_message(
        sid,
        Role.ASSISTANT,
        "Let me look.",
        tool_calls=tool_call("call_1", "list_files", {"pattern": "**/*.py"}),
        usage=TokenUsage(prompt_tokens=812, completion_tokens=41, cache_read_tokens=512),
    )
    store.insert_message(sid, Role.TOOL, "koda_files/store.py\nexamples/quickstart.py", tool_call_id="call_1")
    store.insert_message(
        sid,
        Role.ASSISTANT,
        "Two: koda_files/store.py and examples/quickstart.py.",
        usage=TokenUsage(prompt_tokens=901, completion_tokens=18, cache_read_tokens=812),
    )
    store.insert_message(sid, Role.USER, "Thanks. Add a todo to write tests.")
    store.set_todo(sid, "- [ ] write tests for the store\n")
    store.insert_message(
        sid,
        Role.ASSISTANT,
        "Added to the todo list.",
        usage=TokenUsage(prompt_tokens=950, completion_tokens=9),
    )

    archived = store.compact_session(sid, "The user asked which Python files exist; there are two.", 2)
    print(f"compacted {archived} messages into a summary\n")

    print("Conversation as the model now sees it (load_context):")
    for m in store.load_context(sid):
        print(f"  [{m.id:>3}] {m.role.value:<9} {(m.content or m.tool_calls or '').splitlines()[0][:70]}")

    print("\nFull history, archived messages included (load_all_messages):")
    for m in store.load_all_messages(sid):
        mark = "archived" if m.compacted_at else "active"
        print(f"  [{m.id:>3}] {m.role.value:<9} {mark:<8} {(m.content or m.tool_calls or '')[:50]!r}")

    usage = store.session_token_usage(sid)
    print(
        f"\nUsage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens, "
        f"{usage.cache_read_tokens} read from cache, {usage.api_calls} API call{'' if usage.api_calls == 1 else 's'}"
    )
    print(f"Todo:\n  {store.get_todo(sid)!r}")
    session_dir = store.root / "sessions" / sid
    print(f"\nThe store is at {store.root}\nThis session's files are in {session_dir}:")
    for name in sorted(os.listdir(session_dir)):
        if not name.startswith("."):
            print(f"  {name}")
    print(f"\nLook at it with: koda-files --root {store.root} show latest --all")


if __name__ == "__main__":
    main()
