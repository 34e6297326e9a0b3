#!/usr/bin/env python3
"""The import graph of the `koda_files` package, and its cycles.

    python tests/depgraph.py            # every module and the koda_files modules it imports
    python tests/depgraph.py --cycles   # only the cycles (none: exit status 0)

Every import counts: at module level, inside functions (lazy) and under `TYPE_CHECKING`.
A package's own `__init__` run before its submodules is not an edge (Python's doing, not ours).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "koda_files"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """`koda_files.cli._main` for `koda_files/cli/_main.py`; a package's `__init__` is the package."""
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the package modules it imports (resolved, relative imports included)."""
    modules = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == package.name)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(here, node.level, node.module)
                if base is None or base.split(".")[0] != package.name:
                    continue
                # `from . import x` imports the submodule x when there is one.
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                found.update(subs if subs else [base])
        edges[name] = {m for m in found if m in modules and m != name}
    return edges


def _resolve(here: str, level: int, module: str | None) -> str | None:
    if level == 0:
        return module
    parts = here.split(".")
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                out.append(sorted(group))

    sys.setrecursionlimit(max(1000, 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    edges = graph()
    found = cycles(edges)
    if "--cycles" not in argv:
        for name in sorted(edges):
            print(f"{name} -> {', '.join(sorted(edges[name])) or '(nothing)'}")
    for group in found:
        print("cycle: " + " <-> ".join(group))
    if not found and "--cycles" in argv:
        print("no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
