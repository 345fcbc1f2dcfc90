"""Activation shaping (ASH, SCALE) of pooled features, and the energy of shaped features.

The reference functions act on the average-pooled feature viewed as [B, D, 1, 1] (the
ASH repository's and OpenOOD's ImageNet setup), then score with the energy
logsumexp(z). Those references assume non-negative features (post-ReLU average
pooling, as in ResNets). On features that can be negative (ViT/CLIP tokens,
pre-activation heads) the formulas are applied as written: "top-k" means the k
largest *values* (not magnitudes), sums may cancel, and the ASH-S/SCALE factor
exp(s1/s2) can overflow; the scores stay well defined only where s2 != 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.methods.shared.logits import by_blocks, logsumexp_block

#: ASH percentiles of the paper's ImageNet (ResNet-50) results: ASH-P@60, ASH-B@65, ASH-S@90.
ASH_PERCENTILE = {"p": 60.0, "b": 65.0, "s": 90.0}


def kept_count(dim: int, percentile: float) -> int:
    """k = n - int(round(n * p / 100)): how many activations ASH/SCALE keep (the reference)."""
    return dim - int(np.round(dim * percentile / 100.0))


def topk_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of exactly the k largest values of each row.

    Ties at the k-th value are broken towards the lower index. The reference uses
    ``torch.topk``, whose choice among ties is unspecified; only ASH-B (which writes
    the same fill value at every kept position) can tell the difference, and only
    when ties straddle the k-th value (e.g. many exact zeros kept at low percentiles).
    """
    n = x.shape[1]
    if k <= 0:
        return np.zeros(x.shape, dtype=bool)
    if k >= n:
        return np.ones(x.shape, dtype=bool)
    kth = np.partition(x, n - k, axis=1)[:, n - k : n - k + 1]
    above = x > kth
    missing = k - above.sum(axis=1, keepdims=True)
    at = x == kth
    return above | (at & (np.cumsum(at, axis=1) <= missing))


def _sum_ratio(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """s1 / s2, with 0 where s2 == 0 (an all-zero row; the reference divides 0 by 0 -> NaN)."""
    safe = np.where(s2 == 0, np.float32(1), s2)
    return np.where(s2 == 0, np.float32(0), s1 / safe)


def ash_shape(x: np.ndarray, percentile: float, variant: str) -> np.ndarray:
    """ASH-P / ASH-B / ASH-S (Djurisic et al., ICLR 2023) of float32 rows, vectorised."""
    x = np.asarray(x, dtype=np.float32)
    k = kept_count(x.shape[1], percentile)
    mask = topk_mask(x, k)
    if variant == "b":
        fill = x.sum(axis=1, keepdims=True) / np.float32(k)
        return np.where(mask, fill, np.float32(0))
    pruned = np.where(mask, x, np.float32(0))
    if variant == "p":
        return pruned
    ratio = _sum_ratio(x.sum(axis=1), pruned.sum(axis=1))
    return pruned * np.exp(ratio)[:, None]


def scale_shape(x: np.ndarray, percentile: float) -> np.ndarray:
    """SCALE (Xu et al., ICLR 2024): x * exp(sum(x) / sum(top-k of x)), nothing pruned."""
    x = np.asarray(x, dtype=np.float32)
    mask = topk_mask(x, kept_count(x.shape[1], percentile))
    ratio = _sum_ratio(x.sum(axis=1), np.where(mask, x, np.float32(0)).sum(axis=1))
    return x * np.exp(ratio)[:, None]


def energy_block(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """logsumexp of the float32 logits x W^T + b of one block of rows."""
    w, b = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    return logsumexp_block(np.asarray(x, np.float32) @ w.T + b)


def energy_of(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    shape: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Energy of (shaped) features, ``shape`` applied to one block of rows at a time, so
    the shaping temporaries ([rows, D] masks and copies) stay block-sized; float64 [N]."""
    if shape is None:
        return by_blocks(lambda block: energy_block(block, weight, bias), x)
    return by_blocks(lambda block: energy_block(shape(block), weight, bias), x)


def check_kept(where: str, dim: int, percentile: float) -> None:
    if kept_count(dim, percentile) < 1:
        raise ParamsError(
            f"{where}.percentile: {percentile} keeps no activation of the "
            f"{dim}-dimensional features; lower it"
        )
