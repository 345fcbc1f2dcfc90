"""Feature directories ``features/<bb>/<ds>/``: one per backbone x dataset.

  ``shard-NNNNN.features.npy``  float32 [rows, D]   the classifier's input
  ``shard-NNNNN.logits.npy``    float32 [rows, C]   the model head's logits (when it has one)
  ``index.parquet``             index, label, path  one row per feature row, in order
  ``info.json``                 backbone, dataset, dims, shard list with row counts and sha256

Dense matrices are NPY (memory-mappable, ~10x faster than Parquet lists); per-row
metadata is a small Parquet sidecar. ``info.json`` is written last: a directory
without it is unfinished.

Checksums are verified once per artifact: a reader checks every shard's sha256 (while
reading it, so each file is read once), except inside a DVC stage (``DVC_STAGE`` set),
where DVC has hashed the directory as a dependency before running the command. Shapes
and row counts are checked always.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oodbench.core.errors import DataError
from oodbench.formats.arrow import column_values
from oodbench.formats.atomic import atomic_path, write_text
from oodbench.formats.class_names import ListClasses

if TYPE_CHECKING:  # writers are handed a DataFrame; readers need no pandas (stage start-up)
    import pandas as pd

FORMAT_VERSION = 1
#: set by DVC for the command of every stage it runs (dvc/stage/run.py)
DVC_STAGE_ENV = "DVC_STAGE"
#: bytes per read (and hash update) of a shard
READ_BYTES = 1 << 24


@dataclass
class FeatureSet:
    """Features of one dataset under one backbone, rows in manifest order."""

    dataset: str
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N], -1 when unknown
    index: np.ndarray  # int64 [N], the manifest row of each feature row
    logits: np.ndarray | None = None  # float32 [N, C], the model head's own logits
    #: names of the labels when the datalist has a classes file; None: labels are taken
    #: as the classifier's own class indices (oodbench/heads/labels.py labels_in_head_order)
    classes: ListClasses | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; "absent" when there is none (part of an identity)."""
    return sha256_file(path) if path.is_file() else "absent"


def folder_digest(folder: Path) -> str:
    """A feature folder's identity: its info.json (every shard's sha256) and row index."""
    return file_digest(folder / "info.json") + file_digest(folder / "index.parquet")


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def write_shard_array(directory: Path, shard: int, kind: str, array: np.ndarray) -> str:
    """Write one shard array atomically; return its sha256."""
    dest = directory / f"{shard_name(shard)}.{kind}.npy"
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))
    return sha256_file(dest)


def write_feature_info(directory: Path, info: dict, index: pd.DataFrame | dict[str, Any]) -> None:
    """Write the row index (index, label, path: a DataFrame or a dict of columns) and
    info.json last: a directory without info.json is unfinished."""
    with atomic_path(directory / "index.parquet") as tmp:
        if isinstance(index, dict):
            pq.write_table(pa.table(index), tmp)
        else:
            index.reset_index(drop=True).to_parquet(tmp, index=False)
    write_text(directory / "info.json", json.dumps({"format": FORMAT_VERSION, **info}, indent=1))


