"""ASH, activation shaping (Djurisic et al., ICLR 2023), then energy.

Which variant reproduces which table: the ASH paper's best ImageNet setting is ASH-S at
percentile 90 (``variant: s``, the default here); OpenOOD v1.5's ``ash`` postprocessor
runs ASH-B (``ASHNet.forward_threshold`` calls ``ash_b``) at percentile 90, i.e.
``{method: ash, variant: b, percentile: 90}``. The default is written out in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import percent
from oodbench.methods.shared.shaping import ASH_PERCENTILE, ash_shape, check_kept, energy_of


@register("ash")
@dataclass
class ASH(Detector):
    """Activation SHaping (Djurisic et al., ICLR 2023), then energy.

    Keep the k = D - round(D p / 100) largest activations of each sample and zero the
    rest; ``variant`` p keeps them as they are, b replaces them by sum(x) / k, s scales
    them by exp(sum(x) / sum(kept)). Default ASH-S at 90, the paper's best ImageNet
    setting; OpenOOD's ``ash`` is ASH-B at 90 (module docstring). ``percentile`` null
    takes the paper's ImageNet value for the variant (P 60, B 65, S 90).
    """

    paper: ClassVar[str] = "Djurisic et al., ICLR 2023"
    reads_logits = False

    # OpenOOD's ASH sweep
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [65, 70, 75, 80, 85, 90, 95]}

    variant: Literal["p", "b", "s"] = "s"
    percentile: float | None = None

    def validate(self) -> None:
        percent(self.params_key, "percentile", self.percentile)

    @property
    def percentile_(self) -> float:
        return ASH_PERCENTILE[self.variant] if self.percentile is None else self.percentile

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        check_kept(self.params_key, features.shape[1], self.percentile_)
        percentile, variant = self.percentile_, self.variant
        return energy_of(
            features,
            self.fc_.weight,
            self.fc_.bias,
            shape=lambda x: ash_shape(x, percentile, variant),
        )
