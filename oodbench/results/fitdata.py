"""The one loader of what a detector fits on, shared by score, predict and tune.

ID train and val carry their datalists' class names (``<manifest>.classes.json``), so a
method comparing labels with predictions (SHE) maps them to the classifier's order
wherever it is fitted; in one-class mode (``benchmark.one_class: K``) both are cut to
class K. Only feature shards are read (never the model head's logits shards: scoring
recomputes logits from the classifier). Train is read only when the method fits on it,
and not even then when the method fits from a file its own stage computed ahead
(``Detector.precomputed``, e.g. ``features/<bb>/vim_subspace.npz`` of the ``subspace``
stage) and that file records the fingerprint of this train set and classifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np

from oodbench.core.errors import DataError
from oodbench.data.oneclass import restrict
from oodbench.formats.class_names import ListClasses, load_list_classes
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet, load_features, read_feature_info
from oodbench.formats.paths import FEATURES, classes_record_path, features_dir
from oodbench.heads.labels import check_labels
from oodbench.methods import Detector, FitData, Precomputed


def named(features: FeatureSet, classes: ListClasses | None) -> FeatureSet:
    """`features` carrying its datalist's class names (None: the list has none)."""
    return dataclasses.replace(features, classes=classes)


def check_finite(features: FeatureSet) -> None:
    """NaN/Inf features would silently poison every score: name the dataset and rows."""
    x = features.features
    # one streaming reduction: a row sum is finite unless the row holds NaN/Inf (or the
    # sum overflows, which the exact check below then clears)
    suspects = np.flatnonzero(~np.isfinite(x.sum(axis=1)))
    bad_rows = suspects[~np.isfinite(x[suspects]).all(axis=1)]
    if bad_rows.size:
        raise DataError(
            f"dataset {features.dataset!r}: {bad_rows.size} feature rows hold NaN/Inf "
            f"(manifest index {features.index[bad_rows[:10]].tolist()}); re-extract them "
            "in fp32 or drop those images from the datalist"
        )


def load_id_set(backbone: str, dataset: str, fc: Linear) -> FeatureSet:
    """An ID set's features with its class names, checked finite and against the classifier."""
    features = load_features(features_dir(backbone, dataset), backbone=backbone, logits=False)
    features = named(features, load_list_classes(classes_record_path(dataset)))
    check_finite(features)
    check_labels(features, fc)
    return features


def load_train_rows(
    backbone: str, id_train: str, fc: Linear, one_class: int | None = None
) -> FeatureSet:
    """The ID train rows a detector fits on: all of them, or class `one_class`'s."""
    train = load_id_set(backbone, id_train, fc)
    # restrict builds new FeatureSets: keep the list's class names on the subset
    return named(restrict(train, one_class), train.classes)


def train_fingerprint(backbone: str, id_train: str, one_class: int | None, fc: Linear) -> str:
    """sha256 naming the train rows a fit sees and the classifier it is for.

    Hashes the train directory's info.json (which holds every shard's sha256) and
    index.parquet (row order and labels), the one-class restriction, and W and b: no
    feature shard is read, so checking a precomputed fit costs milliseconds."""
    directory = features_dir(backbone, id_train)
    read_feature_info(directory)  # a missing or unfinished directory names itself
    digest = hashlib.sha256()
    for name in ("info.json", "index.parquet"):
        digest.update((directory / name).read_bytes())
    digest.update(f"one_class={one_class}".encode())
    digest.update(np.ascontiguousarray(fc.weight, np.float32).tobytes())
    digest.update(np.ascontiguousarray(fc.bias, np.float32).tobytes())
    return digest.hexdigest()


def precomputed_path(fc_backbone: str, name: str) -> Path:
    """Where the stage computing ``name`` ahead writes it: next to the backbone's fc file
    (``features/<bb>/vim_subspace.npz``, formats/paths.py ``subspace_path``)."""
    return FEATURES / fc_backbone / name


def find_precomputed(
    detector: Detector,
    backbone: str,
    fc_backbone: str,
    id_train: str,
    one_class: int | None,
    fc: Linear,
) -> Precomputed | None:
    """The detector's precomputed fit when its file exists and is current, else None (a
    stale file is reported on stderr and ignored: the detector fits from train)."""
    if detector.precomputed is None:
        return None
    path = precomputed_path(fc_backbone, detector.precomputed)
    if not path.is_file():
        return None
    found = Precomputed(path, train_fingerprint(backbone, id_train, one_class, fc))
    if found.current():
        return found
    print(
        f"{detector.params_key}: {path} was computed from other train rows or another "
        "classifier; fitting from train instead (rerun its stage: `dvc repro`)",
        file=sys.stderr,
    )
    return None


def load_fit_data(
    backbone: str,
    detector: Detector,
    fc: Linear,
    id_train: str,
    id_val: str,
    one_class: int | None = None,
    fc_backbone: str | None = None,
) -> tuple[FitData, FeatureSet]:
    """(what `detector` fits on, all of ID val): train only when the detector reads it; in
    one-class mode the fit data keeps class `one_class` while all ID val is returned.

    `backbone` names the feature folders; `fc_backbone` the backbone whose classifier `fc`
    is, under whose folder precomputed fits are looked for (None: none are)."""
    needs_train = bool(detector.requires & {"train", "labels"})
    precomputed = None
    if needs_train and fc_backbone is not None:
        precomputed = find_precomputed(detector, backbone, fc_backbone, id_train, one_class, fc)
    train = None
    if needs_train and precomputed is None:
        train = load_train_rows(backbone, id_train, fc, one_class)
    val = load_id_set(backbone, id_val, fc)
    fit_val = named(restrict(val, one_class), val.classes)
    return FitData(fc=fc, train=train, val=fit_val, precomputed=precomputed), val
