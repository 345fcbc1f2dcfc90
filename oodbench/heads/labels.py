"""Labels against a classifier's outputs: class order, predictions and ID accuracy.

Labels are compared with predictions only through ``labels_in_head_order``: a datalist
keeps its source's class order, so when its classes are named the labels are mapped to
the classifier's by name, never taken as its indices. A MOS group head (``fc: mos``,
oodbench/heads/groups.py) predicts through its group softmax. Numpy only: the score and
evaluate stages import it and must start without torch.
"""

from __future__ import annotations

import numpy as np

from oodbench.core.errors import DataError
from oodbench.data.classes import label_map
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.heads.groups import GROUP_OF_CLASS, group_layout


def predict_classes(fc: Linear, features: np.ndarray) -> np.ndarray:
    """Top-1 class of each row under this classifier (what ID accuracy compares to labels).

    A plain head: argmax of z. A MOS group head: per group the softmax over its slice,
    the "others" column dropped; the prediction is the class with the highest
    within-group probability over all groups (the MOS reference's
    ``calc_group_softmax_acc``: best group by its max non-others probability, then
    that group's argmax; the two coincide)."""
    z = fc.logits(features)
    if GROUP_OF_CLASS not in fc.extras:
        return z.argmax(axis=1)
    columns, starts = group_layout(fc.extras[GROUP_OF_CLASS])
    if z.shape[1] != len(columns) + len(starts):
        raise DataError(
            f"MOS head: {z.shape[1]} logits but {len(columns)} classes in {len(starts)} groups"
        )
    z = z.astype(np.float64)
    peak = np.maximum.reduceat(z, starts, axis=1)
    width = np.diff(np.append(starts, z.shape[1]))
    e = np.exp(z - np.repeat(peak, width, axis=1))
    probs = e / np.repeat(np.add.reduceat(e, starts, axis=1), width, axis=1)
    return probs[:, columns].argmax(axis=1)


def head_class_keys(fc: Linear) -> list[str]:
    """The identifier of each class ``predict_classes`` can return, in its index order:
    the class ids where the head has them (an ImageNet head's wnids), else the names; a
    MOS head's class columns only (its "others" columns are no class)."""
    keys = list(fc.class_ids if fc.class_ids is not None else fc.class_names)
    if GROUP_OF_CLASS not in fc.extras:
        return keys
    columns, _ = group_layout(fc.extras[GROUP_OF_CLASS])
    return [keys[c] for c in columns]


def labels_in_head_order(features: FeatureSet, fc: Linear) -> np.ndarray:
    """The rows' labels as classifier class indices (-1: unknown, or a class the head lacks).

    Without class names (no classes file) the labels already are head indices, the
    convention of a list made for that head. With them, each label's name is looked up
    among the head's classes (``head_class_keys``)."""
    return labels_in_order(features, head_class_keys(fc), "the classifier")


def labels_in_order(features: FeatureSet, classes: list[str], owner: str) -> np.ndarray:
    """The rows' labels as indices into `classes` by name (``label_map``), -1 where the
    label is unknown or its class is not in `classes`; unchanged without class names.

    That no labelled row maps at all means the two name different things (wnids vs
    descriptions, another dataset): an error naming the classes file."""
    labels = np.asarray(features.labels, np.int64)
    known = labels >= 0
    if features.classes is None or not known.any():
        return labels
    names, source = features.classes.names, features.classes.source
    if int(labels[known].max()) >= len(names):
        raise DataError(
            f"{source}: dataset {features.dataset!r} has label {int(labels[known].max())} but "
            f"the file names {len(names)} classes; rerun `dvc repro` to re-check the list"
        )
    to_classes = label_map(names, classes)
    mapped = np.where(known, to_classes[np.where(known, labels, 0)], -1)
    if not (mapped >= 0).any():
        raise DataError(
            f"{source}: none of the classes of dataset {features.dataset!r} ({_sample(names)}) "
            f"is a class of {owner} ({_sample(classes)}); name the classifier's classes "
            "(backbones.<bb>.classes, or a classes file for benchmark.id_train) or fix the file"
        )
    return mapped


def _sample(names: list[str], count: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:count])
    return f"{shown}, ... {len(names)} in all" if len(names) > count else shown


def accuracy(fc: Linear, features: FeatureSet) -> tuple[float | None, int]:
    """(top-1, rows it is over): rows whose label maps to a head class
    (``labels_in_head_order``); (None, 0) when no row has one."""
    labels = labels_in_head_order(features, fc)
    mapped = labels >= 0
    if not mapped.any():
        return None, 0
    hits = predict_classes(fc, features.features[mapped]) == labels[mapped]
    return float(np.mean(hits)), int(mapped.sum())


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
