"""Mahalanobis (Lee et al., NeurIPS 2018): the closest class-conditional Gaussian.

The fit (class means, shared precision, blocked float64 distances) is in
oodbench/methods/shared/gaussians.py, shared with ``rmds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.gaussians import fit_gaussians


@register("mahalanobis")
@dataclass
class Mahalanobis(Detector):
    """-min_c (x - mu_c)^T P (x - mu_c), squared and without the 1/2.

    ``covariance``: ``pooled`` (default, ViM benchmark: MLE of the class-centred train
    features, divide by N, scipy pinvh) or ``class_average`` (PLP: unweighted mean of
    per-class unbiased covariances, true inverse). ``normalize``: L2-normalise every
    feature first (Mahalanobis++, Mueller & Hein 2025).
    """

    paper: ClassVar[str] = "Lee et al., NeurIPS 2018; Mahalanobis++: Mueller & Hein, 2025"
    reference: ClassVar[str] = "https://github.com/haoqiwang/vim"
    reads_logits = False
    requires = frozenset({"train", "labels"})

    covariance: Literal["pooled", "class_average"] = "pooled"
    normalize: bool = False

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key)
        self.gaussians_ = fit_gaussians(
            train, data.fc.num_classes, self.params_key, self.covariance, self.normalize
        )

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return -self.gaussians_.min_distance(features)
