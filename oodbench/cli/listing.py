"""``oodbench methods``: every registered detector with its file, paper and defaults.

Like timm's ``list_models``: a user finds a method's file from its key in one step.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from oodbench.methods.base import Detector, registry


def method_rows(pattern: str | None = None) -> list[dict[str, str]]:
    """One row per registered method whose key contains `pattern` (all when None)."""
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
    return rows


def source_file(cls: type[Detector]) -> str:
    """The method's file relative to the package's parent (``oodbench/methods/knn.py``)."""
    path = Path(inspect.getfile(cls))
    return path.relative_to(Path(__file__).resolve().parents[2]).as_posix()


def defaults_text(cls: type[Detector]) -> str:
    instance = cls()
    return ", ".join(f"{k}={v!r}" for k, v in instance.hyperparameters().items()) or "-"


def methods_table(pattern: str | None = None) -> str:
    """The rows as an aligned plain-text table (one line per method)."""
    rows = method_rows(pattern)
    if not rows:
        return f"no method key contains {pattern!r}\n"
    columns = ("key", "class", "file", "paper", "hyperparameters")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    lines = ["  ".join(c.ljust(widths.get(c, 0)) for c in columns).rstrip()]
    for row in rows:
        lines.append("  ".join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())
    return "\n".join(lines) + "\n"
