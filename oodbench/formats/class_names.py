"""The class names of a datalist's labels, recorded beside its manifest.

``datalists/<ds>.classes.txt`` (line i = the name of label i) travels next to the
manifest as ``data/manifests/<ds>.classes.json`` (``classes`` null when the list has no
classes file): a file of its own, so that naming the classes does not change the
manifest and hence does not rerun feature extraction. Plain JSON, no pandas: the score
stage reads it and starts light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from oodbench.core.errors import DataError
from oodbench.formats.atomic import write_text


@dataclass(frozen=True)
class ListClasses:
    """The class names of a datalist's labels: ``names[label]``, in the list's own order."""

    names: list[str]
    source: str  # the classes file they were read from, named in every message


def classes_sidecar(manifest: str | Path) -> Path:
    """``data/manifests/<ds>.parquet`` -> ``data/manifests/<ds>.classes.json``."""
    return Path(manifest).with_suffix(".classes.json")


def save_list_classes(path: str | Path, dataset: str, classes: ListClasses | None) -> None:
    """Record a datalist's class names (or that it has none) next to its manifest."""
    record = {"dataset": dataset, "source": None, "classes": None}
    if classes is not None:
        record |= {"source": classes.source, "classes": list(classes.names)}
    write_text(Path(path), json.dumps(record, indent=1) + "\n")


def load_list_classes(path: str | Path) -> ListClasses | None:
    """The class names saved by ``save_list_classes``; None when the list has none, or
    when there is no record at all (features imported with ``oodbench import-pkl`` have
    no manifest; under DVC the stages declare the record, so it exists)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        names, source = record["classes"], record["source"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: unreadable class record ({err}); rerun `dvc repro`") from err
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: classes must be a list of names; rerun `dvc repro`")
    return ListClasses(names=names, source=str(source))
