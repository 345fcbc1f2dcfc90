"""ReAct (Sun, Guo & Li, NeurIPS 2021): energy of the logits of clipped features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.checks import fraction, percent
from oodbench.methods.shared.clipping import clip_threshold, clipped_energy

DEFAULT_QUANTILE = 0.99  # source: train (the ViM benchmark)
DEFAULT_PERCENTILE = 90.0  # source: val (OpenOOD)


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

    paper: ClassVar[str] = "Sun, Guo & Li, NeurIPS 2021"
    reads_logits = False
    requires = frozenset({"train"})

    # OpenOOD sweeps percentile [85, 90, 95, 99]; the same points as train quantiles
    grid: ClassVar[dict[str, list[Any]]] = {"quantile": [0.85, 0.9, 0.95, 0.99]}

    source: Literal["train", "val"] = "train"
    #: null: 0.99 (read with source: train only)
    quantile: float | None = None
    #: null: 90 (read with source: val only)
    percentile: float | None = None

    def validate(self) -> None:
        where = self.params_key
        fraction(where, "quantile", self.quantile)
        percent(where, "percentile", self.percentile, upper_inclusive=True)
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

    def _fit(self, data: FitData) -> None:
        if self.source == "val":
            percentile = DEFAULT_PERCENTILE if self.percentile is None else self.percentile
            val = data.require_val(self.params_key).features
            self.clip_ = clip_threshold(val, percentile / 100.0)
        else:
            quantile = DEFAULT_QUANTILE if self.quantile is None else self.quantile
            train = data.require_train(self.params_key).features
            self.clip_ = clip_threshold(train, quantile)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return clipped_energy(features, self.clip_, self.fc_.weight, self.fc_.bias)
