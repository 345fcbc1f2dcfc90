"""Activation clipping (ReAct, Sun et al.): energy of the logits of clipped features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp

from stages.errors import ParamsError
from stages.methods.base import Detector, FitData, register


def clip_threshold(features: np.ndarray, quantile: float) -> float:
    """numpy 'linear' quantile over every element of the feature matrix."""
    return float(np.quantile(np.asarray(features).ravel(), quantile, method="linear"))


def clipped_logits(
    features: np.ndarray, clip: float, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """Logits of min(x, c) in float32: upper clip only, as the reference."""
    clipped = np.minimum(np.asarray(features, dtype=np.float32), np.float32(clip))
    return clipped @ np.asarray(weight, np.float32).T + np.asarray(bias, np.float32)


@register("react")
@dataclass
class ReAct(Detector):
    """Energy+ReAct: logsumexp(min(x, c) W^T + b).

    ``source: train`` (default, the ViM benchmark) takes c as the ``quantile`` of all
    elements of the ID train features; ``source: val`` takes it from the ID val
    features at ``percentile`` (OpenOOD's setup, percentile 90).
    """

    requires = frozenset({"train"})

    # OpenOOD sweeps percentile [85, 90, 95, 99]; the same points as train quantiles
    grid: ClassVar[dict[str, list[Any]]] = {"quantile": [0.85, 0.9, 0.95, 0.99]}

    source: Literal["train", "val"] = "train"
    quantile: float = 0.99
    percentile: float = 90.0

    def validate(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ParamsError(
                f"methods.{self.name}.quantile: must be in (0, 1], got {self.quantile}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise ParamsError(
                f"methods.{self.name}.percentile: must be in (0, 100], got {self.percentile}"
            )

    def fit(self, data: FitData) -> ReAct:
        super().fit(data)
        if self.source == "val":
            self.clip_ = clip_threshold(
                data.require_val(self.name).features, self.percentile / 100.0
            )
        else:
            self.clip_ = clip_threshold(data.require_train(self.name).features, self.quantile)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return logsumexp(
            clipped_logits(features, self.clip_, self.fc_.weight, self.fc_.bias), axis=1
        )


@register("local_react")
@dataclass
class LocalReAct(Detector):
    """Local ReAct (GEN repository): energy of logits clipped at each dataset's own quantile.

    Every dataset passed to :meth:`score` is clipped at the numpy 'linear' ``quantile``
    (default 0.9995) of all elements of *its own* feature matrix, then scored with
    logsumexp. The score of a sample therefore depends on the other samples of its
    dataset: call :meth:`score` once per whole dataset, never per batch. No fit is
    needed beyond the classifier.
    """

    quantile: float = 0.9995

    def validate(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ParamsError(
                f"methods.{self.name}.quantile: must be in (0, 1], got {self.quantile}"
            )

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        clip = clip_threshold(features, self.quantile)
        return logsumexp(clipped_logits(features, clip, self.fc_.weight, self.fc_.bias), axis=1)
