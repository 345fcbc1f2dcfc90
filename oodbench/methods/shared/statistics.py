"""Statistics of the ID train features shared by several methods."""

from __future__ import annotations

import numpy as np

from oodbench.methods.base import FitData


def train_mean(data: FitData, where: str) -> np.ndarray:
    """Mean ID train feature, ``np.mean(train, axis=0)`` on float32 exactly as the references."""
    return np.mean(np.asarray(data.require_train(where).features, np.float32), axis=0)
