"""The ViM subspace (Wang et al., CVPR 2022), shared by ``vim`` and ``residual``.

Both scores measure how far a feature lies from the principal subspace of the ID
train features, taken about the origin ``u = -pinv(W) b`` (the point the classifier
maps to zero logits). ViM adds the energy of the logits and scales the residual by
``alpha`` so that the two terms have the same mean over train. The subspace fit is
the expensive part (a D x D second moment over 200k rows and its eigendecomposition),
so one fit is shared by ``vim`` and ``residual`` within a process: see :func:`fit_vim`.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.methods.base import Detector, FitData

#: rows per block when streaming over train: bounds temporaries to ~30 MB at D=768, C=1000
CHUNK_ROWS = 8192

DimRule = Literal["current", "legacy", "moodv2"]


def principal_dim(rule: DimRule | int, num_features: int, num_classes: int) -> int:
    """The principal dimension DIM for feature dim D, per the named rule or an integer.

    ``current`` is the current ViM benchmark, ``legacy`` the GEN / old ViM rule,
    ``moodv2`` the MOODv2 rule (C instead of 1000 for D >= 2048).
    """
    d = num_features
    if rule == "current":
        return 1000 if d >= 2048 else (512 if d >= 768 else d // 2)
    if rule == "legacy":
        return 1000 if d >= 2048 else 512
    if rule == "moodv2":
        return num_classes if d >= 2048 else (512 if d >= 768 else d // 2)
    return int(rule)


@dataclass(frozen=True)
class ViMFit:
    """What ViM and Residual learn from train: origin u, null-space basis NS, alpha."""

    origin: np.ndarray  # float32 [D], u = -pinv(W) b
    null_space: np.ndarray  # float32 [D, D - DIM], eigenvectors of the smallest eigenvalues
    alpha: float  # mean train max-logit / mean train residual norm
    dim: int

    def residual(self, features: np.ndarray) -> np.ndarray:
        """||(x - u) NS|| per row, in float32 as the reference, streamed in blocks."""
        x = np.asarray(features)
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), CHUNK_ROWS):
            block = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float32) - self.origin
            out[start : start + CHUNK_ROWS] = np.linalg.norm(block @ self.null_space, axis=1)
        return out


# Fits keyed by the identity of (features, W, b) plus DIM. Weak references make a stale
# id (an array freed and its address reused) miss instead of returning a wrong fit, and
# keep the cache from holding 600 MB of train features alive.
_CACHE: OrderedDict[tuple[int, int, int, int], tuple[tuple[weakref.ref, ...], ViMFit]] = (
    OrderedDict()
)
_CACHE_SIZE = 4


def fit_vim(features: np.ndarray, fc: Linear, dim: int) -> ViMFit:
    """Fit the ViM subspace once per (train features, classifier, DIM) in this process.

    The arrays must not be modified in place between calls (they are keyed by identity).
    """
    arrays = (features, fc.weight, fc.bias)
    key = (*(id(a) for a in arrays), dim)
    hit = _CACHE.get(key)
    if hit is not None and all(ref() is a for ref, a in zip(hit[0], arrays, strict=True)):
        _CACHE.move_to_end(key)
        return hit[1]
    fit = _fit_vim_uncached(features, fc, dim)
    try:
        refs = tuple(weakref.ref(a) for a in arrays)
    except TypeError:  # not weak-referenceable: do not cache rather than risk a stale hit
        return fit
    _CACHE[key] = (refs, fit)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fit


def _fit_vim_uncached(features: np.ndarray, fc: Linear, dim: int) -> ViMFit:
    x = np.asarray(features)
    n, d = x.shape
    if n == 0:
        raise DataError("ViM: the ID train features are empty")
    w = np.asarray(fc.weight, dtype=np.float32)
    b = np.asarray(fc.bias, dtype=np.float32)
    origin = -(np.linalg.pinv(w) @ b)  # float32 pinv of float32 W, as the reference
    sigma = np.zeros((d, d), dtype=np.float64)
    max_logit_sum = 0.0
    for start in range(0, n, CHUNK_ROWS):
        block = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float32)
        centred = block - origin
        sigma += centred.T @ centred  # float32 block product, float64 accumulation
        max_logit_sum += float((block @ w.T + b).max(axis=1).sum(dtype=np.float64))
    sigma /= n
    # eigh returns ascending eigenvalues: the first D - DIM columns span the residual space
    _, vectors = np.linalg.eigh(sigma)
    null_space = np.ascontiguousarray(vectors[:, : d - dim], dtype=np.float32)
    partial = ViMFit(origin=origin, null_space=null_space, alpha=1.0, dim=dim)
    residual_mean = float(partial.residual(x).mean(dtype=np.float64))
    if not residual_mean > 0:
        raise DataError(
            "ViM: the train features have no component outside the principal subspace "
            "(mean residual norm is 0); alpha is undefined. Use a smaller methods.vim.dim"
        )
    alpha = (max_logit_sum / n) / residual_mean
    return ViMFit(origin=origin, null_space=null_space, alpha=alpha, dim=dim)


@dataclass
class SubspaceDetector(Detector):
    """Shared hyperparameter and fit of ViM and Residual.

    ``dim``: the principal dimension, ``current`` (default, ViM benchmark:
    1000 if D >= 2048, 512 if D >= 768, else D // 2), ``legacy`` (1000 if D >= 2048 else
    512; GEN and the first ViM release), ``moodv2`` (C instead of 1000) or an integer.
    """

    requires = frozenset({"train"})

    dim: DimRule | int = "current"

    def validate(self) -> None:
        if isinstance(self.dim, bool) or (
            not isinstance(self.dim, int) and self.dim not in ("current", "legacy", "moodv2")
        ):
            raise ParamsError(
                f"{self.params_key}.dim: {self.dim!r} is not 'current', 'legacy', "
                "'moodv2' or an integer"
            )
        if isinstance(self.dim, int) and self.dim < 0:
            raise ParamsError(f"{self.params_key}.dim: must be >= 0, got {self.dim}")

    def _fit(self, data: FitData) -> None:
        train = data.require_train(self.params_key)
        d = train.features.shape[1]
        dim = principal_dim(self.dim, d, data.fc.num_classes)
        if dim >= d:
            raise ParamsError(
                f"{self.params_key}.dim: the principal dimension {dim} (from {self.dim!r}) "
                f"must be smaller than the feature dimension {d}, or no residual is left; "
                "give a smaller integer"
            )
        self.fit_ = fit_vim(train.features, data.fc, dim)
