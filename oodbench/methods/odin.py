"""ODIN (Liang et al., ICLR 2018) without input perturbation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import positive
from oodbench.methods.shared.logits import max_softmax_rows


@register("odin")
@dataclass
class ODIN(Detector):
    """max softmax(z / T) at T = 1000.

    The seeds' default eps = 0 reduces ODIN to temperature-scaled MSP, which needs no
    images; eps > 0 needs input gradients and therefore an image-level stage.
    """

    logits_only = True
    paper: ClassVar[str] = "Liang et al., ICLR 2018"

    temperature: float = 1000.0

    def validate(self) -> None:
        positive(self.params_key, "temperature", self.temperature)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return max_softmax_rows(logits, self.temperature)
