"""Activation shaping and feature-geometry scores from cached penultimate features + fc.

All six methods act on the classifier's input x (D) and the classifier (W, b); they
ignore the ``logits`` argument and recompute z = x W^T + b in float32 from the fitted
classifier, so that the logits always match the W they are combined with.

Shaping (ASH, SCALE) follows the reference functions applied to the average-pooled
feature viewed as [B, D, 1, 1] (the ASH repository's and OpenOOD's ImageNet setup), then
scores with the energy logsumexp(z). Those references assume non-negative features
(post-ReLU average pooling, as in ResNets). On features that can be negative (ViT/CLIP
tokens, pre-activation heads) the formulas are applied as written: "top-k" means the
k largest *values* (not magnitudes), sums may cancel, and the ASH-S/SCALE factor
exp(s1/s2) can overflow; the scores stay well defined only where s2 != 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import sparse
from scipy.special import logsumexp

from stages.errors import DataError, ParamsError
from stages.heads import labels_in_head_order
from stages.methods.base import Detector, FitData, register

#: ASH percentiles of the paper's ImageNet (ResNet-50) results: ASH-P@60, ASH-B@65, ASH-S@90.
ASH_PERCENTILE = {"p": 60.0, "b": 65.0, "s": 90.0}


def kept_count(dim: int, percentile: float) -> int:
    """k = n - int(round(n * p / 100)): how many activations ASH/SCALE keep (the reference)."""
    return dim - int(np.round(dim * percentile / 100.0))


def topk_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of exactly the k largest values of each row.

    Ties at the k-th value are broken towards the lower index. The reference uses
    ``torch.topk``, whose choice among ties is unspecified; only ASH-B (which writes
    the same fill value at every kept position) can tell the difference, and only
    when ties straddle the k-th value (e.g. many exact zeros kept at low percentiles).
    """
    n = x.shape[1]
    if k <= 0:
        return np.zeros(x.shape, dtype=bool)
    if k >= n:
        return np.ones(x.shape, dtype=bool)
    kth = np.partition(x, n - k, axis=1)[:, n - k : n - k + 1]
    above = x > kth
    missing = k - above.sum(axis=1, keepdims=True)
    at = x == kth
    return above | (at & (np.cumsum(at, axis=1) <= missing))


