"""Command-line benchmark: `search` against ripgrep on a ~1 GB store, listing 100k messages, start-up.

Run: .venv/bin/python benchmarks/cli.py [--gb 1.0] [--repeat 3] [--tmp DIR]

Builds a store of 1000 sessions x 100 messages (~10 KB each, so 100k messages and ~1 GB) in a
temporary directory and removes it at the end. Reports, with a warm page cache:
  - `koda-files search NEEDLE --all --tools` vs `rg -F -c NEEDLE sessions/` (the target: at most 3x)
  - `koda-files sessions --all --limit 0` and `FileStore.session_overviews()` (target: well under 100 ms)
  - `koda-files --help` start-up (target: under 150 ms)
Search times are medians of `--repeat` runs (at least 5) alternating with ripgrep's, so that
noise from other work hits both; the rest are the best of `--repeat` runs (medians for
start-up). ripgrep must be installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from koda_files import FileStore

SESSIONS = 1000
MESSAGES = 100
NEEDLE = "zebra-quartz-needle"
SCRIPT = str(Path(sys.executable).parent / "koda-files")
WORDS = "the parser reads each line and the test checks what the store returns for it".split()  # noqa: SIM905


def build(root: Path, gb: float) -> int:
    """A store of SESSIONS sessions; message text sized so the logs add up to about `gb` GB."""
    store = FileStore(root)
    size = int(gb * 1e9 / (SESSIONS * MESSAGES))
    filler = " ".join(WORDS[i % len(WORDS)] for i in range(size // 5))[:size]
    next_id = 1
    total = 0
    for s in range(SESSIONS):
        sid = store.create_session("main", "/project")
        lines = []
        for i in range(MESSAGES):
            text = filler
            if (s * MESSAGES + i) % 500 == 0:  # 200 hits in 100k messages
                text = f"{filler[: size // 2]} {NEEDLE} {filler[size // 2 :]}"
            role = ("user", "assistant", "tool")[i % 3]
            rec = {"id": next_id, "role": role, "content": text, "created_at": "2026-11-27T11:09:22.000000Z"}
            if role == "tool":
                rec["tool_call_id"] = f"c{i}"
            lines.append(orjson.dumps(rec) + b"\n")
            next_id += 1
        data = b"".join(lines)
        (root / "sessions" / sid / "messages.jsonl").write_bytes(data)
        total += len(data)
    (root / ".ids").unlink(missing_ok=True)  # rebuilt from the largest id on the next insert
    return total


def timed(cmds: list[list[str]], repeat: int, cwd: Path, env: dict[str, str]) -> list[tuple[list[float], bytes]]:
    """Wall times of each command and its last output; runs alternate so that noise hits all alike."""
    runs: list[tuple[list[float], bytes]] = [([], b"") for _ in cmds]
    for _ in range(repeat):
        for i, cmd in enumerate(cmds):
            start = time.perf_counter()
            r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)
            runs[i] = ([*runs[i][0], time.perf_counter() - start], r.stdout)
    return runs


def best(cmd: list[str], repeat: int, cwd: Path, env: dict[str, str]) -> tuple[float, bytes]:
    ((times, out),) = timed([cmd], repeat, cwd, env)
    return min(times), out


def ms(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="store size in GB (default 1.0)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    p.add_argument("--tmp", metavar="DIR", help="create the scratch directory under DIR")
    args = p.parse_args()
    rg = shutil.which("rg")
    if rg is None:
        print("ripgrep (rg) is needed: apt-get install ripgrep", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="koda-cli-bench-", dir=args.tmp))
    try:
        root = scratch / "store"
        start = time.perf_counter()
        size = build(root, args.gb)
        print(f"store: {SESSIONS} sessions, {SESSIONS * MESSAGES} messages, {size / 1e9:.2f} GB of logs "
              f"(built in {time.perf_counter() - start:.0f} s)")
        env = dict(os.environ, KODA_FILES_DIR=str(root), PAGER="")
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as on a user's machine
        cmd = [SCRIPT, "--json", "search", NEEDLE, "--all", "--tools"]
        for warm in ([rg, "-F", "-c", NEEDLE, "sessions/"], cmd):  # the page cache, and the bytecode
            subprocess.run(warm, cwd=root, env=env, capture_output=True)
        (rg_times, out_rg), (our_times, out_ours) = timed(
            [[rg, "-F", "-c", NEEDLE, "sessions/"], cmd], max(args.repeat, 5), root, env
        )
        rg_hits = sum(int(line.rsplit(b":", 1)[1]) for line in out_rg.splitlines())
        our_hits = len(orjson.loads(out_ours))
        ratio = statistics.median(our_times) / statistics.median(rg_times)
        print(f"search {NEEDLE!r} ({our_hits} messages; rg: {rg_hits} lines), {len(rg_times)} runs each, alternating:")
        print(f"  koda-files search --all --tools  {ms(our_times)}")
        print(f"  rg -F -c                         {ms(rg_times)}")
        print(f"  ratio of medians {ratio:.2f}x (target <= 3x); load average {os.getloadavg()[0]:.1f}")
        if our_hits != rg_hits:
            print("  MISMATCH: the two found different numbers of matches", file=sys.stderr)
        listing = [SCRIPT, "--json", "sessions", "--all", "--limit", "0"]
        subprocess.run(listing, cwd=root, env=env, capture_output=True)  # builds the index once
        t_list, _ = best(listing, max(args.repeat, 5), root, env)
        t_bare, _ = best([sys.executable, "-c", "pass"], max(args.repeat, 5), root, env)
        store = FileStore(root)
        store.session_overviews()
        api = []
        for _ in range(max(args.repeat, 5)):
            start = time.perf_counter()
            rows = store.session_overviews()
            api.append(time.perf_counter() - start)
        print(f"sessions --all ({len(rows)} sessions, {sum(r.message_count for r in rows)} messages): "
              f"command {t_list * 1000:.0f} ms (python -c pass: {t_bare * 1000:.0f} ms), "
              f"session_overviews() {min(api) * 1000:.1f} ms (target: well under 100 ms)")
        helps = []
        for _ in range(15):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "koda_files", "--help"], capture_output=True, check=True)
            helps.append(time.perf_counter() - start)
        print(f"koda-files --help: {statistics.median(helps) * 1000:.0f} ms (target < 150 ms)")
    finally:
        shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
