"""Energy score (Liu et al., NeurIPS 2020): the negative free energy of the logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import positive
from oodbench.methods.shared.logits import logsumexp_rows


@register("energy")
@dataclass
class Energy(Detector):
    """T * logsumexp(z / T); T = 1 equals the reference code, which has no T."""

    logits_only = True
    paper: ClassVar[str] = "Liu et al., NeurIPS 2020"

    temperature: float = 1.0

    def validate(self) -> None:
        positive(self.params_key, "temperature", self.temperature)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return logsumexp_rows(logits, self.temperature)
