"""GEN+ReAct (GEN repository): GEN of the softmax of ReAct-clipped logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.checks import fraction
from oodbench.methods.shared.clipping import clip_threshold, clipped_logits
from oodbench.methods.shared.entropy import check_gen, generalized_entropy
from oodbench.methods.shared.logits import by_blocks, softmax_block


@register("gen_react")
@dataclass
class GENReAct(Detector):
    """GEN of softmax(min(x, c) W^T + b).

    c is the numpy 'linear' ``quantile`` (default 0.99) of all elements of the ID
    train features, exactly the threshold of ``react``.
    """

    paper: ClassVar[str] = "Liu, Lochman & Zach, CVPR 2023"
    reference: ClassVar[str] = "https://github.com/XixiLiu95/GEN"
    reads_logits = False
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
        w, b, clip = self.fc_.weight, self.fc_.bias, self.clip_

        def block(x: np.ndarray) -> np.ndarray:
            probs = softmax_block(clipped_logits(x, clip, w, b))
            return generalized_entropy(probs, self.gamma, self.M)

        return by_blocks(block, features)
