"""Generalized ENtropy (GEN, Liu, Lochman & Zach, CVPR 2023) and GEN on ReAct-clipped logits.

GEN scores a softmax distribution by the generalized entropy of its M largest
probabilities, G(p) = sum_j p_j^g (1 - p_j)^g, and negates it (low entropy = ID).
The reference (``generalized_entropy`` in the GEN repository, also OpenOOD's
``GENPostprocessor``) sorts the probabilities ascending, keeps the last M and sums;
``M >= C`` therefore keeps every class. Unlike the Shannon entropy in the same
repository, p^g with g > 0 is finite at p = 0 (0^g = 0) and at p = 1 ((1-p)^g = 0),
so a probability that underflows to 0 needs no guard; ``1 - p`` is clipped at 0 in
case rounding ever pushes p above 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import softmax

from stages.errors import ParamsError
from stages.methods.base import Detector, FitData, register
from stages.methods.react import clip_threshold, clipped_logits


def generalized_entropy(probs: np.ndarray, gamma: float, top_m: int) -> np.ndarray:
    """-sum over the top-M probabilities of p^g (1-p)^g, computed in the dtype of `probs`.

    Sorting (rather than partitioning) keeps the reference's summation order, so the
    float32 result is the reference's bit for bit up to numpy's pairwise summation.
    """
    probs = np.asarray(probs)
    top = np.sort(probs, axis=1)[:, -top_m:]
    rest = np.clip(1 - top, 0, None)
    return -np.sum(top**gamma * rest**gamma, axis=1)


def _validate_gen(where: str, gamma: float, top_m: int) -> None:
    if not gamma > 0:
        raise ParamsError(f"{where}.gamma: must be > 0, got {gamma}")
    if top_m < 1:
        raise ParamsError(f"{where}.M: must be an integer >= 1, got {top_m}")


@register("gen")
@dataclass
class GEN(Detector):
    """GEN: -sum_{top-M j} p_j^gamma (1 - p_j)^gamma of p = softmax(z).

    Defaults are the paper's ImageNet setting, gamma = 0.1 and M = 100; M >= C uses
    every class (the paper's CIFAR setting is M = C).
    """

    # OpenOOD's GEN sweep: gamma [0.01, 0.1, 0.5, 1, 2] x M [10, 50, 100]
    grid: ClassVar[dict[str, list[Any]]] = {
        "gamma": [0.01, 0.1, 0.5, 1.0, 2.0],
        "M": [10, 50, 100],
    }

    gamma: float = 0.1
    M: int = 100

    def validate(self) -> None:
        _validate_gen(self.params_key, self.gamma, self.M)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return generalized_entropy(softmax(logits, axis=1), self.gamma, self.M)


@register("gen_react")
@dataclass
class GENReAct(Detector):
    """GEN+ReAct (GEN repository): GEN of softmax(min(x, c) W^T + b).

    c is the numpy 'linear' ``quantile`` (default 0.99) of all elements of the ID
    train features, exactly the threshold of ``react``.
    """

    requires = frozenset({"train"})

    gamma: float = 0.1
    M: int = 100
    quantile: float = 0.99

    def validate(self) -> None:
        _validate_gen(self.params_key, self.gamma, self.M)
        if not 0.0 < self.quantile <= 1.0:
            raise ParamsError(f"{self.params_key}.quantile: must be in (0, 1], got {self.quantile}")

    def fit(self, data: FitData) -> GENReAct:
        super().fit(data)
        self.clip_ = clip_threshold(data.require_train(self.name).features, self.quantile)
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        clipped = clipped_logits(features, self.clip_, self.fc_.weight, self.fc_.bias)
        return generalized_entropy(softmax(clipped, axis=1), self.gamma, self.M)
