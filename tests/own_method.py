"""A researcher's own OOD method as it lives in their project, for the tests.

``mymethods/cosine.py`` (cosine similarity to the ID class means) imports a helper
module of its own relatively (``mymethods/common.py``); params.yaml runs it as
``cos: {method: mymethods/cosine.py:CosineToMeans}``. :func:`cosine_scores` and
:func:`auroc_loop` recompute its scores and AUROC with plain loops, independently of
the class and of oodbench's metrics.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

REFERENCE = "mymethods/cosine.py:CosineToMeans"
BLOCK = {"method": REFERENCE, "scale": 1.0}

COMMON = '''\
"""Helpers shared by this project's own methods."""

import numpy as np


def unit_rows(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
'''

COSINE = '''\
"""Cosine similarity to the ID class means: an OOD score of our own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oodbench import Detector, FitData, ParamsError

from .common import unit_rows


@dataclass
class CosineToMeans(Detector):
    """scale * max_c cos(x, mean of ID train class c)."""

    requires = frozenset({"train", "labels"})
    reads_logits = False
    grid: ClassVar[dict[str, list[Any]]] = {"scale": [0.5, 1.0]}
    paper: ClassVar[str] = "our own"

    scale: float = 1.0

    def validate(self) -> None:
        if not self.scale > 0:
            raise ParamsError(f"{self.params_key}.scale: must be > 0, got {self.scale}")

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key)
        classes = np.unique(train.labels)
        x = train.features.astype(np.float64)
        self.means_ = unit_rows(np.stack([x[train.labels == c].mean(axis=0) for c in classes]))

    def _score(self, features: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
        return self.scale * (unit_rows(features) @ self.means_.T).max(axis=1)
'''


def write_method(root: Path) -> None:
    """``mymethods/`` (a package: ``__init__.py``, ``common.py``, ``cosine.py``) in `root`."""
    folder = root / "mymethods"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / "common.py").write_text(COMMON)
    (folder / "cosine.py").write_text(COSINE)


def forget(root: Path, *names: str) -> None:
    """Drop the project's modules from this process (sys.modules, sys.path), so that the
    next test may import modules of the same names from another project folder."""
    top = {"mymethods", *names}
    for name in [m for m in sys.modules if m.split(".")[0] in top]:
        del sys.modules[name]
    while str(root.resolve()) in sys.path:
        sys.path.remove(str(root.resolve()))


def cosine_scores(train: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> list[float]:
    """The method's scores, one row at a time with Python loops: class means, then the
    largest cosine of each row with them."""
    means = []
    for c in sorted(set(labels.tolist())):
        members = [train[i].astype(np.float64) for i in range(len(train)) if labels[i] == c]
        means.append(
            [math.fsum(v[j] for v in members) / len(members) for j in range(train.shape[1])]
        )
    out = []
    for row in rows.astype(np.float64):
        norm_row = math.sqrt(math.fsum(v * v for v in row))
        best = -math.inf
        for mean in means:
            norm_mean = math.sqrt(math.fsum(v * v for v in mean))
            dot = math.fsum(a * b for a, b in zip(row, mean, strict=True))
            best = max(best, dot / (norm_row * norm_mean))
        out.append(best)
    return out


def auroc_loop(id_scores: list[float], ood_scores: list[float]) -> float:
    """P(an ID score > an OOD score) + half the ties, counted pair by pair (ID positive)."""
    wins = 0.0
    for a in id_scores:
        for b in ood_scores:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(id_scores) * len(ood_scores))
