"""ViM, Virtual-logit Matching (Wang et al., CVPR 2022): energy minus the scaled residual.

The subspace fit (origin u = -pinv(W) b, null space NS, alpha) is in
oodbench/methods/shared/subspace.py, shared with ``residual``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oodbench.methods.base import register
from oodbench.methods.shared.logits import logsumexp_rows
from oodbench.methods.shared.subspace import SubspaceDetector


@register("vim")
@dataclass
class ViM(SubspaceDetector):
    """ViM: logsumexp(z) - alpha * ||(x - u) NS|| (higher = more ID)."""

    paper: ClassVar[str] = "Wang, Li, Feng & Zhang, CVPR 2022"
    reference: ClassVar[str] = "https://github.com/haoqiwang/vim"

    # OpenOOD sweeps dim [256, 1000]; 512 is the ViM rule for 768 <= D < 2048.
    # Points with dim >= D are skipped by `tune`.
    grid: ClassVar[dict[str, list[Any]]] = {"dim": [256, 512, 1000]}

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        energy = logsumexp_rows(np.asarray(logits, dtype=np.float32))  # float32 math
        virtual_logit = self.fit_.residual(features) * np.float32(self.fit_.alpha)
        return energy - virtual_logit.astype(np.float64)
