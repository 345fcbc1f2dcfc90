"""Scores computed from the logits alone: MSP, MaxLogit, Energy, ODIN at eps=0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax

from stages.errors import ParamsError
from stages.methods.base import Detector, register


def _check_temperature(where: str, temperature: float) -> None:
    if not temperature > 0:
        raise ParamsError(f"{where}.temperature: must be > 0, got {temperature}")


@register("msp")
@dataclass
class MSP(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel): max_c softmax(z / T)_c."""

    temperature: float = 1.0

    def validate(self) -> None:
        _check_temperature(self.params_key, self.temperature)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature, axis=1).max(axis=1)


@register("maxlogit")
@dataclass
class MaxLogit(Detector):
    """Maximum logit (Hendrycks et al.): max_c z_c."""

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return logits.max(axis=1)


@register("energy")
@dataclass
class Energy(Detector):
    """Negative free energy (Liu et al.): T * logsumexp(z / T); T=1 is the reference."""

    temperature: float = 1.0

    def validate(self) -> None:
        _check_temperature(self.params_key, self.temperature)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return self.temperature * logsumexp(logits / self.temperature, axis=1)


@register("odin")
@dataclass
class ODIN(Detector):
    """ODIN without input perturbation: max softmax(z / T) at T=1000.

    The seeds' default eps=0 reduces ODIN to temperature-scaled MSP, which needs no
    images; eps>0 needs input gradients and therefore an image-level stage.
    """

    temperature: float = 1000.0

    def validate(self) -> None:
        _check_temperature(self.params_key, self.temperature)

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature, axis=1).max(axis=1)
