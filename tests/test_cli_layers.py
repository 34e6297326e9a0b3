"""The command line and the koda.db export are built on the public API only, without import cycles.

Read from the source with `ast`: every import counts, also one inside a function or under
`TYPE_CHECKING`, so a lazy import cannot hide a private dependency or a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "koda_files"
CLI = PACKAGE / "cli"
EXPORT = PACKAGE / "kodadb" / "_export.py"
# The export writes its new database file (never a store file) with the package's durable file
# operations, as every file the package writes must (tests/test_fileops_boundary.py).
ALLOWED = {(EXPORT, "koda_files._fileops")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Absolute names of what `path` imports: `from x import y` yields x and x.y, `from . import y` only y."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if node.module:
                yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _private(name: str, own_package: str) -> str | None:
    """The private koda_files module `name` is in, unless it is `own_package`'s own business."""
    parts = name.split(".")
    if parts[0] != "koda_files" or name.startswith(own_package + "."):
        return None
    for i, part in enumerate(parts[1:], 2):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def private_imports(path: Path) -> list[str]:
    own = _module_name(path).rsplit(".", 1)[0]
    found = {_private(n, own) for n in _imports(path)}
    return sorted(n for n in found if n is not None and (path, n) not in ALLOWED)


def test_the_cli_and_the_export_import_no_private_module() -> None:
    files = [*sorted(CLI.glob("*.py")), EXPORT]
    assert len(files) > 10
    found = {str(f.relative_to(PACKAGE)): private_imports(f) for f in files}
    assert {f: names for f, names in found.items() if names} == {}


def test_the_private_import_check_sees_every_spelling(tmp_path: Path) -> None:
    spellings = {
        "from .._layout import SESSIONS": ["koda_files._layout"],
        "from koda_files._session import read_header": ["koda_files._session"],
        "import koda_files._classify": ["koda_files._classify"],
        "from .. import _fileops": ["koda_files._fileops"],
        "def f():\n    from .._index import SessionIndex": ["koda_files._index"],
        "from .. import errors\nfrom ..store import FileStore\nfrom ._render import plural": [],
    }
    for source, expected in spellings.items():
        probe = CLI / "_probe_for_test.py"
        probe.write_text(source + "\n", encoding="utf-8")
        try:
            assert private_imports(probe) == expected, source
        finally:
            probe.unlink()


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(f): f for f in CLI.glob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path (first module repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cli_modules_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert {"koda_files.cli._main", "koda_files.cli._common", "koda_files.cli._args"} <= set(graph)
    assert find_cycle(graph) is None, find_cycle(graph)
    assert graph["koda_files.cli._main"] <= {"koda_files.cli._args", "koda_files.cli._common"}
    assert not graph["koda_files.cli._common"] - {"koda_files.cli._render"}  # no command module
    # The checker itself finds a lazy cycle like the one `_main` and the commands had.
    graph["koda_files.cli._common"].add("koda_files.cli._main")
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1], cycle
    assert {"koda_files.cli._common", "koda_files.cli._main", "koda_files.cli._args"} <= set(cycle)


def test_the_cli_source_has_no_formatter_markers() -> None:
    marked = [f.name for f in CLI.glob("*.py") if "fmt: skip" in f.read_text(encoding="utf-8")]
    assert marked == []


def test_help_imports_neither_the_store_nor_its_file_format() -> None:
    script = (
        "import contextlib, io, sys\n"
        "from koda_files.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = ('orjson', 'filelock', 'sqlite3', 'koda_files.store', 'koda_files._session')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\n", (r.stdout, r.stderr)