def write_feature_dir(
    directory: Path,
    info: dict,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    logits: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
    shard_rows: int = 4096,
) -> None:
    """A whole feature directory from arrays in memory: shards of `shard_rows` rows
    (features, and the head's `logits` when given), the index (rows 0..N-1 with their
    `labels` and `paths`) and info.json last, holding `info` (backbone, dataset, ...)
    with the dimensions and the shard list filled in. For importers, benchmarks and
    tests; extraction writes its shards one by one as batches arrive."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(features)
    arrays = {"features": features, "logits": logits}
    shards = []
    for shard, start in enumerate(range(0, max(n, 1), shard_rows)):
        rows = slice(start, start + shard_rows)
        digests = {
            kind: write_shard_array(directory, shard, kind, array[rows])
            for kind, array in arrays.items()
            if array is not None
        }
        count = len(features[rows])
        shards.append({"name": shard_name(shard), "rows": count, "sha256": digests})
    index = {
        "index": np.arange(n, dtype=np.int64),
        "label": np.asarray(labels, dtype=np.int64),
        "path": [""] * n if paths is None else list(paths),
    }
    dims = {
        "feature_dim": int(features.shape[1]),
        "num_classes": 0 if logits is None else int(logits.shape[1]),
        "rows": n,
    }
    write_feature_info(directory, {**info, **dims, "shards": shards}, index)


def read_feature_info(directory: str | Path) -> dict:
    directory = Path(directory)
    info_path = directory / "info.json"
    if not info_path.is_file():
        raise DataError(
            f"{info_path}: missing; the feature directory is unfinished or absent. "
            "Run `dvc repro` to (re)extract it"
        )
    try:
        return json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(
            f"{info_path}: not valid JSON ({err}); delete it and rerun `dvc repro`"
        ) from err


def verify_by_default() -> bool:
    """Whether readers check shard checksums when not told: yes, unless this process is a
    DVC stage (``DVC_STAGE`` set), whose dependencies DVC has hashed before running it."""
    return DVC_STAGE_ENV not in os.environ


def load_features(
    directory: str | Path,
    *,
    verify: bool | None = None,
    backbone: str | None = None,
    logits: bool = True,
) -> FeatureSet:
    """Read a feature directory, checking shapes, row counts and the backbone.

    Each kind of array is read into one preallocated array (no per-shard copies to
    concatenate). ``verify``: check each shard's sha256 while reading it (None:
    :func:`verify_by_default`). ``logits``: also read the model head's logits shards;
    a reader that recomputes logits from the classifier (the score stage) passes False.
    """
    directory = Path(directory)
    info = read_feature_info(directory)
    if backbone is not None and info.get("backbone") != backbone:
        raise DataError(
            f"{directory}: features were extracted with backbone {info.get('backbone')!r}, "
            f"expected {backbone!r}; rerun `dvc repro` for this backbone"
        )
    verify = verify_by_default() if verify is None else verify
    shards = info["shards"]
    features = _read_kind(directory, shards, "features", int(info["feature_dim"]), verify)
    num_classes = int(info.get("num_classes") or 0)
    head = None
    if logits and num_classes:
        head = _read_kind(directory, shards, "logits", num_classes, verify)
    # ParquetFile, not pq.read_table: that goes through pyarrow.dataset, which imports pandas
    index = pq.ParquetFile(directory / "index.parquet").read(columns=["index", "label"])
    if len(index) != len(features):
        raise DataError(
            f"{directory}/index.parquet has {len(index)} rows but the shards hold "
            f"{len(features)}; rerun `dvc repro` to re-extract"
        )
    try:
        labels, rows = (column_values(index, c, pa.int64()) for c in ("label", "index"))
    except ValueError as err:
        raise DataError(
            f"{directory}/index.parquet: {err}; rerun `dvc repro` to re-extract"
        ) from err
    return FeatureSet(str(info["dataset"]), features, labels, rows, logits=head)


def _read_kind(
    directory: Path, shards: list[dict], kind: str, width: int, verify: bool
) -> np.ndarray:
    """Every shard of one kind read into one float32 [rows, width] array."""
    out = np.empty((sum(int(s["rows"]) for s in shards), width), np.float32)
    start = 0
    for shard in shards:
        rows = int(shard["rows"])
        expected = shard["sha256"][kind] if verify else None
        _read_shard(directory / f"{shard['name']}.{kind}.npy", out[start : start + rows], expected)
        start += rows
    return out


def _read_shard(path: Path, dest: np.ndarray, sha256: str | None) -> None:
    """Read one NPY shard into `dest` (its rows of the preallocated array), hashing the
    bytes as they arrive when `sha256` is given: the file is read once, not twice."""
    if not path.is_file():
        raise DataError(f"{path}: shard file missing; rerun `dvc repro` to re-extract")
    digest = hashlib.sha256() if sha256 is not None else None
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f, path)
            if shape != dest.shape:
                raise DataError(
                    f"{path}: shape {shape} does not match info.json; rerun `dvc repro`"
                )
            if dtype != np.dtype("<f4") or fortran:  # never written so, but still readable
                _copy_other_layout(path, dest)
                digest = None
                if sha256 is not None and sha256_file(path) != sha256:
                    raise _corrupted(path)
                return
            if digest is not None:
                header_end = f.tell()
                f.seek(0)
                digest.update(f.read(header_end))
            _read_bytes(f, memoryview(dest).cast("B"), digest, path)
            if f.read(1):
                raise DataError(f"{path}: trailing bytes after the array; rerun `dvc repro`")
    except DataError:
        # a corrupted file reads as garbage in many ways: name the checksum when it differs
        if sha256 is not None and sha256_file(path) != sha256:
            raise _corrupted(path) from None
        raise
    if digest is not None and digest.hexdigest() != sha256:
        raise _corrupted(path)


def _npy_header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from an NPY header, leaving `f` at the data."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)
    except (ValueError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: unreadable NPY file ({err}); rerun `dvc repro`") from err


def _read_bytes(f: BinaryIO, view: memoryview, digest: Any, path: Path) -> None:
    for start in range(0, len(view), READ_BYTES):
        part = view[start : start + READ_BYTES]
        got = f.readinto(part)
        if got != len(part):
            raise DataError(f"{path}: truncated shard file; rerun `dvc repro` to re-extract")
        if digest is not None:
            digest.update(part)


def _copy_other_layout(path: Path, dest: np.ndarray) -> None:
    try:
        dest[...] = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: unreadable NPY file ({err}); rerun `dvc repro`") from err


def _corrupted(path: Path) -> DataError:
    return DataError(
        f"{path}: checksum mismatch, the file is corrupted; delete {path.parent} "
        "and rerun `dvc repro` (or `dvc checkout` to restore it from the cache)"
    )
