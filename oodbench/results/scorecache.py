"""Scores of unchanged datasets, reused when a score stage reruns.

DVC reruns a method's score stage when any of its inputs changes, a new OOD set in
``benchmark.ood`` included. The scores of a dataset whose own inputs did not change are
the same numbers, so each is kept in ``scores/.cache/<bb>/<method>/<dataset>-<key>.npz``
(its rows' manifest index and scores), keyed by everything it depends on: the method's
resolved spec and code digest, the classifier file, the identity of what the detector
fits on (the ID train and val feature folders, whose ``info.json`` lists the sha256 of
every shard, their class records, the one-class setting, a precomputed subspace) and the
dataset's own feature folder. A new OOD set then costs its extraction, one fit and its
own scoring. The cache only grows: ``rm -rf scores/.cache`` reclaims it at any time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from oodbench.formats.atomic import atomic_path
from oodbench.formats.features import file_digest, folder_digest
from oodbench.formats.paths import SCORES, classes_record_path, fc_path, features_dir
from oodbench.formats.specs import code_digest, dumps
from oodbench.methods import Detector, code_group

CACHE = SCORES / ".cache"


def method_digest(settings: dict, hyperparameters: dict) -> str:
    """The method's identity: the sha256 of its key, method and hyperparameters (with
    their defaults filled in), not of the whole spec, which also lists the datasets
    scored: a new OOD set must not change the fit's key. The same bytes as the method
    spec held when it held exactly these, so entries cached then still match."""
    kept = {
        "hyperparameters": hyperparameters,
        "key": settings["key"],
        "method": settings["method"],
    }
    return hashlib.sha256(dumps(kept).encode()).hexdigest()


def fit_key(
    detector: Detector,
    settings: dict,
    backbone: str,
    source: str,
    precomputed: Path | None = None,
) -> str:
    """The identity of everything a fitted detector depends on; `settings`: the method's
    spec (oodbench/pipeline/resolve.py score_spec), with the datasets it scores."""
    needs_train = bool(detector.requires & {"train", "labels"})
    spec = settings["scoring"]
    parts = {
        "method": method_digest(settings, detector.hyperparameters()),
        "code": file_digest(code_digest(code_group(settings["key"], detector.name))),
        "fc": file_digest(fc_path(backbone)),
        "train": folder_digest(features_dir(source, spec["id_train"])) if needs_train else None,
        "train_classes": file_digest(classes_record_path(spec["id_train"])),
        "val": folder_digest(features_dir(source, spec["id_val"])),
        "val_classes": file_digest(classes_record_path(spec["id_val"])),
        "one_class": spec["one_class"],
        "precomputed": file_digest(precomputed) if precomputed is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def entry(backbone: str, method: str, dataset: str, source: str, fit: str) -> Path:
    """The cache file of one dataset's scores under fit identity `fit`."""
    key = hashlib.sha256((fit + folder_digest(features_dir(source, dataset))).encode())
    return CACHE / backbone / method / f"{dataset}-{key.hexdigest()[:20]}.npz"


def load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(manifest index, scores) of a cached dataset, or None when there is no entry."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return stored["index"], stored["score"]


def save(path: Path, index: np.ndarray, scores: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, index=np.asarray(index, np.int64), score=np.asarray(scores, np.float64))
