"""MCM (Ming et al., NeurIPS 2022): CLIP zero-shot maximum concept matching.

s_c = cos(normalize(x P), t_c) with x the stored pre-projection image embedding, P the
CLIP image projection and t_c the prompt-ensemble text embedding of class c (both kept
in the fc file by the fc stage for CLIP backbones); the score is max_c softmax(s / T)
with T = 1 and no x100 logit scale (scores.md). It ignores the fc's own W, b, so it
scores the same whatever ``fc:`` the backbone uses (plp, probe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

from stages.errors import ParamsError
from stages.heads import clip_tensors, zero_shot_logits
from stages.methods.base import Detector, FitData, register


@register("mcm")
@dataclass
class MCM(Detector):
    """max softmax(cos(normalize(x P), t_c) / T); T=1 as in MCM."""

    temperature: float = 1.0

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ParamsError(f"{self.params_key}.temperature: must be > 0, got {self.temperature}")

    def fit(self, data: FitData) -> MCM:
        super().fit(data)
        self.projection_, self.text_ = clip_tensors(data.fc, self.name)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        s = zero_shot_logits(features, self.projection_, self.text_, scale=1.0)
        return softmax(s / self.temperature, axis=1).max(axis=1)
