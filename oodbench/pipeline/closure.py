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
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if os.path.isfile(os.path.join(root, candidate)):  # not pathlib: called thousands of times
            return candidate
    return None


def packages_of(module: str, root: Path) -> list[str]:
    """The ``__init__.py`` of every package containing `module` (import runs them all)."""
    parts = module.split(".")
    found = (module_path(".".join(parts[:i]), root) for i in range(1, len(parts)))
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
    located: dict[str, str | None] = {}  # module -> file, looked up once per closure

    def locate(module: str) -> str | None:
        if module not in located:
            located[module] = module_path(module, root)
        return located[module]

    seen: set[str] = set()
    todo = list(entries)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in direct_imports(root / current):
            found = locate(module)
            if found is not None:
                parts = module.split(".")
                packages = (locate(".".join(parts[:i])) for i in range(1, len(parts)))
                todo += [found, *(p for p in packages if p is not None)]
    return sorted(seen)
