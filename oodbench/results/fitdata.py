"""The one loader of what a detector fits on, shared by score, predict and tune.

ID train and val carry their datalists' class names (``<manifest>.classes.json``), so a
method comparing labels with predictions (SHE) maps them to the classifier's order
wherever it is fitted; in one-class mode (``benchmark.one_class: K``) both are cut to
class K. Train is read only when the method fits on it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from oodbench.core.errors import DataError
from oodbench.data.oneclass import restrict
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet, load_features
from oodbench.formats.manifest import ListClasses, load_list_classes
from oodbench.formats.paths import classes_record_path, features_dir
from oodbench.heads.labels import check_labels
from oodbench.methods import Detector, FitData


def named(features: FeatureSet, classes: ListClasses | None) -> FeatureSet:
    """`features` carrying its datalist's class names (None: the list has none)."""
    return dataclasses.replace(features, classes=classes)


def check_finite(features: FeatureSet) -> None:
    """NaN/Inf features would silently poison every score: name the dataset and rows."""
    bad_rows = np.flatnonzero(~np.isfinite(features.features).all(axis=1))
    if bad_rows.size:
        raise DataError(
            f"dataset {features.dataset!r}: {bad_rows.size} feature rows hold NaN/Inf "
            f"(manifest index {features.index[bad_rows[:10]].tolist()}); re-extract them "
            "in fp32 or drop those images from the datalist"
        )


def load_id_set(backbone: str, dataset: str, fc: Linear) -> FeatureSet:
    """An ID set's features with its class names, checked finite and against the classifier."""
    features = load_features(features_dir(backbone, dataset), backbone=backbone)
    features = named(features, load_list_classes(classes_record_path(dataset)))
    check_finite(features)
    check_labels(features, fc)
    return features


def load_fit_data(
    backbone: str,
    detector: Detector,
    fc: Linear,
    id_train: str,
    id_val: str,
    one_class: int | None = None,
) -> tuple[FitData, FeatureSet]:
    """(what `detector` fits on, all of ID val): train only when the detector reads it; in
    one-class mode the fit data keeps class `one_class` while all ID val is returned."""
    needs_train = bool(detector.requires & {"train", "labels"})
    train = load_id_set(backbone, id_train, fc) if needs_train else None
    val = load_id_set(backbone, id_val, fc)
    # restrict builds new FeatureSets: keep the lists' class names on the subsets
    fit_train = None if train is None else named(restrict(train, one_class), train.classes)
    fit_val = named(restrict(val, one_class), val.classes)
    return FitData(fc=fc, train=fit_train, val=fit_val), val
