"""Feature directories ``features/<bb>/<ds>/``: one per backbone x dataset.

  ``shard-NNNNN.features.npy``  float32 [rows, D]   the classifier's input
  ``shard-NNNNN.logits.npy``    float32 [rows, C]   the model head's logits (when it has one)
  ``index.parquet``             index, label, path  one row per feature row, in order
  ``info.json``                 backbone, dataset, dims, shard list with row counts and sha256

Dense matrices are NPY (memory-mappable, ~10x faster than Parquet lists); per-row
metadata is a small Parquet sidecar. ``info.json`` is written last: a directory
without it is unfinished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path, write_text
from oodbench.formats.manifest import ListClasses

FORMAT_VERSION = 1


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


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def write_shard_array(directory: Path, shard: int, kind: str, array: np.ndarray) -> str:
    """Write one shard array atomically; return its sha256."""
    dest = directory / f"{shard_name(shard)}.{kind}.npy"
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))
    return sha256_file(dest)


def write_feature_info(directory: Path, info: dict, index: pd.DataFrame) -> None:
    """Write the row index and info.json last: a directory without info.json is unfinished."""
    with atomic_path(directory / "index.parquet") as tmp:
        index.reset_index(drop=True).to_parquet(tmp, index=False)
    write_text(directory / "info.json", json.dumps({"format": FORMAT_VERSION, **info}, indent=1))


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


def load_features(
    directory: str | Path, *, verify: bool = True, backbone: str | None = None
) -> FeatureSet:
    """Read a feature directory, checking shard checksums, shapes and the backbone."""
    directory = Path(directory)
    info = read_feature_info(directory)
    if backbone is not None and info.get("backbone") != backbone:
        raise DataError(
            f"{directory}: features were extracted with backbone {info.get('backbone')!r}, "
            f"expected {backbone!r}; rerun `dvc repro` for this backbone"
        )
    feats, logits = [], []
    for shard in info["shards"]:
        feats.append(_load_array(directory, shard, "features", verify))
        if info.get("num_classes"):
            logits.append(_load_array(directory, shard, "logits", verify))
    index = pd.read_parquet(directory / "index.parquet")
    dim = int(info["feature_dim"])
    features = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    if len(index) != len(features):
        raise DataError(
            f"{directory}/index.parquet has {len(index)} rows but the shards hold "
            f"{len(features)}; rerun `dvc repro` to re-extract"
        )
    return FeatureSet(
        dataset=str(info["dataset"]),
        features=features,
        labels=index["label"].to_numpy(np.int64),
        index=index["index"].to_numpy(np.int64),
        logits=np.concatenate(logits) if logits else None,
    )


def _load_array(directory: Path, shard: dict, kind: str, verify: bool) -> np.ndarray:
    path = directory / f"{shard['name']}.{kind}.npy"
    if not path.is_file():
        raise DataError(f"{path}: shard file missing; rerun `dvc repro` to re-extract")
    if verify and sha256_file(path) != shard["sha256"][kind]:
        raise DataError(
            f"{path}: checksum mismatch, the file is corrupted; delete {directory} "
            "and rerun `dvc repro` (or `dvc checkout` to restore it from the cache)"
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: unreadable NPY file ({err}); rerun `dvc repro`") from err
    if array.ndim != 2 or array.shape[0] != shard["rows"]:
        raise DataError(f"{path}: shape {array.shape} does not match info.json; rerun `dvc repro`")
    return np.asarray(array)
