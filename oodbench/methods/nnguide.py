"""NNGuide (Park, Jung & Teoh, ICCV 2023): nearest-neighbour guidance of the energy score."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import logsumexp

from oodbench.core.errors import ParamsError
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.neighbours import energies, to_bank, topk_inner, unit_rows


@register("nnguide")
@dataclass
class NNGuide(Detector):
    """NNGuide (Park et al., ICCV 2023), as OpenOOD runs it.

    The bank holds normalised train features each scaled by its energy
    (guide_t = t / ||t|| * logsumexp(z_t)); a query's guidance is the mean of its k
    largest inner products with the bank, and the score is guidance * energy(x)
    (energy = logsumexp of the logits). Defaults are OpenOOD's: k=100 over a bank of
    ``bank_fraction``=1% of train. OpenOOD takes the first batches of its shuffled
    loader; we take a random subset drawn with ``seed``, so the bank is reproducible
    (``bank_fraction: 1.0`` uses every train row).
    """

    paper: ClassVar[str] = "Park, Jung & Teoh, ICCV 2023"
    reference: ClassVar[str] = "https://github.com/Jingkang50/OpenOOD"
    requires = frozenset({"train"})

    k: int = 100
    bank_fraction: float = 0.01
    seed: int = 0

    def validate(self) -> None:
        if self.k < 1:
            raise ParamsError(f"{self.params_key}.k: must be >= 1, got {self.k}")
        if not 0.0 < self.bank_fraction <= 1.0:
            raise ParamsError(
                f"{self.params_key}.bank_fraction: must be in (0, 1], got {self.bank_fraction}"
            )

    def bank_rows(self, n: int) -> np.ndarray:
        """Indices of the train rows in the bank: all, or a seeded random subset."""
        size = min(n, math.ceil(n * self.bank_fraction))
        if size == n:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.seed).choice(n, size=size, replace=False))

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key).features
        rows = self.bank_rows(len(train))
        if self.k > len(rows):
            raise ParamsError(
                f"{self.params_key}.k: {self.k} neighbours but the bank has {len(rows)} rows "
                f"({self.bank_fraction} of {len(train)}); raise bank_fraction or lower k"
            )
        bank = np.asarray(train[rows], dtype=np.float32)
        guide = unit_rows(bank) * energies(bank, data.fc)[:, None].astype(np.float32)
        self.bank_ = to_bank(guide)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        guidance = topk_inner(unit_rows(features), self.bank_, self.k).astype(np.float64)
        energy = logsumexp(np.asarray(logits, dtype=np.float32), axis=1).astype(np.float64)
        return guidance.mean(axis=1) * energy
