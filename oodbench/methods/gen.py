"""GEN, Generalized ENtropy (Liu, Lochman & Zach, CVPR 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.entropy import check_gen, gen_of_logits


@register("gen")
@dataclass
class GEN(Detector):
    """-sum_{top-M j} p_j^gamma (1 - p_j)^gamma of p = softmax(z).

    Defaults are the paper's ImageNet setting, gamma = 0.1 and M = 100; M >= C uses
    every class (the paper's CIFAR setting is M = C). Derivation and reference details:
    oodbench/methods/shared/entropy.py.
    """

    logits_only = True
    paper: ClassVar[str] = "Liu, Lochman & Zach, CVPR 2023"
    reference: ClassVar[str] = "https://github.com/XixiLiu95/GEN"
    # OpenOOD's GEN sweep: gamma [0.01, 0.1, 0.5, 1, 2] x M [10, 50, 100]
    grid: ClassVar[dict[str, list[Any]]] = {
        "gamma": [0.01, 0.1, 0.5, 1.0, 2.0],
        "M": [10, 50, 100],
    }

    gamma: float = 0.1
    M: int = 100

    def validate(self) -> None:
        check_gen(self.params_key, self.gamma, self.M)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return gen_of_logits(logits, self.gamma, self.M)
