"""MaxLogit (Hendrycks et al., ICML 2022): the largest logit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.logits import max_rows


@register("maxlogit")
@dataclass
class MaxLogit(Detector):
    """max_c z_c."""

    logits_only = True
    paper: ClassVar[str] = "Hendrycks et al., ICML 2022"

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return max_rows(logits)
