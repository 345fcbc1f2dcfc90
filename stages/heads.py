"""What a classifier file means beyond z = x W^T + b: CLIP zero-shot logits and MOS heads.

Kept numpy-only (no torch, no timm) because the score and evaluate stages import it and
should start in about a second. The fc file's extra tensors (``Linear.extras``) are:
``clip_projection`` P [D, E] and ``clip_text`` T [C, E] (normalised prompt-ensemble
text embeddings, stages/clip.py) for CLIP backbones; ``group_of_class`` [C] for a MOS
group head (``fc: mos``), whose logits are C + G columns laid out group after group.
"""

from __future__ import annotations

import numpy as np

from stages.errors import DataError
from stages.store import Linear

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


def accuracy(fc: Linear, features: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 over rows with a known label (>= 0); None when no row has one."""
    known = np.asarray(labels) >= 0
    if not known.any():
        return None
    return float(np.mean(predict_classes(fc, features[known]) == labels[known]))
