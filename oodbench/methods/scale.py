"""SCALE (Xu et al., ICLR 2024): energy of features scaled by their activation ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import percent
from oodbench.methods.shared.shaping import check_kept, energy_of, scale_shape


@register("scale")
@dataclass
class SCALE(Detector):
    """SCALE (Xu et al., ICLR 2024): energy of x * exp(sum(x) / sum(top-k of x)).

    Same k as ASH; the whole feature is scaled, nothing is pruned. Percentile 85 is
    the paper's ImageNet setting and OpenOOD's default.
    """

    paper: ClassVar[str] = "Xu et al., ICLR 2024"
    reads_logits = False

    # OpenOOD's SCALE sweep
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [65, 70, 75, 80, 85, 90, 95]}

    percentile: float = 85.0

    def validate(self) -> None:
        percent(self.params_key, "percentile", self.percentile)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        check_kept(self.params_key, features.shape[1], self.percentile)
        percentile = self.percentile
        return energy_of(
            features, self.fc_.weight, self.fc_.bias, shape=lambda x: scale_shape(x, percentile)
        )
