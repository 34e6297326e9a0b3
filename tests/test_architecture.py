"""The shape of the package: visible layers, no import cycles, one store class, a public surface.

The import graph comes from `tests/depgraph.py` (run it to print the graph).
"""

from __future__ import annotations

import inspect
import pydoc
import re
from pathlib import Path

import pytest
from depgraph import PACKAGE, cycles, graph, module_name

import koda_files
from koda_files import AsyncFileStore, FileStore

PUBLIC_MODULES = {"koda_files", "koda_files.types", "koda_files.errors", "koda_files.store", "koda_files.aio"}
SUBPACKAGES = {"koda_files.cli", "koda_files.kodadb"}
MAX_LINES = 500


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles_lazy_and_type_only_imports_included(tmp_path: Path) -> None:
    package = tmp_path / "koda_files"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import x\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n")
    (package / "sub" / "__init__.py").write_text("from ._m import z\n")
    (package / "sub" / "_m.py").write_text("from .. import d\n")
    (package / "d.py").write_text("from .sub import z\n")
    found = cycles(graph(package))
    assert ["koda_files.a", "koda_files.b", "koda_files.c"] in found
    assert ["koda_files.d", "koda_files.sub", "koda_files.sub._m"] in found


def test_only_the_public_modules_lack_a_leading_underscore() -> None:
    """Every module but the public ones is private: its name, or a package it is in, starts with `_`."""
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name in PUBLIC_MODULES | SUBPACKAGES or path.name == "__main__.py":
            continue
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        assert any(p.startswith("_") and p != "__init__" for p in parts), f"{name}: a private module needs a leading _"


def test_the_private_layers_are_packages_in_dependency_order() -> None:
    """Files, then format, then the session directory, then the store: a layer imports only those before it."""
    order = ["_files", "_format", "_session", "_store"]
    for module, imports in graph().items():
        layer = module.split(".")[1] if module.count(".") >= 1 else ""
        if layer not in order:
            continue
        for target in imports:
            other = target.split(".")[1] if target.count(".") >= 1 else ""
            if other in order:
                assert order.index(other) <= order.index(layer), f"{module} imports {target}"


def test_help_lists_no_private_module_but_the_layers() -> None:
    text = pydoc.plain(pydoc.render_doc(koda_files, renderer=pydoc.TextDoc()))
    contents = text.split("PACKAGE CONTENTS\n", 1)[1].split("\n\n", 1)[0].split()
    listed = {c for c in contents if c != "(package)"}
    layers = {"_files", "_format", "_session", "_store"}
    assert listed == layers | {"__main__", "aio", "cli", "errors", "kodadb", "store", "types"}


def test_every_module_is_small_enough_to_read_in_one_sitting() -> None:
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines < MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines"


def test_no_formatter_markers_are_left() -> None:
    """The project does not run a formatter: a marker telling one to skip a line would promise one."""
    repo = PACKAGE.parent
    files = [*PACKAGE.rglob("*.py"), *(repo / "tests").glob("*.py"), *(repo / "benchmarks").glob("*.py")]
    marker = "fmt" + ": skip"  # spelled apart, so this file does not match itself
    assert [str(f.relative_to(repo)) for f in files if marker in f.read_text(encoding="utf-8")] == []


@pytest.mark.parametrize("cls", [FileStore, AsyncFileStore])
def test_the_stores_are_single_classes_without_an_inheritance_chain(cls: type) -> None:
    assert cls.__mro__ == (cls, object)


def test_every_public_method_of_the_store_is_defined_on_filestore_itself() -> None:
    for name, member in inspect.getmembers(FileStore):
        if not name.startswith("_") and callable(member):
            assert name in vars(FileStore), name
            assert member.__qualname__ == f"FileStore.{name}", member.__qualname__


def test_help_shows_only_the_public_api() -> None:
    text = pydoc.plain(pydoc.render_doc(koda_files, renderer=pydoc.TextDoc()))
    sections = dict(re.findall(r"^([A-Z][A-Z ]+)\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.M | re.S))
    classes = set(re.findall(r"^ {4}class (\w+)", sections["CLASSES"], re.M))
    functions = set(re.findall(r"^ {4}(\w+)\(", sections["FUNCTIONS"], re.M))
    data = set(re.findall(r"^ {4}(\w+) = ", sections.get("DATA", ""), re.M))
    assert classes | functions | (data - {"__all__"}) == set(koda_files.__all__) - {"__version__"}
    for internal in ("StoreRoot", "SessionDir", "ResumeState", "MessageLog", "Browse", "Maintenance", "__getattr__"):
        assert internal not in text
