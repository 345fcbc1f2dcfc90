"""What a classifier file means beyond z = x W^T + b: CLIP zero-shot logits and MOS heads.

Kept numpy-only (no torch, no timm) because the score and evaluate stages import it and
should start in about a second. The fc file's extra tensors (``Linear.extras``) are:
``clip_projection`` P [D, E] and ``clip_text`` T [C, E] (normalised prompt-ensemble
text embeddings, stages/clip.py) for CLIP backbones; ``group_of_class`` [C] for a MOS
group head (``fc: mos``), whose logits are C + G columns laid out group after group.

Labels are compared with predictions only through ``labels_in_head_order``: a datalist
keeps its source's class order, so when its classes are named the labels are mapped to
the classifier's by name, never taken as its indices.
"""

from __future__ import annotations

import numpy as np

from stages.datasets import label_map
from stages.errors import DataError
from stages.store import FeatureSet, Linear

CLIP_PROJECTION, CLIP_TEXT, GROUP_OF_CLASS = "clip_projection", "clip_text", "group_of_class"


def zero_shot_logits(
    features: np.ndarray, projection: np.ndarray, text: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """scale * cos(normalize(x P), t_c): MCM uses scale 1, PLP's pseudo-labels CLIP's 100."""
    z = np.asarray(features, np.float32) @ np.asarray(projection, np.float32)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return scale * (z @ np.asarray(text, np.float32).T)


def clip_tensors(fc: Linear, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, T) from the fc file, or an error saying which backbone kind provides them."""
    if CLIP_PROJECTION not in fc.extras or CLIP_TEXT not in fc.extras:
        raise DataError(
            f"method {method!r} needs the CLIP projection and text embeddings, which the fc "
            "stage stores for CLIP backbones only (backbones.<bb>: {preset: clip_b16} or clip:)"
        )
    return fc.extras[CLIP_PROJECTION], fc.extras[CLIP_TEXT]


def group_layout(group_of_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(column of each class [C], start column of each group [G]) in the MOS head's logits.

    Same layout as stages/methods/mos.py: group g's slice is [others_g, its classes in
    increasing class index]."""
    groups = np.asarray(group_of_class, np.int64)
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes + 1)[:-1]])
    order = np.argsort(groups, kind="stable")
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return starts[groups] + 1 + rank, starts


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
