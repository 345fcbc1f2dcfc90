"""NNGuide (Park, Jung & Teoh, ICCV 2023): nearest-neighbour guidance of the energy score."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.methods.base import Detector, FitData, register
from oodbench.methods.shared.logits import logsumexp_rows
from oodbench.methods.shared.neighbours import (
    Backend,
    Bank,
    energies,
    neighbour_count,
    unit_rows,
)

DEFAULT_K = 100  # OpenOOD's


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
    (``bank_fraction: 1.0`` uses every train row). ``k: null`` is the default 100, capped
    at the bank size with a warning on a small benchmark; a k set explicitly must fit
    the bank. ``backend``: ``torch`` or ``faiss``, as for ``knn``.
    """

    paper: ClassVar[str] = "Park, Jung & Teoh, ICCV 2023"
    reference: ClassVar[str] = "https://github.com/Jingkang50/OpenOOD"
    threaded_blocks = False  # the bank search threads itself (torch or faiss)
    requires = frozenset({"train"})

    k: int | None = None
    bank_fraction: float = 0.01
    seed: int = 0
    backend: Backend = "torch"

    def validate(self) -> None:
        if self.k is not None and self.k < 1:
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
        note = f"bank_fraction {self.bank_fraction} of {len(train)} train rows"
        # raising bank_fraction helps only while the train rows outnumber k; the fraction
        # is rounded up so that following the advice gives a large enough bank
        wanted = DEFAULT_K if self.k is None else self.k
        enough = math.ceil(wanted / len(train) * 1e4) / 1e4
        remedy = (
            f", raise bank_fraction to >= {enough:g}"
            if self.bank_fraction < 1.0 and wanted <= len(train)
            else ""
        )
        self.k_ = neighbour_count(self.params_key, self.k, DEFAULT_K, len(rows), note, remedy)
        bank = np.asarray(train[rows], dtype=np.float32)
        guide = unit_rows(bank) * energies(bank, data.fc)[:, None]
        self.bank_ = Bank(guide, self.backend, self.params_key)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        guidance = self.bank_.search(unit_rows(features), self.k_)[0].astype(np.float64)
        energy = logsumexp_rows(np.asarray(logits, dtype=np.float32))
        return guidance.mean(axis=1) * energy
