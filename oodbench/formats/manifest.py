"""Dataset manifests ``data/manifests/<ds>.parquet``: one row per listed image.

Columns: ``index`` (int64, datalist order), ``path`` (relative posix), ``label`` (int64,
-1 = unknown), ``size`` (bytes, -1 when unknown), ``status`` ("ok" or a short reason).
Key-value metadata: ``dataset`` and ``root``.

The class names of the list's labels travel beside it in a record of their own
(oodbench/formats/class_names.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path

if TYPE_CHECKING:
    import pandas as pd

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


def write_manifest(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write a manifest table (``SCHEMA`` plus dataset/root metadata) atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_manifest(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The manifest table and its metadata (dataset, root), checked for shape."""
    import pandas as pd

    table, meta = read_manifest_table(path)
    frame = table.select(list(COLUMNS)).to_pandas()
    if not frame["index"].equals(pd.Series(range(len(frame)), dtype="int64", name="index")):
        raise DataError(
            f"{path}: index column is not 0..N-1; the manifest is corrupt, rerun `dvc repro`"
        )
    return frame, meta


def count_not_ok(path: str | os.PathLike[str]) -> int:
    """How many listed images materialize recorded as unreadable (status not ``ok``),
    read without pandas (the evaluate stage starts without it)."""
    table, _ = read_manifest_table(path)
    return sum(status != OK for status in table.column("status").to_pylist())


def read_manifest_table(path: str | os.PathLike[str]) -> tuple[pa.Table, dict[str, str]]:
    """The manifest as an Arrow table and its metadata, checked for columns and keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: manifest missing; run `dvc repro` (or `oodbench materialize --dataset "
            f"{path.stem}`) to build it"
        )
    try:
        table = pq.ParquetFile(path).read()  # not read_table: it imports pyarrow.dataset
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
    return table, meta
