"""NCI (Liu & Qin, CVPR 2025): neural-collapse inspired alignment with the predicted class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import classifier_logits
from oodbench.methods.shared.statistics import train_mean


@register("nci")
@dataclass
class NCI(Detector):
    """NCI (Liu & Qin, CVPR 2025), neural-collapse inspired.

    score = <w_c, x - mean_train> / ||x - mean_train|| + alpha * ||x||_1 with
    c = argmax z: the alignment of the centred feature with the predicted class's
    weight vector (not normalised by ||w_c||, as the reference code) plus an L1-norm
    filter term. alpha = 1e-4 is OpenOOD's default (its sweep: 1e-4 ... 1e-1); the
    paper tunes alpha per model.
    """

    paper: ClassVar[str] = "Liu & Qin, CVPR 2025"

    requires = frozenset({"train"})

    alpha: float = 1e-4

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ParamsError(f"{self.params_key}.alpha: must be >= 0, got {self.alpha}")

    def _fit(self, data: FitData) -> None:
        self.train_mean_ = train_mean(data, self.params_key)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float32)
        pred = np.argmax(classifier_logits(self.fc_, x, logits), axis=1)
        centred = (x - self.train_mean_).astype(np.float64)
        w = np.asarray(self.fc_.weight, np.float64)[pred]
        align = np.einsum("nd,nd->n", w, centred) / np.linalg.norm(centred, axis=1)
        return align + self.alpha * np.abs(x.astype(np.float64)).sum(axis=1)
