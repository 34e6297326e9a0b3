"""Every change the store makes to the file system goes through `koda_files/_files/fileops.py`.

That module is where durability is decided (which directory is synced after which create or
rename) and where the fault-injection tests fail calls on purpose, so a write made anywhere else
would be neither synced by the same rules nor seen by those tests. This test reads the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "koda_files"

# `os.<name>(...)` calls that change the file system (or its durability).
OS_MUTATIONS = frozenset(
    {
        "open", "mkdir", "makedirs", "replace", "rename", "renames", "unlink", "remove",
        "removedirs", "rmdir", "utime", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown",
        "ftruncate", "truncate", "write", "pwrite", "writev", "pwritev", "fsync", "fdatasync",
        "link", "symlink", "mkfifo", "mknod", "copy_file_range", "sendfile", "posix_fallocate",
    }
)
# `<anything>.<name>(...)`: `pathlib.Path` methods that change the file system.
PATH_MUTATIONS = frozenset(
    {"mkdir", "unlink", "rmdir", "rename", "write_text", "write_bytes", "touch", "symlink_to",
     "hardlink_to", "chmod", "lchmod"}
)
# (module file, call) pairs allowed outside fileops, each with its reason.
ALLOWED = {
    # koda.db export: SQLite writes the new database file itself (a temp name, then linked into
    # place by fileops); nothing in the store is written through it.
    ("kodadb/_export.py", "sqlite3.connect"),
    # koda.db import: the source database is opened read-only; nothing is written through it.
    ("kodadb/_import.py", "sqlite3.connect"),
    # Opens /dev/null to silence stdout after the reader of a pipe went away; not the store.
    ("cli/_main.py", "os.open"),
}


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = func.value
        if isinstance(base, ast.Name) and base.id in ("os", "shutil", "sqlite3", "tempfile"):
            return f"{base.id}.{func.attr}"
        return f".{func.attr}"
    return None


def _writes(node: ast.Call, name: str) -> bool:
    if name.startswith("os."):
        return name[3:] in OS_MUTATIONS
    if name.startswith(("shutil.", "tempfile.")):
        return name not in ("shutil.get_terminal_size", "shutil.which")
    if name == "sqlite3.connect":
        return True
    if name == "open":  # the builtin: only a mode that writes
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
        return any(c in text for c in "wax+")
    return name.startswith(".") and name[1:] in PATH_MUTATIONS


def mutations_outside_fileops(package: Path) -> list[str]:
    """`file:line call` for every file-system change made outside fileops and not allowed above."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == "_files/fileops.py":
            continue
        rel = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name is None or not _writes(node, name) or (rel, name) in ALLOWED:
                continue
            found.append(f"{rel}:{node.lineno} {name}")
    return found


def test_only_fileops_changes_the_file_system() -> None:
    assert mutations_outside_fileops(PACKAGE) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.unlink(p)\n",
        "import os\nos.utime(p, ns=(1, 1))\n",
        "import os\nfd = os.open(p, os.O_WRONLY | os.O_CREAT)\n",
        "os.makedirs(p, exist_ok=True)\n",
        "p.write_bytes(b'x')\n",
        "p.unlink(missing_ok=True)\n",
        "open(p, 'w').write('x')\n",
        "import shutil\nshutil.rmtree(p)\n",
    ],
)
def test_the_check_sees_each_kind_of_change(tmp_path: Path, source: str) -> None:
    (tmp_path / "module.py").write_text(source)
    assert len(mutations_outside_fileops(tmp_path)) == 1


def test_the_check_passes_reads_over(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text("open(p).read()\nopen(p, 'rb')\nos.stat(p)\n'a'.replace('a', 'b')\n")
    assert mutations_outside_fileops(tmp_path) == []
