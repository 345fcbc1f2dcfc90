"""Score tables ``scores/<bb>/<method>.parquet``: one row (dataset, index, score) per sample.

A method the backbone cannot run (``mcm`` without CLIP) leaves a table with no rows and
the reason in the Parquet metadata (``skipped``), so evaluate and report can say why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oodbench.core.errors import DataError
from oodbench.formats.arrow import column_values, numeric_array, string_array
from oodbench.formats.atomic import atomic_path

#: the columns of a score table
SCHEMA = pa.schema([("dataset", pa.string()), ("index", pa.int64()), ("score", pa.float64())])


def save_scores(path: str | Path, datasets: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Write (dataset, index, score) rows for each (name, index, scores) triple."""
    names = [name for name, _, s in datasets for _ in range(len(s))]
    index = [np.asarray(idx, np.int64) for _, idx, _ in datasets]
    scores = [np.asarray(s, np.float64) for _, _, s in datasets]
    columns = [
        string_array(names),
        numeric_array(np.concatenate(index) if index else np.empty(0), pa.int64()),
        numeric_array(np.concatenate(scores) if scores else np.empty(0), pa.float64()),
    ]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """{dataset: float64 scores} in the table's order (datasets and rows)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores missing; run `dvc repro` to compute them")
    table = pq.ParquetFile(path).read(columns=["dataset", "score"])  # no pyarrow.dataset
    # not Array.to_numpy, which imports pandas (formats/arrow.py)
    names = np.array(table["dataset"].to_pylist(), dtype=object)
    scores = column_values(table, "score", pa.float64())
    _, first = np.unique(names, return_index=True)
    return {str(names[i]): scores[names == names[i]] for i in sorted(first)}


SKIPPED = b"skipped"


def save_skipped(path: str | Path, reason: str) -> None:
    """An empty score table recording why the method was not run."""
    schema = SCHEMA.with_metadata({SKIPPED: reason.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(schema.empty_table(), tmp)


def skipped_reason(path: str | Path) -> str | None:
    """Why the method behind a score table was skipped; None when it ran."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores missing; run `dvc repro` to compute them")
    metadata = pq.read_schema(path).metadata or {}
    reason = metadata.get(SKIPPED)
    return None if reason is None else reason.decode()
