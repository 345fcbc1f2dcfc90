"""Activation clipping (ReAct, Sun et al.): energy of the logits of clipped features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import logsumexp

from stages.errors import ParamsError
from stages.methods.base import Detector, FitData, register

DEFAULT_QUANTILE = 0.99  # source: train (the ViM benchmark)
DEFAULT_PERCENTILE = 90.0  # source: val (OpenOOD)


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

    ``source: train`` (default, the ViM benchmark) takes c as the ``quantile`` (default
    0.99) of all elements of the ID train features; ``source: val`` takes it from the ID
    val features at ``percentile`` (default 90, OpenOOD's setup). Each source reads one
    of the two fields, so setting the other one is an error rather than silently
    ignored (e.g. ``oodbench tune`` sweeping ``quantile`` on a ``source: val`` block).
    """

    requires = frozenset({"train"})

    # OpenOOD sweeps percentile [85, 90, 95, 99]; the same points as train quantiles
    grid: ClassVar[dict[str, list[Any]]] = {"quantile": [0.85, 0.9, 0.95, 0.99]}

    source: Literal["train", "val"] = "train"
    #: null: 0.99 (read with source: train only)
    quantile: float | None = None
    #: null: 90 (read with source: val only)
    percentile: float | None = None

    def validate(self) -> None:
        where = f"{self.params_key}"
        if self.quantile is not None and not 0.0 < self.quantile <= 1.0:
            raise ParamsError(f"{where}.quantile: must be in (0, 1], got {self.quantile}")
        if self.percentile is not None and not 0.0 < self.percentile <= 100.0:
            raise ParamsError(f"{where}.percentile: must be in (0, 100], got {self.percentile}")
        # the field the source does not read must stay unset, or it would be ignored
        if self.source == "train" and self.percentile is not None:
            unused, used = "percentile", "quantile"
        elif self.source == "val" and self.quantile is not None:
            unused, used = "quantile", "percentile"
        else:
            return
        raise ParamsError(
            f"{where}.{unused}: not read with source: {self.source}, which clips at "
            f"{used}; remove {unused} or change {where}.source"
        )

    def fit(self, data: FitData) -> ReAct:
        super().fit(data)
        if self.source == "val":
            percentile = DEFAULT_PERCENTILE if self.percentile is None else self.percentile
            self.clip_ = clip_threshold(data.require_val(self.name).features, percentile / 100.0)
        else:
            quantile = DEFAULT_QUANTILE if self.quantile is None else self.quantile
            self.clip_ = clip_threshold(data.require_train(self.name).features, quantile)
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
            raise ParamsError(f"{self.params_key}.quantile: must be in (0, 1], got {self.quantile}")

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        clip = clip_threshold(features, self.quantile)
        return logsumexp(clipped_logits(features, clip, self.fc_.weight, self.fc_.bias), axis=1)
