"""On-disk artifact formats shared by the stages.

Feature directory ``features/<bb>/<ds>/`` (one per backbone x dataset):
  ``shard-NNNNN.features.npy``  float32 [rows, D]   the classifier's input
  ``shard-NNNNN.logits.npy``    float32 [rows, C]   the model head's logits (when it has one)
  ``index.parquet``             index, label, path  one row per feature row, in order
  ``info.json``                 backbone, dataset, dims, shard list with row counts and sha256
Dense matrices are NPY (memory-mappable, ~10x faster than Parquet lists); per-row
metadata is a small Parquet sidecar. The classifier ``fc.safetensors`` holds W [C, D],
b [C] and the class names in its metadata (never pickle). Scores are Parquet tables
(dataset, index, score).

Class names of a datalist's labels (``datalists/<ds>.classes.txt``, line i = label i)
travel next to its manifest as ``data/manifests/<ds>.classes.json`` (``classes`` null
when the list has no classes file), written by materialize and read by the stages that
compare labels with a classifier's predictions (stages/heads.py ``labels_in_head_order``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stages.atomic import atomic_path, write_text
from stages.errors import DataError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ListClasses:
    """The class names of a datalist's labels: ``names[label]``, in the list's own order."""

    names: list[str]
    source: str  # the classes file they were read from, named in every message


@dataclass
class FeatureSet:
    """Features of one dataset under one backbone, rows in manifest order."""

    dataset: str
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N], -1 when unknown
    index: np.ndarray  # int64 [N], the manifest row of each feature row
    logits: np.ndarray | None = None  # float32 [N, C], the model head's own logits
    #: names of the labels when the datalist has a classes file; None: labels are taken
    #: as the classifier's own class indices (stages/heads.py labels_in_head_order)
    classes: ListClasses | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class Linear:
    """The classifier z = x W^T + b over the features."""

    weight: np.ndarray  # float32 [C, D]
    bias: np.ndarray  # float32 [C]
    class_names: list[str]
    #: other tensors of the fc file that some methods need (stages/heads.py): the CLIP
    #: projection and text embeddings (mcm), the class -> group ids of a MOS head
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: stable identifiers of the outputs where the names are descriptions (an ImageNet
    #: head: wnids, the names a classes file holds); None: the names are the identifiers
    class_ids: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits in float32, as the reference code computes them."""
        if features.shape[1] != self.weight.shape[1]:
            raise DataError(
                f"feature dimension {features.shape[1]} does not match the classifier's "
                f"{self.weight.shape[1]}: the fc file and the features come from different "
                "backbones; rerun `dvc repro` so both are rebuilt"
            )
        w = np.asarray(self.weight, dtype=np.float32)
        b = np.asarray(self.bias, dtype=np.float32)
        return np.asarray(features, dtype=np.float32) @ w.T + b


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


def save_fc(path: str | Path, fc: Linear, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    tensors = {
        "weight": np.ascontiguousarray(fc.weight, dtype=np.float32),
        "bias": np.ascontiguousarray(fc.bias, dtype=np.float32),
    }
    meta = {
        "class_names": json.dumps(list(fc.class_names)),
        **({"class_ids": json.dumps(list(fc.class_ids))} if fc.class_ids is not None else {}),
        **(metadata or {}),
        "sha256": _tensor_digest(tensors["weight"], tensors["bias"]),
    }
    if fc.extras:
        if set(fc.extras) & set(tensors):
            raise DataError(f"{path}: extra tensors may not be named weight or bias")
        tensors |= {k: np.ascontiguousarray(v) for k, v in sorted(fc.extras.items())}
        meta["extras_sha256"] = _extras_digest(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        _sort_header(Path(tmp))


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors file with the keys of its JSON header sorted.

    The library writes its header from a hash map, in a different order on each run, so
    an identical classifier got a new file hash and DVC reran every score and evaluate
    stage after any fc rerun. Only the header changes: the tensor bytes and their offsets
    are the library's, and the header is padded with spaces to 8 bytes as the format asks."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])


def load_fc(path: str | Path) -> Linear:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classifier file missing; run `dvc repro` to build it")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
            names = [k for k in f.keys() if k not in ("weight", "bias")]  # noqa: SIM118
            extras = {k: f.get_tensor(k) for k in names}
    except Exception as err:  # safetensors raises several types on corrupt files
        raise DataError(f"{path}: unreadable classifier file ({err}); rerun `dvc repro`") from err
    extras_bad = extras and meta.get("extras_sha256") != _extras_digest(extras)
    if ("sha256" in meta and meta["sha256"] != _tensor_digest(weight, bias)) or extras_bad:
        raise DataError(
            f"{path}: checksum mismatch, the classifier file is corrupted; delete it and rerun "
            "`dvc repro` (or `dvc checkout` to restore it from the cache)"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise DataError(f"{path}: W or b holds NaN/Inf; rebuild it with `dvc repro`")
    names = json.loads(meta.get("class_names", "[]")) or [str(c) for c in range(len(bias))]
    ids = json.loads(meta["class_ids"]) if "class_ids" in meta else None
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(names) != len(bias):
        raise DataError(
            f"{path}: inconsistent shapes W{weight.shape} b{bias.shape}; rerun `dvc repro`"
        )
    if ids is not None and len(ids) != len(bias):
        raise DataError(f"{path}: {len(ids)} class ids for {len(bias)} outputs; rerun `dvc repro`")
    return Linear(weight=weight, bias=bias, class_names=names, extras=extras, class_ids=ids)


def _extras_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the extra tensors (name, dtype, shape, bytes) in name order."""
    h = hashlib.sha256()
    for name in sorted(k for k in tensors if k not in ("weight", "bias")):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{t.dtype.str}:{t.shape}".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def _tensor_digest(weight: np.ndarray, bias: np.ndarray) -> str:
    """sha256 over W then b (float32 bytes): safetensors itself has no checksum."""
    h = hashlib.sha256(np.ascontiguousarray(weight, np.float32).tobytes())
    h.update(np.ascontiguousarray(bias, np.float32).tobytes())
    return h.hexdigest()


def check_labels(features: FeatureSet, fc: Linear) -> None:
    """ID labels must index the classifier's rows; a larger one means a wrong datalist or fc.

    Labels with class names index the list's own classes (checked against the classes
    file by materialize) and reach the classifier through ``labels_in_head_order``."""
    if features.classes is not None:
        return
    too_big = np.flatnonzero(features.labels >= fc.num_classes)
    if too_big.size:
        first = int(too_big[0])
        raise DataError(
            f"dataset {features.dataset!r}: label {int(features.labels[first])} (manifest index "
            f"{int(features.index[first])}, {too_big.size} rows in all) is out of range for the "
            f"classifier's {fc.num_classes} classes; fix the datalist labels (0..C-1, -1 = "
            "unknown) or the backbone's fc"
        )


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
