"""The ViM subspace (Wang et al., CVPR 2022), shared by ``vim`` and ``residual``.

Both scores measure how far a feature lies from the principal subspace of the ID
train features, taken about the origin ``u = -pinv(W) b`` (the point the classifier
maps to zero logits). ViM adds the energy of the logits and scales the residual by
``alpha`` so that the two terms have the same mean over train. The subspace fit is
the expensive part (a D x D second moment over 200k rows and its eigendecomposition),
so it is shared two ways:

- within a process, one fit per (train, classifier, DIM): :func:`fit_vim`;
- across processes, the ``subspace`` stage (``stages/subspace.py``) computes the part
  that does not depend on DIM once per backbone, :class:`SubspaceMoments` (origin u, the
  eigenvalues and eigenvectors of the second moment about u, the mean train max-logit,
  and the mean train residual norm for every DIM), and saves it as an ``.npz``
  (:func:`save_moments`); the vim and residual score stages then fit from it without
  reading train (``FitData.precomputed``). alpha needs the mean residual *norm*, which
  no second moment gives, hence the table over every DIM (D + 1 numbers).

Both paths give the same subspace bit for bit (same blocks, same float64 second
moment, same eigh); alpha from the table differs from the in-process one by float
rounding only (float64 running sums instead of float32 norms, ~1e-7 relative).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.atomic import atomic_path
from oodbench.formats.classifier import Linear
from oodbench.methods.base import Detector, FitData
from oodbench.methods.shared.checks import IllPosedFitWarning, warn_fit
from oodbench.methods.shared.threads import blas_threads, ordered_map

#: rows per block when streaming over train: bounds temporaries to ~30 MB at D=768, C=1000
CHUNK_ROWS = 8192
#: the file the ``subspace`` stage writes under ``features/<bb>/``
SUBSPACE_FILE = "vim_subspace.npz"
MOMENTS_VERSION = 1

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


def second_moment(features: np.ndarray, fc: Linear) -> tuple[np.ndarray, np.ndarray, float]:
    """(u = -pinv(W) b, Sigma = (X - u)^T (X - u) / N, mean train max-logit), streamed.

    float32 pinv of float32 W and float32 block products as the reference, accumulated
    in float64; the block size is fixed, so every caller gets the same Sigma bit for bit."""
    x = np.asarray(features)
    n, d = x.shape
    if n == 0:
        raise DataError("ViM: the ID train features are empty")
    w = np.asarray(fc.weight, dtype=np.float32)
    b = np.asarray(fc.bias, dtype=np.float32)
    with blas_threads(1):  # LAPACK's bits depend on its thread count
        origin = -(np.linalg.pinv(w) @ b)

    def block_moments(start: int) -> tuple[np.ndarray, float]:
        block = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float32)
        centred = block - origin
        max_logits = (block @ w.T + b).max(axis=1).sum(dtype=np.float64)
        return centred.T @ centred, float(max_logits)  # float32 block product

    sigma = np.zeros((d, d), dtype=np.float64)
    max_logit_sum = 0.0
    for product, max_logits in ordered_map(block_moments, range(0, n, CHUNK_ROWS)):
        sigma += product  # float64 accumulation, in block order
        max_logit_sum += max_logits
    return origin, sigma / n, max_logit_sum / n


def _alpha(mean_max_logit: float, residual_mean: float) -> float:
    if not residual_mean > 0:
        raise DataError(
            "ViM: the train features have no component outside the principal subspace "
            "(mean residual norm is 0); alpha is undefined. Use a smaller methods.vim.dim"
        )
    return mean_max_logit / residual_mean


def _fit_vim_uncached(features: np.ndarray, fc: Linear, dim: int) -> ViMFit:
    x = np.asarray(features)
    d = x.shape[1]
    origin, sigma, mean_max_logit = second_moment(x, fc)
    # eigh returns ascending eigenvalues: the first D - DIM columns span the residual space
    with blas_threads(1):
        _, vectors = np.linalg.eigh(sigma)
    null_space = np.ascontiguousarray(vectors[:, : d - dim], dtype=np.float32)
    partial = ViMFit(origin=origin, null_space=null_space, alpha=1.0, dim=dim)
    blocks = ordered_map(
        partial.residual, (x[s : s + CHUNK_ROWS] for s in range(0, len(x), CHUNK_ROWS))
    )
    residual_mean = float(np.concatenate(list(blocks)).mean(dtype=np.float64))
    alpha = _alpha(mean_max_logit, residual_mean)
    return ViMFit(origin=origin, null_space=null_space, alpha=alpha, dim=dim)


@dataclass(frozen=True)
class SubspaceMoments:
    """The DIM-independent part of the ViM fit, computed once per backbone and saved."""

    origin: np.ndarray  # float32 [D], u
    eigenvalues: np.ndarray  # float64 [D], ascending, of the second moment about u
    eigenvectors: np.ndarray  # float64 [D, D], column j for eigenvalue j
    mean_max_logit: float
    #: float64 [D + 1]: entry DIM = mean train ||(x - u) V[:, :D - DIM]||
    residual_means: np.ndarray
    rows: int  # train rows it was computed from
    #: what the train rows and classifier hash to (oodbench/results/fitdata.py)
    fingerprint: str = ""

    @property
    def feature_dim(self) -> int:
        return int(self.origin.shape[0])

    def fit(self, dim: int) -> ViMFit:
        """The ViM fit for principal dimension `dim`, without touching train."""
        null_space = self.eigenvectors[:, : self.feature_dim - dim]
        null_space = np.ascontiguousarray(null_space, dtype=np.float32)
        alpha = _alpha(self.mean_max_logit, float(self.residual_means[dim]))
        return ViMFit(origin=self.origin, null_space=null_space, alpha=alpha, dim=dim)


def subspace_moments(features: np.ndarray, fc: Linear, fingerprint: str = "") -> SubspaceMoments:
    """Second moment, its eigendecomposition and the residual-norm table, in two passes.

    The table: with y = (x - u) V (float32 block products, eigenvalues ascending), the
    residual for DIM is sqrt(sum_{j < D - DIM} y_j^2); one running float64 sum of the
    square roots of the cumulative sums gives every DIM at once."""
    x = np.asarray(features)
    n, d = x.shape
    origin, sigma, mean_max_logit = second_moment(x, fc)
    with blas_threads(1):  # LAPACK's bits depend on its thread count
        eigenvalues, vectors = np.linalg.eigh(sigma)
    basis = np.ascontiguousarray(vectors, dtype=np.float32)

    def block_residuals(start: int) -> np.ndarray:
        block = np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float32) - origin
        squares = np.square(block @ basis, dtype=np.float64)
        np.cumsum(squares, axis=1, out=squares)
        return np.sqrt(squares, out=squares).sum(axis=0)

    sums = np.zeros(d, dtype=np.float64)  # entry j: residual over the first j + 1 columns
    for part in ordered_map(block_residuals, range(0, n, CHUNK_ROWS)):
        sums += part  # in block order
    residual_means = np.zeros(d + 1, dtype=np.float64)  # DIM = D: nothing left, 0
    residual_means[:d] = sums[::-1] / n  # DIM = D - (j + 1)
    return SubspaceMoments(
        origin, eigenvalues, vectors, mean_max_logit, residual_means, n, fingerprint
    )


def save_moments(path: str | Path, moments: SubspaceMoments) -> None:
    """Write the moments as an ``.npz`` (atomically: never a partial file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            version=np.int64(MOMENTS_VERSION),
            origin=moments.origin,
            eigenvalues=moments.eigenvalues,
            eigenvectors=moments.eigenvectors,
            mean_max_logit=np.float64(moments.mean_max_logit),
            residual_means=moments.residual_means,
            rows=np.int64(moments.rows),
            fingerprint=np.str_(moments.fingerprint),
        )


