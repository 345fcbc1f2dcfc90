"""MSP, the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import positive
from oodbench.methods.shared.logits import max_softmax_rows


@register("msp")
@dataclass
class MSP(Detector):
    """max_c softmax(z / T)_c; T = 1 is the reference."""

    logits_only = True
    paper: ClassVar[str] = "Hendrycks & Gimpel, ICLR 2017"

    temperature: float = 1.0

    def validate(self) -> None:
        positive(self.params_key, "temperature", self.temperature)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return max_softmax_rows(logits, self.temperature)
