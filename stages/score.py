"""Stage ``score``: fit one OOD method on ID train, score ID val and every OOD set.

Logits are recomputed from the features and the exported classifier in float32, as
the reference code does, so a probe or a MOS group head scores the same way as a
model's own head. Scores go to ``scores/<bb>/<method>.parquet`` (dataset, index, score).
ID train and val carry their datalists' class names (``<manifest>.classes.json``), so a
method comparing labels with predictions (SHE) maps them to the classifier's order.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from stages import params as P
from stages.errors import DataError
from stages.layout import fc_path, features_dir, manifest_path, scores_path
from stages.methods import FitData, from_params
from stages.oneclass import one_class_of, restrict
from stages.store import (
    FeatureSet,
    ListClasses,
    check_labels,
    classes_sidecar,
    load_fc,
    load_features,
    load_list_classes,
    save_scores,
)


def check_finite(features: FeatureSet) -> None:
    """NaN/Inf features would silently poison every score: name the dataset and rows."""
    bad_rows = np.flatnonzero(~np.isfinite(features.features).all(axis=1))
    if bad_rows.size:
        raise DataError(
            f"dataset {features.dataset!r}: {bad_rows.size} feature rows hold NaN/Inf "
            f"(manifest index {features.index[bad_rows[:10]].tolist()}); re-extract them "
            "in fp32 or drop those images from the datalist"
        )


def named(features: FeatureSet | None, classes: ListClasses | None) -> FeatureSet | None:
    """`features` carrying its datalist's class names (None: the list has none)."""
    return None if features is None else dataclasses.replace(features, classes=classes)


def main(backbone: str, method: str) -> None:
    params = P.load_params()
    methods = P.get(params, "methods", dict)
    if method not in methods:
        raise DataError(
            f"params.yaml: methods.{method} is missing; add a block for it (may be {{}})"
        )
    detector = from_params(method, methods[method])
    id_train = P.get(params, "benchmark.id_train", str)
    id_val = P.get(params, "benchmark.id_val", str)
    ood = P.get(params, "benchmark.ood", list)
    if not ood:
        raise DataError("params.yaml: benchmark.ood is empty; list at least one OOD dataset")

    fc = load_fc(fc_path(backbone))
    train_classes, val_classes = (
        load_list_classes(classes_sidecar(manifest_path(name))) for name in (id_train, id_val)
    )
    train = named(
        load_features(features_dir(backbone, id_train), backbone=backbone)
        if detector.requires & {"train", "labels"}
        else None,
        train_classes,
    )
    val = named(load_features(features_dir(backbone, id_val), backbone=backbone), val_classes)
    for fs in (train, val):
        if fs is not None:
            check_finite(fs)
            check_labels(fs, fc)
    start = time.perf_counter()
    one_class = one_class_of(params)  # None: all rows; K: fit on class K (oneclass.py)
    # restrict builds new FeatureSets: the one-class subset keeps the list's class names
    detector.fit(
        FitData(
            fc=fc,
            train=named(restrict(train, one_class), train_classes),
            val=named(restrict(val, one_class), val_classes),
        )
    )
    fit_seconds = time.perf_counter() - start

    rows = [(id_val, val.index, _score(detector, val, fc.logits))]
    for name in ood:
        fs = load_features(features_dir(backbone, name), backbone=backbone)
        check_finite(fs)
        rows.append((name, fs.index, _score(detector, fs, fc.logits)))
    save_scores(scores_path(backbone, method), rows)
    total = sum(len(r[1]) for r in rows)
    print(
        f"score {backbone}/{method}: fit {fit_seconds:.2f}s, {total} samples in "
        f"{time.perf_counter() - start - fit_seconds:.2f}s"
    )


def _score(detector, features: FeatureSet, logits_of) -> np.ndarray:
    scores = np.asarray(detector.score(features.features, logits_of(features.features)), np.float64)
    if scores.shape != (len(features),):
        raise DataError(
            f"method {detector.name!r} returned shape {scores.shape} for {len(features)} rows"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataError(
            f"method {detector.name!r} produced {bad.size} NaN/Inf scores on dataset "
            f"{features.dataset!r} (manifest index {features.index[bad[:10]].tolist()}); "
            "check its options in params.yaml (e.g. klm `empty: nan` poisons every score)"
        )
    return scores
