"""``oodbench methods``: every registered detector with its file, paper and defaults, and
the user's own methods of the params.yaml in the working directory.

Like timm's ``list_models``: a user finds a method's file from its key in one step. A
user's own method is listed under its params key (``methods.<key>.method:
path/file.py:Class``), the name it has in every report, with its file in the project.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from oodbench.core import params as P
from oodbench.core.errors import OodbenchError
from oodbench.core.usercode import CodeRef, is_reference
from oodbench.methods.base import Detector, lookup, registry


def method_rows(pattern: str | None = None, root: Path = Path()) -> list[dict[str, str]]:
    """One row per registered method, then per user method of ``root/params.yaml``,
    whose key contains `pattern` (all when None)."""
    rows = []
    for name, cls in registry().items():
        if pattern and pattern not in name:
            continue
        rows.append(
            {
                "key": name,
                "class": cls.__name__,
                "file": source_file(cls),
                "paper": cls.paper,
                "hyperparameters": defaults_text(cls),
            }
        )
    for key, reference in user_references(root).items():
        if pattern and pattern not in key:
            continue
        rows.append(user_row(key, reference, root))
    return rows


def user_references(root: Path) -> dict[str, str]:
    """``methods.<key>`` blocks of the project's params.yaml that name a user's class."""
    path = root / P.PARAMS_FILE
    if not path.is_file():
        return {}
    blocks = P.read_params_file(path).get("methods")
    if not isinstance(blocks, dict):
        return {}
    return {
        str(key): block["method"]
        for key, block in blocks.items()
        if isinstance(block, dict) and is_reference(block.get("method"))
    }


def user_row(key: str, reference: str, root: Path) -> dict[str, str]:
    """A user method's row; one that does not load says why in place of its defaults."""
    try:
        ref = CodeRef.parse(reference, f"methods.{key}.method")
        file = ref.path
    except OodbenchError:
        file = reference
    try:
        cls = lookup(reference, f"methods.{key}", root)
    except OodbenchError as err:
        return {"key": key, "class": "-", "file": file, "paper": "", "hyperparameters": f"({err})"}
    return {
        "key": key,
        "class": cls.__name__,
        "file": file,
        "paper": cls.paper or "your own (params.yaml)",
        "hyperparameters": defaults_text(cls),
    }


def source_file(cls: type[Detector]) -> str:
    """The method's file relative to the package's parent (``oodbench/methods/knn.py``)."""
    path = Path(inspect.getfile(cls))
    return path.relative_to(Path(__file__).resolve().parents[2]).as_posix()


def defaults_text(cls: type[Detector]) -> str:
    """``k=1, temperature=0.02``; a field without a default shows as ``name=<required>``."""
    parts = []
    for f in cls.hyperparameter_fields():
        value: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        parts.append(f"{f.name}={'<required>' if value is dataclasses.MISSING else repr(value)}")
    return ", ".join(parts) or "-"


def methods_table(pattern: str | None = None, root: Path = Path()) -> str:
    """The rows as an aligned plain-text table (one line per method)."""
    rows = method_rows(pattern, root)
    if not rows:
        return f"no method key contains {pattern!r}\n"
    columns = ("key", "class", "file", "paper", "hyperparameters")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    lines = ["  ".join(c.ljust(widths.get(c, 0)) for c in columns).rstrip()]
    for row in rows:
        lines.append("  ".join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())
    return "\n".join(lines) + "\n"
