"""Class-conditional Gaussians, shared by ``mahalanobis`` and ``rmds``.

Both methods fit one mean per class and a shared precision matrix on the ID train features,
then score ``-min_c (x - mu_c)^T P (x - mu_c)`` (RMDS subtracts the distance to a single
global Gaussian first). Distances use the expansion
``x P x - 2 x P mu_c + mu_c P mu_c`` in float64 over blocks of rows, so that memory stays
bounded (C=1000, 50k rows: ~30 MB per block) and any symmetric P works, including the
pseudo-inverse of a singular covariance. Every feature is first shifted by the global
train mean: distances do not change, and the terms of the expansion stay small.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.features import FeatureSet
from oodbench.methods.shared.checks import IllPosedFitWarning, warn_fit
from oodbench.methods.shared.threads import blas_threads, ordered_map

#: rows per block: a block holds [rows, D] and [rows, C] float64 temporaries
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Gaussians:
    """Class means and one shared precision, in coordinates shifted by ``shift``."""

    shift: np.ndarray  # float64 [D], the global train mean
    means: np.ndarray  # float64 [K, D], means of the classes present in train, shifted
    precision: np.ndarray  # float64 [D, D], symmetric
    normalize: bool = False

    @cached_property
    def _mean_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """P mu_c and mu_c P mu_c, computed once (K x D x D) instead of per score call."""
        p_means = self.means @ self.precision  # [K, D]; P is symmetric
        return p_means, np.einsum("kd,kd->k", p_means, self.means)

    def min_distance(self, features: np.ndarray) -> np.ndarray:
        """min_c (x - mu_c)^T P (x - mu_c) per row (squared, no 1/2)."""
        p_means, mean_terms = self._mean_terms
        out = np.empty(len(features), dtype=np.float64)
        for start, block in iter_blocks(features, self.normalize):
            block -= self.shift
            quad = np.einsum("nd,nd->n", block @ self.precision, block)
            cross = block @ p_means.T  # [rows, K]
            dist = (mean_terms - 2.0 * cross) + quad[:, None]
            out[start : start + len(block)] = dist.min(axis=1)
        return out

    def relative_distance(self, features: np.ndarray, background: np.ndarray) -> np.ndarray:
        """d_0(x) - min_c d_c(x) per row, d_0 a Gaussian about ``shift`` with precision
        `background` (RMDS). With y = x - shift, d_0 = y P0 y and d_c = y P y - 2 y P mu_c
        + mu_c P mu_c, so the difference needs one quadratic form, y (P0 - P) y, not two:
        half the [rows, D] x [D, D] products of computing both distances."""
        p_means, mean_terms = self._mean_terms
        difference = background - self.precision
        out = np.empty(len(features), dtype=np.float64)
        for start, block in iter_blocks(features, self.normalize):
            block -= self.shift
            quad = np.einsum("nd,nd->n", block @ difference, block)
            nearest = (mean_terms - 2.0 * (block @ p_means.T)).min(axis=1)
            out[start : start + len(block)] = quad - nearest
        return out


def row_block(features: np.ndarray, start: int, normalize: bool) -> np.ndarray:
    """A float64 copy of the block of rows at `start`, L2-normalised when asked."""
    block = np.array(features[start : start + CHUNK_ROWS], dtype=np.float64)
    if normalize:
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return block


def iter_blocks(features: np.ndarray, normalize: bool) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, float64 copy of a block of rows), L2-normalised when asked."""
    for start in range(0, len(features), CHUNK_ROWS):
        yield start, row_block(features, start, normalize)


def check_labels(train: FeatureSet, num_classes: int, where: str) -> np.ndarray:
    """Train labels as int64 in [0, C); a DataError names what is wrong otherwise."""
    labels = np.asarray(train.labels, dtype=np.int64)
    if len(labels) != len(train):
        raise DataError(f"{where}: {len(labels)} train labels for {len(train)} rows")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(
            f"{where} needs a class label in [0, {num_classes}) for every ID train "
            f"row; {int(bad.sum())} rows have none or an out-of-range one (e.g. "
            f"{labels[bad][:5].tolist()}). Use a labelled datalist for benchmark.id_train"
        )
    return labels


