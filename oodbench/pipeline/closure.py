"""Which project files a stage runs: the closure of its imports, read from the source.

DVC does not follow Python imports, so each stage's code dependencies are computed
here and written into dvc.yaml (oodbench/pipeline/dvcyaml.py). An import anywhere in a
module counts, inside functions too (a lazy import is still code the stage may run),
and so does every package ``__init__.py`` on the way (importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py``). Only modules of the ``oodbench`` package
are followed; stage scripts (``stages/*.py``) are entry points, never imported.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "oodbench"


def module_path(module: str, root: Path) -> str | None:
    """``oodbench.a.b`` -> ``oodbench/a/b.py`` (or ``.../b/__init__.py``), None if not a file."""
    return _module_file(module, package_files(root))


def packages_of(module: str, root: Path) -> list[str]:
    """The ``__init__.py`` of every package containing `module` (import runs them all)."""
    return _packages(module, package_files(root))


def package_files(root: Path) -> frozenset[str]:
    """Every ``.py`` file of the package under `root`, as posix paths relative to it: one
    directory walk per closure, instead of a stat per candidate module (the check stage
    computes dozens of closures of the same files at every run)."""
    base = os.path.join(root, PACKAGE)
    found = []
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = [d for d in subfolders if d != "__pycache__"]
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        found += [f"{rel}/{name}" for name in files if name.endswith(".py")]
    return frozenset(found)


def _module_file(module: str, files: frozenset[str]) -> str | None:
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in files:
            return candidate
    return None


def _packages(module: str, files: frozenset[str]) -> list[str]:
    parts = module.split(".")
    found = (_module_file(".".join(parts[:i]), files) for i in range(1, len(parts)))
    return [p for p in found if p is not None]


def direct_imports(path: Path) -> tuple[str, ...]:
    """The ``oodbench`` modules `path` imports, in any scope."""
    return _parse_imports(path, path.stat().st_mtime_ns)


@cache
def _parse_imports(path: Path, mtime_ns: int) -> tuple[str, ...]:  # mtime: edits re-parse
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: c is a module or a name in a.b; both a.b and a.b.c count
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return tuple(n for n in names if n.split(".")[0] == PACKAGE)


def closure(entries: Iterable[str], root: Path) -> list[str]:
    """Every project file the `entries` (paths relative to `root`) run, sorted."""
    files = package_files(root)
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in direct_imports(root / current):
            found = _module_file(module, files)
            if found is not None:
                todo += [found, *_packages(module, files)]
    return sorted(seen)
