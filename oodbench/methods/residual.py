"""Residual (Wang et al., CVPR 2022): minus the norm of the feature outside the ViM subspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import register
from oodbench.methods.shared.subspace import SubspaceDetector


@register("residual")
@dataclass
class Residual(SubspaceDetector):
    """Residual: -||(x - u) NS||, the ViM residual alone (same subspace as vim)."""

    paper: ClassVar[str] = "Wang, Li, Feng & Zhang, CVPR 2022"
    reference: ClassVar[str] = "https://github.com/haoqiwang/vim"
    reads_logits = False

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return -self.fit_.residual(features).astype(np.float64)
