"""MCM (Ming et al., NeurIPS 2022): CLIP zero-shot maximum concept matching.

s_c = cos(normalize(x P), t_c) with x the stored pre-projection image embedding, P the
CLIP image projection and t_c the prompt-ensemble text embedding of class c (both kept
in the fc file by the fc stage for CLIP backbones); the score is max_c softmax(s / T)
with T = 1 and no x100 logit scale (scores.md). It ignores the fc's own W, b, so it
scores the same whatever ``fc:`` the backbone uses (plp, probe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.formats.classifier import Linear
from oodbench.heads.clip_text import CLIP_TEXT, clip_tensors, zero_shot_logits
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.checks import positive
from oodbench.methods.shared.logits import max_softmax_rows


@register("mcm")
@dataclass
class MCM(Detector):
    """max softmax(cos(normalize(x P), t_c) / T); T=1 as in MCM."""

    paper: ClassVar[str] = "Ming et al., NeurIPS 2022"
    reference: ClassVar[str] = "https://github.com/deeplearning-wisc/MCM"
    reads_logits = False

    temperature: float = 1.0

    def validate(self) -> None:
        positive(self.params_key, "temperature", self.temperature)

    def unsupported(self, fc: Linear) -> str | None:
        if CLIP_TEXT in fc.extras:
            return None
        return (
            f"{self.params_key} needs a CLIP backbone (clip: or a clip_* preset), whose fc "
            "stores the CLIP text head"
        )

    def _fit(self, data: FitData) -> None:
        self.projection_, self.text_ = clip_tensors(data.fc, self.params_key)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        s = zero_shot_logits(features, self.projection_, self.text_, scale=1.0)
        return max_softmax_rows(s, self.temperature)