def _sum_ratio(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """s1 / s2, with 0 where s2 == 0 (an all-zero row; the reference divides 0 by 0 -> NaN)."""
    safe = np.where(s2 == 0, np.float32(1), s2)
    return np.where(s2 == 0, np.float32(0), s1 / safe)


def ash_shape(x: np.ndarray, percentile: float, variant: str) -> np.ndarray:
    """ASH-P / ASH-B / ASH-S (Djurisic et al., ICLR 2023) of float32 rows, vectorised."""
    x = np.asarray(x, dtype=np.float32)
    k = kept_count(x.shape[1], percentile)
    mask = topk_mask(x, k)
    if variant == "b":
        fill = x.sum(axis=1, keepdims=True) / np.float32(k)
        return np.where(mask, fill, np.float32(0))
    pruned = np.where(mask, x, np.float32(0))
    if variant == "p":
        return pruned
    ratio = _sum_ratio(x.sum(axis=1), pruned.sum(axis=1))
    return pruned * np.exp(ratio)[:, None]


def scale_shape(x: np.ndarray, percentile: float) -> np.ndarray:
    """SCALE (Xu et al., ICLR 2024): x * exp(sum(x) / sum(top-k of x)), nothing pruned."""
    x = np.asarray(x, dtype=np.float32)
    mask = topk_mask(x, kept_count(x.shape[1], percentile))
    ratio = _sum_ratio(x.sum(axis=1), np.where(mask, x, np.float32(0)).sum(axis=1))
    return x * np.exp(ratio)[:, None]


def _energy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    z = np.asarray(x, np.float32) @ np.asarray(weight, np.float32).T + np.asarray(bias, np.float32)
    return logsumexp(z, axis=1)


def train_mean(data: FitData, method: str) -> np.ndarray:
    """Mean ID train feature, ``np.mean(train, axis=0)`` on float32 exactly as the references."""
    return np.mean(np.asarray(data.require_train(method).features, np.float32), axis=0)


def _check_percentile(where: str, key: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value < 100.0:
        raise ParamsError(f"{where}.{key}: must be in [0, 100), got {value}")


def _check_kept(where: str, dim: int, percentile: float) -> None:
    if kept_count(dim, percentile) < 1:
        raise ParamsError(
            f"{where}.percentile: {percentile} keeps no activation of the "
            f"{dim}-dimensional features; lower it"
        )


@register("ash")
@dataclass
class ASH(Detector):
    """Activation SHaping (Djurisic et al., ICLR 2023), then energy.

    Keep the k = D - round(D p / 100) largest activations of each sample and zero the
    rest; ``variant`` p keeps them as they are, b replaces them by sum(x) / k, s scales
    them by exp(sum(x) / sum(kept)). Default ASH-S: OpenOOD's ``ash`` is ASH-S at
    percentile 90, the paper's best ImageNet setting. ``percentile`` null takes the
    paper's ImageNet value for the variant (P 60, B 65, S 90).
    """

    # OpenOOD's ASH sweep
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [65, 70, 75, 80, 85, 90, 95]}

    variant: Literal["p", "b", "s"] = "s"
    percentile: float | None = None

    def validate(self) -> None:
        _check_percentile(self.params_key, "percentile", self.percentile)

    @property
    def percentile_(self) -> float:
        return ASH_PERCENTILE[self.variant] if self.percentile is None else self.percentile

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        _check_kept(self.params_key, features.shape[1], self.percentile_)
        shaped = ash_shape(features, self.percentile_, self.variant)
        return _energy(shaped, self.fc_.weight, self.fc_.bias)


@register("scale")
@dataclass
class SCALE(Detector):
    """SCALE (Xu et al., ICLR 2024): energy of x * exp(sum(x) / sum(top-k of x)).

    Same k as ASH; the whole feature is scaled, nothing is pruned. Percentile 85 is
    the paper's ImageNet setting and OpenOOD's default.
    """

    # OpenOOD's SCALE sweep
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [65, 70, 75, 80, 85, 90, 95]}

    percentile: float = 85.0

    def validate(self) -> None:
        _check_percentile(self.params_key, "percentile", self.percentile)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        _check_kept(self.params_key, features.shape[1], self.percentile)
        shaped = scale_shape(features, self.percentile)
        return _energy(shaped, self.fc_.weight, self.fc_.bias)


@register("dice")
@dataclass
class DICE(Detector):
    """DICE (Sun & Li, ECCV 2022): energy with a weight matrix sparsified by contribution.

    contrib = mean_train(x)[None, :] * W (C x D); keep the weights whose contribution
    is strictly above ``np.percentile(contrib, p)`` (linear) and zero the rest, then
    energy of x W_masked^T + b. p = 70 is the paper's ImageNet setting (the DICE code's
    ``--p 70``; its CIFAR setting and OpenOOD's default is 90).
    """

    requires = frozenset({"train"})

    p: float = 70.0

    def validate(self) -> None:
        _check_percentile(self.params_key, "p", self.p)

    def fit(self, data: FitData) -> DICE:
        super().fit(data)
        weight = np.asarray(data.fc.weight, np.float32)
        contrib = train_mean(data, self.name)[None, :] * weight
        self.threshold_ = float(np.percentile(contrib, self.p))
        self.masked_weight_ = np.where(contrib > self.threshold_, weight, np.float32(0))
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return _energy(features, self.masked_weight_, self.fc_.bias)


