"""Score tables ``scores/<bb>/<method>.parquet``: one row (dataset, index, score) per sample.

A method the backbone cannot run (``mcm`` without CLIP) leaves a table with no rows and
the reason in the Parquet metadata (``skipped``), so evaluate and report can say why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path


def save_scores(path: str | Path, datasets: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Write (dataset, index, score) rows for each (name, index, scores) triple."""
    frames = [
        pd.DataFrame(
            {
                "dataset": name,
                "index": np.asarray(idx, np.int64),
                "score": np.asarray(s, np.float64),
            }
        )
        for name, idx, s in datasets
    ]
    table = pd.concat(frames, ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores missing; run `dvc repro` to compute them")
    table = pd.read_parquet(path)
    return {
        str(name): group["score"].to_numpy(np.float64)
        for name, group in table.groupby("dataset", sort=False)
    }


SKIPPED = b"skipped"


def save_skipped(path: str | Path, reason: str) -> None:
    """An empty score table recording why the method was not run."""
    schema = pa.schema(
        [("dataset", pa.string()), ("index", pa.int64()), ("score", pa.float64())],
        metadata={SKIPPED: reason.encode()},
    )
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
