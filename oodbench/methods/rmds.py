"""RMDS, relative Mahalanobis distance (Ren et al., 2021).

Class Gaussians as ``mahalanobis`` (oodbench/methods/shared/gaussians.py) minus the
distance to one background Gaussian of all train features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.gaussians import Gaussians, class_statistics, fit_gaussians, scatter


@register("rmds")
@dataclass
class RelativeMahalanobis(Detector):
    """Relative Mahalanobis: -min_c (d_c(x) - d_0(x)).

    d_c as ``mahalanobis`` (pooled covariance, pinvh); d_0 is the distance to one
    Gaussian with the global train mean and the global (MLE) train covariance. Since
    d_0 does not depend on c, the score is d_0(x) - min_c d_c(x), computed with one
    quadratic form (``Gaussians.relative_distance``).
    """

    paper: ClassVar[str] = "Ren et al., arXiv 2106.09022, 2021"
    reads_logits = False
    requires = frozenset({"train", "labels"})

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key)
        num_classes = data.fc.num_classes
        stats = class_statistics(train, num_classes, self.params_key, normalize=False)
        labels = np.asarray(train.labels, dtype=np.int64)
        within = scatter(train.features, stats.means, labels, False)
        self.gaussians_ = fit_gaussians(
            train, num_classes, self.params_key, stats=stats, within=within
        )
        # total scatter = within-class + between-class scatter (exact algebra), which
        # saves a second pass of N x D x D over the train features
        offsets = (stats.means - stats.shift)[stats.present]
        between = (offsets * stats.counts[stats.present, None]).T @ offsets
        sigma0 = (within + between) / len(train)
        shift = stats.shift
        from scipy import linalg  # here, not at import: the check stage loads every method

        self.background_ = Gaussians(
            shift, np.zeros((1, len(shift))), linalg.pinvh(sigma0, check_finite=False)
        )

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return self.gaussians_.relative_distance(features, self.background_.precision)
