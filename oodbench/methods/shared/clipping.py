"""Activation clipping (ReAct): the threshold, the logits of clipped features, and
their energy streamed over blocks of rows."""

from __future__ import annotations

import numpy as np

from oodbench.methods.shared.logits import by_blocks, logsumexp_block


def clip_threshold(features: np.ndarray, quantile: float) -> float:
    """numpy 'linear' quantile over every element of the feature matrix."""
    return float(np.quantile(np.asarray(features).ravel(), quantile, method="linear"))


def clipped_logits(
    features: np.ndarray, clip: float, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """Logits of min(x, c) in float32: upper clip only, as the reference."""
    clipped = np.minimum(np.asarray(features, dtype=np.float32), np.float32(clip))
    return clipped @ np.asarray(weight, np.float32).T + np.asarray(bias, np.float32)


def clipped_energy(
    features: np.ndarray, clip: float, weight: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """logsumexp of the logits of min(x, c) per row (Energy+ReAct), by blocks; float64."""
    return by_blocks(lambda x: logsumexp_block(clipped_logits(x, clip, weight, bias)), features)
