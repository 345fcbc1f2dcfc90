"""GEN+ReAct (GEN repository): GEN of the softmax of ReAct-clipped logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import softmax

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.checks import fraction
from oodbench.methods.shared.clipping import clip_threshold, clipped_logits
from oodbench.methods.shared.entropy import check_gen, generalized_entropy


@register("gen_react")
@dataclass
class GENReAct(Detector):
    """GEN of softmax(min(x, c) W^T + b).

    c is the numpy 'linear' ``quantile`` (default 0.99) of all elements of the ID
    train features, exactly the threshold of ``react``.
    """

    paper: ClassVar[str] = "Liu, Lochman & Zach, CVPR 2023"
    reference: ClassVar[str] = "https://github.com/XixiLiu95/GEN"
    requires = frozenset({"train"})

    gamma: float = 0.1
    M: int = 100
    quantile: float = 0.99

    def validate(self) -> None:
        check_gen(self.params_key, self.gamma, self.M)
        fraction(self.params_key, "quantile", self.quantile)

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key).features
        self.clip_ = clip_threshold(train, self.quantile)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        clipped = clipped_logits(features, self.clip_, self.fc_.weight, self.fc_.bias)
        return generalized_entropy(softmax(clipped, axis=1), self.gamma, self.M)
