"""Dataset manifests ``data/manifests/<ds>.parquet``: one row per listed image.

Columns: ``index`` (int64, datalist order), ``path`` (relative posix), ``label`` (int64,
-1 = unknown), ``size`` (bytes, -1 when unknown), ``status`` ("ok" or a short reason).
Key-value metadata: ``dataset`` and ``root``.

Class names of a datalist's labels (``datalists/<ds>.classes.txt``, line i = label i)
travel next to its manifest as ``data/manifests/<ds>.classes.json`` (``classes`` null
when the list has no classes file): a file of its own, so that naming the classes does
not change the manifest and hence does not rerun feature extraction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path, write_text

OK = "ok"
COLUMNS = ("index", "path", "label", "size", "status")
SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("label", pa.int64()),
        ("size", pa.int64()),
        ("status", pa.string()),
    ]
)


@dataclass(frozen=True)
class ListClasses:
    """The class names of a datalist's labels: ``names[label]``, in the list's own order."""

    names: list[str]
    source: str  # the classes file they were read from, named in every message


def write_manifest(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write a manifest table (``SCHEMA`` plus dataset/root metadata) atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_manifest(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The manifest table and its metadata (dataset, root), checked for shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: manifest missing; run `dvc repro` (or `oodbench materialize --dataset "
            f"{path.stem}`) to build it"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(
            f"{path}: unreadable manifest ({err}); delete it and rerun `dvc repro`"
        ) from err
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: not a manifest (missing columns {', '.join(missing)}); rerun `dvc repro`"
        )
    raw_meta = table.schema.metadata or {}
    meta = {
        k.decode(): v.decode() for k, v in raw_meta.items() if k not in (b"pandas", b"ARROW:schema")
    }
    for key in ("dataset", "root"):
        if key not in meta:
            raise DataError(f"{path}: manifest metadata lacks {key!r}; rerun `dvc repro`")
    frame = table.select(list(COLUMNS)).to_pandas()
    if not frame["index"].equals(pd.Series(range(len(frame)), dtype="int64", name="index")):
        raise DataError(
            f"{path}: index column is not 0..N-1; the manifest is corrupt, rerun `dvc repro`"
        )
    return frame, meta


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
