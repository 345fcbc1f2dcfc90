"""fDBD (Liu & Qin, ICML 2024): distance to the decision boundaries, normalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import classifier_logits
from oodbench.methods.shared.statistics import train_mean


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

    paper: ClassVar[str] = "Liu & Qin, ICML 2024"

    requires = frozenset({"train"})

    distance_as_normalizer: bool = True

    def _fit(self, data: FitData) -> None:
        self.train_mean_ = train_mean(data, self.params_key)
        w = np.asarray(data.fc.weight, np.float64)
        self.sq_norms_ = np.einsum("cd,cd->c", w, w)

    def _denominators(self, classes: np.ndarray) -> np.ndarray:
        """||w_p - w_j|| for the rows p in `classes` (1 on the diagonal, as the reference)."""
        w = np.asarray(self.fc_.weight, np.float64)
        sq = self.sq_norms_[classes, None] + self.sq_norms_[None, :] - 2.0 * (w[classes] @ w.T)
        denom = np.sqrt(np.maximum(sq, 0.0))
        denom[np.arange(len(classes)), classes] = 1.0
        return denom

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        z = classifier_logits(self.fc_, x, logits)
        pred = np.argmax(z, axis=1)
        classes, rows = np.unique(pred, return_inverse=True)
        gaps = np.abs(z - z.max(axis=1, keepdims=True)).astype(np.float64)
        distance = np.sum(gaps / self._denominators(classes)[rows], axis=1)
        centre = x - self.train_mean_ if self.distance_as_normalizer else x
        return distance / np.linalg.norm(centre.astype(np.float64), axis=1)
