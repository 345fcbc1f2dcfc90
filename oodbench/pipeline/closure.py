"""Which project files a stage runs: the closure of its imports, read from the source.

DVC does not follow Python imports, so each stage's code dependencies are computed
here and written into dvc.yaml (oodbench/pipeline/dvcyaml.py). An import anywhere in a
module counts, inside functions too (a lazy import is still code the stage may run),
and so does every package ``__init__.py`` on the way (importing ``a.b.c`` runs
``a/__init__.py`` and ``a/b/__init__.py``). Every import that resolves to a file of the
project is followed: the ``oodbench`` package of a clone, and the user's own modules (a
method or model file named in params.yaml and what it imports, absolutely or
relatively: oodbench/core/usercode.py imports them with the project root first on
``sys.path``, which is how they are resolved here). Installed libraries are not files of
the project and are not followed; stage scripts (``stages/*.py``) are entry points.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath


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


def package_of(relative: str) -> list[str]:
    """The package a project file belongs to, as parts: ``a/b/c.py`` -> [a, b],
    ``a/b/__init__.py`` -> [a, b] (what a relative import is resolved against)."""
    return list(PurePosixPath(relative).parts[:-1])


def direct_imports(path: Path, package: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The absolute names of every module `path` imports, in any scope; relative imports
    are resolved against `package` (the importing file's package, as parts)."""
    return _parse_imports(path, path.stat().st_mtime_ns, package)


@cache
def _parse_imports(path: Path, mtime_ns: int, package: tuple[str, ...]) -> tuple[str, ...]:
    # mtime_ns is part of the cache key: an edited file is parsed again
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in statements(tree.body):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue  # beyond the top package: Python refuses it too
                base = list(package[: len(package) - (node.level - 1)])
                base += node.module.split(".") if node.module else []
            else:
                base = node.module.split(".") if node.module else []
            if not base:
                continue
            stem = ".".join(base)
            # `from a.b import c`: c is a module or a name in a.b; both a.b and a.b.c count
            names += [stem, *(f"{stem}.{alias.name}" for alias in node.names if alias.name != "*")]
    return tuple(names)


#: the fields that hold nested statements (if/for/while/try/with/def/class/match bodies)
BLOCKS = ("body", "handlers", "orelse", "finalbody", "cases")


def statements(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every statement of a module, at any depth, in source order. Only statements can
    import, so expressions are not entered: a third of the work of ``ast.walk``, which
    the check stage does for every file of every stage's closure."""
    todo = list(reversed(body))
    while todo:
        node = todo.pop()
        yield node
        nested = [child for field in BLOCKS for child in getattr(node, field, None) or []]
        todo += reversed(nested)


def closure(entries: Iterable[str], root: Path, only: str | None = None) -> list[str]:
    """Every project file the `entries` (paths relative to `root`) run, sorted.

    `only`: follow the modules of this top-level package alone, for a `root` that holds
    other packages too (an installed package's own files among the libraries beside it
    in site-packages)."""
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
        package = tuple(package_of(current))
        for module in direct_imports(root / current, package):
            if only is not None and module.split(".")[0] != only:
                continue
            found = locate(module)
            if found is not None:
                parts = module.split(".")
                packages = (locate(".".join(parts[:i])) for i in range(1, len(parts)))
                todo += [found, *(p for p in packages if p is not None)]
    return sorted(seen)