def class_sums(
    features: np.ndarray, labels: np.ndarray, num_classes: int, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums (float64 [C, D]) and counts, by a sparse one-hot product per block
    (blocks in a thread pool, summed in block order: oodbench/methods/shared/threads.py)."""

    from scipy import sparse  # here, not at import: the check stage loads every method

    def block_sums(start: int) -> np.ndarray:
        block = row_block(features, start, normalize)
        lab = labels[start : start + len(block)]
        onehot = sparse.csr_matrix(
            (np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(num_classes, len(lab))
        )
        return onehot @ block

    sums = np.zeros((num_classes, features.shape[1]), dtype=np.float64)
    for part in ordered_map(block_sums, range(0, len(features), CHUNK_ROWS)):
        sums += part
    return sums, np.bincount(labels, minlength=num_classes)


def scatter(
    features: np.ndarray,
    centre_of_row: np.ndarray | None,
    labels: np.ndarray,
    normalize: bool,
    row_weight: np.ndarray | None = None,
) -> np.ndarray:
    """sum_i w_i^2 (x_i - m_i)(x_i - m_i)^T with m_i = centre_of_row[label_i] (or 0): one
    D x D product per block of rows, blocks in a thread pool, summed in block order."""

    def block_scatter(start: int) -> np.ndarray:
        block = row_block(features, start, normalize)
        lab = labels[start : start + len(block)]
        if centre_of_row is not None:
            block -= centre_of_row[lab]
        if row_weight is not None:
            block *= row_weight[lab][:, None]
        return block.T @ block

    d = features.shape[1]
    total = np.zeros((d, d), dtype=np.float64)
    for part in ordered_map(block_scatter, range(0, len(features), CHUNK_ROWS)):
        total += part
    return total


@dataclass(frozen=True)
class ClassStatistics:
    """What the Gaussian fits need from one pass over the train features."""

    means: np.ndarray  # float64 [C, D] (zero rows for absent classes)
    counts: np.ndarray  # int [C]
    shift: np.ndarray  # float64 [D], the global train mean
    present: np.ndarray  # bool [C]


def class_statistics(
    train: FeatureSet, num_classes: int, where: str, normalize: bool
) -> ClassStatistics:
    labels = check_labels(train, num_classes, where)
    if len(train.features) == 0:
        raise DataError(f"{where}: the ID train features are empty")
    sums, counts = class_sums(train.features, labels, num_classes, normalize)
    present = counts > 0
    means = np.zeros_like(sums)
    means[present] = sums[present] / counts[present, None]
    return ClassStatistics(means, counts, sums.sum(axis=0) / len(train.features), present)


def fit_gaussians(
    train: FeatureSet,
    num_classes: int,
    where: str,
    covariance: Literal["pooled", "class_average"] = "pooled",
    normalize: bool = False,
    stats: ClassStatistics | None = None,
    within: np.ndarray | None = None,
) -> Gaussians:
    """Class means over train and the precision of the chosen shared covariance.

    ``pooled`` (ViM benchmark): Sigma = (1/N) sum_i (x_i - mu_{y_i})(...)^T, P = pinvh.
    ``class_average`` (PLP): unweighted mean over classes of the unbiased per-class
    covariances, with a true inverse (an error when it is singular).
    Classes without train rows have no mean and are left out of the min. ``stats`` and
    the pooled ``within`` scatter may be passed in when the caller already has them.
    """
    stats = stats or class_statistics(train, num_classes, where, normalize)
    x, labels = train.features, np.asarray(train.labels, dtype=np.int64)
    means, counts, present = stats.means, stats.counts, stats.present
    if covariance == "pooled":
        if within is None:
            within = scatter(x, means, labels, normalize)
        from scipy import linalg

        with blas_threads(1):  # LAPACK's bits depend on its thread count
            precision, rank = linalg.pinvh(within / len(x), check_finite=False, return_rank=True)
        warn_if_singular(where, len(x), int(present.sum()), int(rank), x.shape[1])
    else:
        if (counts[present] < 2).any():
            raise DataError(
                f"{where} with covariance class_average needs >= 2 train rows per "
                f"class; {int((counts[present] < 2).sum())} classes have one. Use pooled"
            )
        weight = np.zeros(num_classes)
        weight[present] = 1.0 / np.sqrt(counts[present] - 1.0)
        sigma = scatter(x, means, labels, normalize, weight) / present.sum()
        precision = true_inverse(sigma, where)
    shifted = means[present] - stats.shift
    gaussians = Gaussians(stats.shift, shifted, (precision + precision.T) / 2, normalize)
    with blas_threads(1):  # computed here, once, not by whichever thread scores first
        gaussians._mean_terms  # noqa: B018 (fills the cached property)
    return gaussians


def warn_if_singular(where: str, rows: int, classes: int, rank: int, dim: int) -> None:
    """Warn when the pooled covariance has fewer centred rows (N - K) than dimensions.

    Its pseudo-inverse then ignores the directions the rows do not span: distances are
    defined but say nothing about those directions (one-class mode on ImageNet fits ~200
    rows of one class in D = 768). Constant features alone (rank < D with N - K >= D)
    are not warned about: the pseudo-inverse is the right answer there."""
    if rows - classes < dim:
        warn_fit(
            IllPosedFitWarning,
            f"{where}: the pooled covariance of {rows} train rows in {classes} classes has "
            f"rank {rank}, below the feature dimension {dim}: it is singular and its "
            f"pseudo-inverse ignores {dim - rank} directions, so distances there are "
            "ill-posed; use more train rows per class",
        )


def true_inverse(sigma: np.ndarray, where: str) -> np.ndarray:
    """inv(Sigma), refusing a numerically singular Sigma instead of returning noise (one
    BLAS thread: LAPACK's bits depend on its thread count)."""
    with blas_threads(1):
        eigenvalues = np.linalg.eigvalsh(sigma)
        if eigenvalues[0] <= eigenvalues[-1] * len(sigma) * np.finfo(np.float64).eps:
            raise DataError(
                f"{where}: the class-averaged covariance is singular (more feature "
                "dimensions than train rows per class, or constant features); use "
                "covariance: pooled, which takes the pseudo-inverse"
            )
        return np.linalg.inv(sigma)
