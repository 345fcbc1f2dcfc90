"""One-class benchmark (MOODv2 ``--class_id K``): ID = class K, every other class an OOD set.

Switched on by ``benchmark.one_class: K`` (``null`` = the usual open-set benchmark).
It reuses every cached artifact: features, the classifier and the score files do not
change shape. ``score`` fits each detector on the class-K rows of ID train (and of ID
val for val-fitted options) and still scores every ID val row; ``evaluate`` then splits
the ID val scores by label into ID (class K) and one OOD set ``class_<j>`` per other
class (group ``near``: same domain, unseen class), beside the configured OOD sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.features import FeatureSet

if TYPE_CHECKING:
    import pandas as pd


def one_class_of(params: dict[str, Any]) -> int | None:
    """``benchmark.one_class`` (None when absent or null), checked to be a class index."""
    value = (params.get("benchmark") or {}).get("one_class")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParamsError(
            f"params.yaml: benchmark.one_class must be null or a class index >= 0, got {value!r}"
        )
    return value


def restrict(features: FeatureSet | None, one_class: int | None) -> FeatureSet | None:
    """The rows of class `one_class` (all rows when None): what a one-class detector fits on."""
    if features is None or one_class is None:
        return features
    keep = features.labels == one_class
    if not keep.any():
        raise DataError(
            f"benchmark.one_class: class {one_class} has no rows in dataset {features.dataset!r} "
            f"(labels present: {np.unique(features.labels).tolist()})"
        )
    return FeatureSet(
        dataset=features.dataset,
        features=features.features[keep],
        labels=features.labels[keep],
        index=features.index[keep],
        logits=None if features.logits is None else features.logits[keep],
    )


def class_set(label: int) -> str:
    return f"class_{label}"


def split_id_val(
    table: pd.DataFrame, id_val: str, val_index: np.ndarray, val_labels: np.ndarray, one_class: int
) -> dict[str, np.ndarray]:
    """ID val scores of class `one_class` under `id_val`, each other class under ``class_<j>``.

    `table` is a score file (dataset, index, score); labels are joined on the manifest
    index, so the split does not depend on row order.
    """
    import pandas as pd  # here: the score stage imports this module and starts without pandas

    rows = table[table["dataset"] == id_val]
    label_of = pd.Series(val_labels, index=val_index)
    labels = label_of.reindex(rows["index"].to_numpy()).to_numpy()
    if np.isnan(labels.astype(np.float64)).any() or (labels < 0).any():
        raise DataError(
            f"benchmark.one_class: ID val {id_val!r} has unlabelled rows or rows missing from "
            "its features; a one-class benchmark needs every ID val label"
        )
    scores = rows["score"].to_numpy(np.float64)
    labels = labels.astype(np.int64)
    if not (labels == one_class).any():
        raise DataError(f"benchmark.one_class: class {one_class} has no rows in ID val {id_val!r}")
    out = {id_val: scores[labels == one_class]}
    for label in np.unique(labels):
        if label != one_class:
            out[class_set(int(label))] = scores[labels == label]
    return out