@register("she")
@dataclass
class SHE(Detector):
    """SHE (Zhang et al., ICLR 2023): inner product with the stored pattern of the prediction.

    The pattern of class c is the mean train feature of the samples labelled c *and*
    predicted c (argmax z); the score of x is <x, pattern[argmax z(x)]>, the
    ``inner_product`` metric of the reference. A class with no correctly classified
    train sample has no pattern: ``empty: zeros`` (default) scores its predictions 0,
    ``empty: nan`` reproduces the reference's mean of nothing (NaN). "Labelled c" is in
    the classifier's class order: a list with named classes is mapped to it by name,
    and its rows of a class the classifier lacks are never correct.
    """

    requires = frozenset({"train", "labels"})

    empty: Literal["zeros", "nan"] = "zeros"

    def fit(self, data: FitData) -> SHE:
        super().fit(data)
        train = data.require_train(self.name)
        x = np.asarray(train.features, np.float32)
        if not np.any(np.asarray(train.labels) >= 0):
            raise DataError(
                f"method {self.name!r} needs labelled ID train features; "
                f"{train.dataset} has no labels"
            )
        labels = labels_in_head_order(train, data.fc)  # -1 never equals a prediction
        pred = np.argmax(data.fc.logits(x), axis=1)
        correct = labels == pred
        classes = data.fc.num_classes
        counts = np.bincount(pred[correct], minlength=classes).astype(np.float64)
        rows = np.flatnonzero(correct)
        onehot = sparse.csr_matrix(
            (np.ones(len(rows)), (pred[rows], np.arange(len(rows)))), shape=(classes, len(rows))
        )
        sums = onehot @ x[rows].astype(np.float64)
        fill = 0.0 if self.empty == "zeros" else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            patterns = np.where(counts[:, None] > 0, sums / counts[:, None], fill)
        self.patterns_ = patterns.astype(np.float32)
        self.empty_classes_ = np.flatnonzero(counts == 0)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        pred = np.argmax(self.fc_.logits(x), axis=1)
        return np.einsum("nd,nd->n", x, self.patterns_[pred])


@register("fdbd")
@dataclass
class FDBD(Detector):
    """fDBD (Liu & Qin, ICML 2024): feature distance to the decision boundaries.

    With c = argmax z, the distance of x to the boundary between c and j is
    |z_c - z_j| / ||w_c - w_j||; the score sums it over j != c and divides by
    ||x - mean_train|| (``distance_as_normalizer: true``, the paper) or by ||x||
    (``false``, OpenOOD's alternative). Summing instead of averaging over the C - 1
    classes is the reference code's and does not change any ranking.
    """

    requires = frozenset({"train"})

    distance_as_normalizer: bool = True

    def fit(self, data: FitData) -> FDBD:
        super().fit(data)
        self.train_mean_ = train_mean(data, self.name)
        w = np.asarray(data.fc.weight, np.float64)
        self.sq_norms_ = np.einsum("cd,cd->c", w, w)
        return self

    def _denominators(self, classes: np.ndarray) -> np.ndarray:
        """||w_p - w_j|| for the rows p in `classes` (1 on the diagonal, as the reference)."""
        w = np.asarray(self.fc_.weight, np.float64)
        sq = self.sq_norms_[classes, None] + self.sq_norms_[None, :] - 2.0 * (w[classes] @ w.T)
        denom = np.sqrt(np.maximum(sq, 0.0))
        denom[np.arange(len(classes)), classes] = 1.0
        return denom

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        z = self.fc_.logits(x)
        pred = np.argmax(z, axis=1)
        classes, rows = np.unique(pred, return_inverse=True)
        gaps = np.abs(z - z.max(axis=1, keepdims=True)).astype(np.float64)
        distance = np.sum(gaps / self._denominators(classes)[rows], axis=1)
        centre = x - self.train_mean_ if self.distance_as_normalizer else x
        return distance / np.linalg.norm(centre.astype(np.float64), axis=1)


@register("nci")
@dataclass
class NCI(Detector):
    """NCI (Liu & Qin, CVPR 2025), neural-collapse inspired.

    score = <w_c, x - mean_train> / ||x - mean_train|| + alpha * ||x||_1 with
    c = argmax z: the alignment of the centred feature with the predicted class's
    weight vector (not normalised by ||w_c||, as the reference code) plus an L1-norm
    filter term. alpha = 1e-4 is OpenOOD's default (its sweep: 1e-4 ... 1e-1); the
    paper tunes alpha per model.
    """

    requires = frozenset({"train"})

    alpha: float = 1e-4

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ParamsError(f"{self.params_key}.alpha: must be >= 0, got {self.alpha}")

    def fit(self, data: FitData) -> NCI:
        super().fit(data)
        self.train_mean_ = train_mean(data, self.name)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        pred = np.argmax(self.fc_.logits(x), axis=1)
        centred = (x - self.train_mean_).astype(np.float64)
        w = np.asarray(self.fc_.weight, np.float64)[pred]
        align = np.einsum("nd,nd->n", w, centred) / np.linalg.norm(centred, axis=1)
        return align + self.alpha * np.abs(x.astype(np.float64)).sum(axis=1)
