"""Local ReAct (GEN repository): energy of logits clipped at each dataset's own quantile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.methods.base import Detector, register
from oodbench.methods.shared.checks import fraction
from oodbench.methods.shared.clipping import clip_threshold, clipped_energy
from oodbench.methods.shared.threads import ordered_map

#: rows per block spread over threads (each is scored in the smaller blocks of by_blocks)
ROWS = 4096


@register("local_react")
@dataclass
class LocalReAct(Detector):
    """Energy of min(x, c_D) W^T + b with c_D the quantile of dataset D's own features.

    Every dataset passed to :meth:`score` is clipped at the numpy 'linear' ``quantile``
    (default 0.9995) of all elements of *its own* feature matrix, then scored with
    logsumexp. The score of a sample therefore depends on the other samples of its
    dataset (``per_dataset``): score whole datasets, never batches or single images.
    No fit is needed beyond the classifier.
    """

    paper: ClassVar[str] = "Liu, Lochman & Zach, CVPR 2023 (GEN repository)"
    reads_logits = False
    per_dataset = "clips each dataset at a quantile of its own features, meaningless for one image"

    quantile: float = 0.9995

    def validate(self) -> None:
        fraction(self.params_key, "quantile", self.quantile)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The score stage hands over the whole dataset: its fixed blocks of rows are
        spread over threads here, one BLAS thread each (oodbench/methods/shared/threads.py)."""
        clip = clip_threshold(features, self.quantile)
        w, b = self.fc_.weight, self.fc_.bias
        blocks = ordered_map(
            lambda s: clipped_energy(features[s : s + ROWS], clip, w, b),
            range(0, len(features), ROWS),
        )
        return np.concatenate([np.empty(0, np.float64), *blocks])
