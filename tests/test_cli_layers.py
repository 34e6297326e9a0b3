"""The command line and the koda.db export are built on the public API only, without import cycles.

Read from the source with `ast`: every import counts, also one inside a function or under
`TYPE_CHECKING`, so a lazy import cannot hide a private dependency or a cycle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from depgraph import PACKAGE, graph, module_name

CLI = PACKAGE / "cli"
EXPORT = PACKAGE / "kodadb" / "_export.py"
# The export writes its new database file (never a store file) with the package's durable file
# operations, as every file the package writes must (tests/test_fileops_boundary.py).
ALLOWED = {("koda_files.kodadb._export", "koda_files._files.fileops")}
# The import reads and writes the store only through the public API; from the private layers it
# takes values and pure functions (no store state): the time parser and id rule every line and
# directory follows, the store's compaction hint (to know its own pairs again after an export),
# and the encoder of `events.jsonl` lines handed to `restore_session`.
VALUE_HELPERS = {
    ("koda_files.kodadb._common", "koda_files._format.layout"),
    ("koda_files.kodadb._import", "koda_files._format.layout"),
    ("koda_files.kodadb._import", "koda_files._session.completion"),
    ("koda_files.kodadb._extra", "koda_files._store.events"),
}


def _is_private(module: str, own_package: str) -> bool:
    """A koda_files module with a leading underscore somewhere, outside the importer's own package."""
    parts = module.split(".")
    private = any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
    return private and not module.startswith(own_package + ".")


def private_imports(edges: dict[str, set[str]], module: str) -> list[str]:
    own = module.rsplit(".", 1)[0]
    return sorted(m for m in edges[module] if _is_private(m, own) and (module, m) not in ALLOWED)


def test_the_cli_and_the_export_import_no_private_module() -> None:
    edges = graph()
    modules = [module_name(f) for f in [*sorted(CLI.glob("*.py")), EXPORT]]
    assert len(modules) > 10
    found = {m: private_imports(edges, m) for m in modules}
    assert {m: names for m, names in found.items() if names} == {}


def test_the_koda_db_import_takes_only_values_from_the_private_layers() -> None:
    edges = graph()
    modules = [module_name(f) for f in sorted((PACKAGE / "kodadb").glob("*.py"))]
    found = {(m, p) for m in modules for p in private_imports(edges, m)}
    assert found <= VALUE_HELPERS, found - VALUE_HELPERS


def test_the_private_import_check_sees_every_spelling(tmp_path: Path) -> None:
    package = tmp_path / "koda_files"
    (package / "_format").mkdir(parents=True)
    (package / "cli").mkdir()
    for name in ("__init__", "_session", "_fileops", "errors", "store", "_format/__init__", "_format/layout"):
        (package / f"{name}.py").write_text("")
    (package / "cli" / "__init__.py").write_text("")
    (package / "cli" / "_render.py").write_text("")
    spellings = {
        "from .._format.layout import SESSIONS": ["koda_files._format.layout"],
        "from .._format import layout": ["koda_files._format.layout"],
        "from koda_files._session import read_header": ["koda_files._session"],
        "import koda_files._format.layout": ["koda_files._format.layout"],
        "from .. import _fileops": ["koda_files._fileops"],
        "def f():\n    from .._session import SessionDir": ["koda_files._session"],
        "from .. import errors\nfrom ..store import FileStore\nfrom ._render import plural": [],
    }
    for source, expected in spellings.items():
        (package / "cli" / "_probe.py").write_text(source + "\n", encoding="utf-8")
        assert private_imports(graph(package), "koda_files.cli._probe") == expected, source


def test_the_command_modules_stand_on_shared_helpers_not_on_main() -> None:
    edges = graph()
    assert {"koda_files.cli._main", "koda_files.cli._common", "koda_files.cli._args"} <= set(edges)
    cli = {m for m in edges if m.startswith("koda_files.cli.")}
    assert edges["koda_files.cli._main"] & cli <= {"koda_files.cli._args", "koda_files.cli._common"}
    assert not edges["koda_files.cli._common"] & cli - {"koda_files.cli._render"}  # no command module


def test_help_imports_neither_the_store_nor_its_file_format() -> None:
    script = (
        "import contextlib, io, sys\n"
        "from koda_files.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = ('orjson', 'filelock', 'sqlite3', 'koda_files.store', 'koda_files._session.session')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\n", (r.stdout, r.stderr)
