"""DICE (Sun & Li, ECCV 2022): energy through a weight matrix sparsified by contribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.checks import percent
from oodbench.methods.shared.shaping import energy_of
from oodbench.methods.shared.statistics import train_mean


@register("dice")
@dataclass
class DICE(Detector):
    """DICE (Sun & Li, ECCV 2022): energy with a weight matrix sparsified by contribution.

    contrib = mean_train(x)[None, :] * W (C x D); keep the weights whose contribution
    is strictly above ``np.percentile(contrib, p)`` (linear) and zero the rest, then
    energy of x W_masked^T + b. p = 70 is the paper's ImageNet setting (the DICE code's
    ``--p 70``; its CIFAR setting and OpenOOD's default is 90).
    """

    paper: ClassVar[str] = "Sun & Li, ECCV 2022"
    reads_logits = False

    requires = frozenset({"train"})

    p: float = 70.0

    def validate(self) -> None:
        percent(self.params_key, "p", self.p)

    def _fit(self, data: FitData) -> None:
        weight = np.asarray(data.fc.weight, np.float32)
        contrib = train_mean(data, self.params_key)[None, :] * weight
        self.threshold_ = float(np.percentile(contrib, self.p))
        self.masked_weight_ = np.where(contrib > self.threshold_, weight, np.float32(0))

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return energy_of(features, self.masked_weight_, self.fc_.bias)