def load_moments(path: str | Path) -> SubspaceMoments:
    """Read what :func:`save_moments` wrote; an unreadable file names itself."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if int(f["version"]) != MOMENTS_VERSION:
                raise DataError(f"{path}: version {int(f['version'])}; rerun `dvc repro`")
            return SubspaceMoments(
                origin=f["origin"],
                eigenvalues=f["eigenvalues"],
                eigenvectors=f["eigenvectors"],
                mean_max_logit=float(f["mean_max_logit"]),
                residual_means=f["residual_means"],
                rows=int(f["rows"]),
                fingerprint=str(f["fingerprint"]),
            )
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable ViM subspace file ({err}); rerun `dvc repro`") from err


@dataclass
class SubspaceDetector(Detector):
    """Shared hyperparameter and fit of ViM and Residual.

    ``dim``: the principal dimension, ``current`` (default, ViM benchmark:
    1000 if D >= 2048, 512 if D >= 768, else D // 2), ``legacy`` (1000 if D >= 2048 else
    512; GEN and the first ViM release), ``moodv2`` (C instead of 1000) or an integer.
    Fits from the ``subspace`` stage's file when the score stage hands one over.
    """

    requires = frozenset({"train"})
    precomputed: ClassVar[str | None] = SUBSPACE_FILE

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

    def _principal_dim(self, d: int, num_classes: int, rows: int) -> int:
        dim = principal_dim(self.dim, d, num_classes)
        if dim >= d:
            raise ParamsError(
                f"{self.params_key}.dim: the principal dimension {dim} (from {self.dim!r}) "
                f"must be smaller than the feature dimension {d}, or no residual is left; "
                "give a smaller integer"
            )
        if rows < dim:
            warn_fit(
                IllPosedFitWarning,
                f"{self.params_key}: {rows} train rows give the second moment rank <= "
                f"{rows}, below DIM {dim} (feature dimension {d}): the principal subspace "
                "is partly arbitrary and the residual ill-posed; use more train rows or a "
                f"smaller {self.params_key}.dim",
            )
        return dim

    def _fit(self, data: FitData) -> None:
        if data.precomputed is not None:
            moments = load_moments(data.precomputed.path)
            if moments.fingerprint != data.precomputed.fingerprint:
                raise DataError(
                    f"{data.precomputed.path}: computed from other train features or "
                    "another classifier; rerun `dvc repro`"
                )
            dim = self._principal_dim(moments.feature_dim, data.fc.num_classes, moments.rows)
            self.fit_ = moments.fit(dim)
            return
        train = data.require_train(self.params_key)
        n, d = train.features.shape
        dim = self._principal_dim(d, data.fc.num_classes, n)
        self.fit_ = fit_vim(train.features, data.fc, dim)
