"""Code from the user's own project, named in params.yaml as ``path/file.py:Name``.

A researcher benchmarks their own method (``methods.<key>.method``) or model
(``backbones.<bb>.model``) without editing the installed package: the reference names
a file relative to the project root and an object in it. The file is imported under the
module name its path spells (``mymethods/cosine.py`` -> ``mymethods.cosine``) with the
project root first on ``sys.path``, exactly as ``python -c "import mymethods.cosine"``
run in the root would import it, so the file's own imports of project-local modules
(``import mymethods.common``, ``from . import common``) work as they do in the user's
scripts and tests. Which project files an import pulls in is read from the source by
oodbench/pipeline/closure.py: they become code dependencies of the stages that run them.

Every failure is one line that names the params key and the file (and, for an error
raised while importing, the file's line); ``OODBENCH_DEBUG=1`` keeps the traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from oodbench.core.errors import OodbenchError, ParamsError

#: ``OODBENCH_DEBUG=1``: errors from user code keep their full traceback (core/entry.py)
DEBUG_ENV = "OODBENCH_DEBUG"
_REF_RE = re.compile(r"(?P<path>[^:]+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_MODULE_PART_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UserCodeError(OodbenchError):
    """The user's own code (a method or model named in params.yaml) raised an exception;
    the message names the params key and the user's ``file.py:LINE``."""


def debug() -> bool:
    """Whether the user asked for full tracebacks (``OODBENCH_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def is_reference(value: Any) -> bool:
    """Whether a params value names user code (``something.py:Name``) rather than a
    registered name (``knn``, ``resnet18``)."""
    return isinstance(value, str) and ".py:" in value


@dataclass(frozen=True)
class CodeRef:
    """``path/file.py:Name``: a file relative to the project root and an object in it."""

    path: str  # POSIX, relative to the project root
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.name}"

    @property
    def module(self) -> str:
        """The module name the file is imported under (``a/b.py`` -> ``a.b``)."""
        return ".".join(PurePosixPath(self.path).with_suffix("").parts)

    @classmethod
    def parse(cls, ref: Any, where: str) -> CodeRef:
        """Parse a params value; a malformed one is a ParamsError naming `where`."""
        match = _REF_RE.fullmatch(ref) if isinstance(ref, str) else None
        if match is None:
            raise ParamsError(
                f"params.yaml: {where}: expected 'path/to/file.py:Name' (a file relative to "
                f"the project root and a class or function in it), got {ref!r}"
            )
        path = PurePosixPath(match["path"].replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise ParamsError(
                f"params.yaml: {where}: {match['path']} must be a path inside the project, "
                "relative to its root (DVC tracks only files in the project)"
            )
        bad = [p for p in path.with_suffix("").parts if not _MODULE_PART_RE.fullmatch(p)]
        if bad:
            raise ParamsError(
                f"params.yaml: {where}: {path}: {bad[0]!r} is not a Python module name "
                "(letters, digits and '_', not starting with a digit); rename the folder or file"
            )
        return cls(path=path.as_posix(), name=match["name"])


def load(ref: CodeRef, root: Path, where: str) -> Any:
    """Import ``ref.path`` from the project at `root` and return ``ref.name`` from it."""
    file = (root / ref.path).resolve()
    if not file.is_file():
        raise ParamsError(
            f"params.yaml: {where}: file {ref.path} not found (paths are relative to the "
            f"project root, {root.resolve()})"
        )
    module = import_file(ref, root, where)
    if not hasattr(module, ref.name):
        defined = sorted(
            n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
        )
        raise ParamsError(
            f"params.yaml: {where}: {ref.path} defines no {ref.name!r}"
            + (f"; it defines {', '.join(defined)}" if defined else "")
        )
    return getattr(module, ref.name)


def import_file(ref: CodeRef, root: Path, where: str) -> Any:
    """The module of ``ref.path``, imported with the project root first on sys.path."""
    _enter_project(str(root.resolve()), ref.module)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(ref.module)
    except SyntaxError as err:
        line = f":{err.lineno}" if err.lineno else ""
        raise ParamsError(
            f"{_relative(err.filename, root) or ref.path}{line}: syntax error ({err.msg}) in "
            f"the code of {where}"
        ) from err
    except Exception as err:  # the user's module raised while importing
        raise ParamsError(f"{where}: importing {ref.path} failed: {describe(err, root)}") from err
    found = Path(getattr(module, "__file__", "") or "").resolve()
    if found != (root / ref.path).resolve():
        raise ParamsError(
            f"params.yaml: {where}: the module name {ref.module!r} of {ref.path} is already "
            f"taken by {found or 'a built-in module'}; rename the file or its folder"
        )
    return module


#: the project roots whose files this process imported, each with the top-level module
#: names imported from it and whether oodbench put the root on sys.path: one process may
#: load the code of several projects in turn (a notebook, a test session), and two
#: projects may both hold a ``mynets/resnet.py``
_projects: dict[str, tuple[set[str], bool]] = {}


def _enter_project(root_text: str, module: str) -> None:
    """Put the project at `root_text` first on sys.path, forgetting the modules that
    another project's files were imported as, so that this one's import afresh."""
    for other, (tops, inserted) in list(_projects.items()):
        if other == root_text:
            continue
        prefix = os.path.join(other, "")
        for name in [n for n in sys.modules if n.split(".")[0] in tops]:
            places = [getattr(sys.modules[name], "__file__", None) or ""]
            places += [str(p) for p in getattr(sys.modules[name], "__path__", None) or []]
            if any(place.startswith(prefix) for place in places):
                del sys.modules[name]
        if inserted and other in sys.path:
            sys.path.remove(other)
        del _projects[other]
    tops, inserted = _projects.get(root_text, (set(), root_text not in sys.path))
    if inserted:
        if root_text in sys.path:
            sys.path.remove(root_text)
        sys.path.insert(0, root_text)
    tops.add(module.split(".")[0])
    _projects[root_text] = (tops, inserted)


def describe(err: BaseException, root: Path) -> str:
    """``file.py:LINE: Type: message``, the line being the deepest frame of the error's
    traceback inside the project at `root` (the user's code, not the library's)."""
    frames = traceback.extract_tb(err.__traceback__)
    inside = [f for f in frames if _relative(f.filename, root) is not None]
    text = f"{type(err).__name__}: {err}"
    if not inside:
        return text
    frame = inside[-1]
    return f"{_relative(frame.filename, root)}:{frame.lineno}: {text}"


def _relative(filename: str | None, root: Path) -> str | None:
    """`filename` relative to the project root, or None when it lies outside (or is the
    installed oodbench package inside a clone: that is the library, not the user's code)."""
    if not filename:
        return None
    try:
        relative = Path(filename).resolve().relative_to(root.resolve())
    except ValueError:
        return None
    if relative.parts and relative.parts[0] == "oodbench":
        return None
    return relative.as_posix()
