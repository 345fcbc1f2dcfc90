"""OOD metrics with ID as the positive class and scores "higher = ID".

Each function follows one named reference convention (see scores.md): the ViM/MOODv2
FPR95 rule is the default ``fpr95``; OpenOOD's OOD-positive rule is reported beside
it as ``fpr95_ood_positive`` so nobody confuses the two; AUPR is the trapezoid area
under sklearn's precision-recall curve, not average precision.

The curves are computed here with numpy, point for point as scikit-learn's
``roc_curve`` / ``precision_recall_curve`` / ``auc`` compute them (the same points and
the same trapezoid sums, so the same floats; tests/test_metrics.py compares them),
because importing scikit-learn costs the evaluate stage a second at every start.
"""

from __future__ import annotations

import math

import numpy as np

from oodbench.core.errors import DataError

METRIC_NAMES = ("auroc", "fpr95", "fpr95_ood_positive", "aupr_in", "aupr_out")


def _labelled(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise DataError(
            f"metrics need ID and OOD scores, got {id_scores.size} ID and {ood_scores.size} OOD"
        )
    for name, values in (("ID", id_scores), ("OOD", ood_scores)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(
                f"{name} scores hold {bad.size} NaN/Inf values (first rows {bad[:5].tolist()})"
            )
    labels = np.concatenate(
        [np.ones(id_scores.size, np.int64), np.zeros(ood_scores.size, np.int64)]
    )
    return labels, np.concatenate([id_scores, ood_scores])


def _counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positives (float64) at each distinct score, from the highest score
    down, when every sample scoring at least that much is called positive (label 1)."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last row of each tie
    tps = np.cumsum(labels[order].astype(np.float64))[ends]
    return 1.0 + ends - tps, tps


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve from (0, 0), without the points inside straight runs
    (sklearn's ``drop_intermediate``). Needs both labels present."""
    fps, tps = _counts(labels, scores)
    if fps.size > 2:
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[corner], tps[corner]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) from the highest threshold down, then (1, 0) appended."""
    fps, tps = _counts(labels, scores)
    precision = tps / (tps + fps)  # > 0 below: the top score is always called positive
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) for monotonic x (a decreasing x keeps the area positive)."""
    sign = -1.0 if np.any(np.diff(x) < 0) else 1.0
    return float(sign * np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    labels, scores = _labelled(id_scores, ood_scores)
    fpr, tpr = roc_curve(labels, scores)
    return area(fpr, tpr)


def fpr95(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """ViM/MOODv2 rule: FPR at the k-th largest ID score, k = floor(tpr * N_id).

    With the ID scores sorted ascending, threshold = ``sorted_id[-k]``: the k-th
    largest counting from 1 (k = 1 is the maximum, k = N_id the minimum). With untied
    scores exactly k ID scores are >= the threshold, so the ID recall is k / N_id <=
    tpr (the largest recall that does not exceed `tpr`). FPR = fraction of OOD scores
    >= threshold: ties count as false positives, no interpolation.

    k is clamped to at least 1. floor(tpr * N_id) is 0 only when N_id < 1 / tpr, i.e. a
    single ID score at tpr = 0.95; the reference's ``np.sort(ind)[-0]`` then reads
    index 0, which with one score is that same score, so the result is the
    reference's. (For other `tpr` with floor(...) = 0 and several ID scores the
    reference's ``[-0]`` would wrap to the *smallest* score; the clamp takes the
    largest, the nearest recall to `tpr`.)
    """
    _labelled(id_scores, ood_scores)
    ind = np.sort(np.asarray(id_scores, np.float64).ravel())
    ood = np.asarray(ood_scores, np.float64).ravel()
    k = max(math.floor(tpr * ind.size), 1)
    threshold = ind[-k]
    return float(np.count_nonzero(ood >= threshold) / ood.size)


def fpr95_ood_positive(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """OpenOOD / pytorch-ood rule: OOD positive, FPR (ID flagged OOD) at the first
    ROC point whose TPR (OOD caught) reaches `tpr`."""
    labels, scores = _labelled(id_scores, ood_scores)
    fpr, tpr_curve = roc_curve(1 - labels, -scores)
    return float(fpr[np.argmax(tpr_curve >= tpr)])


def fpr_at_recall_nearest(
    id_scores: np.ndarray, ood_scores: np.ndarray, recall: float = 0.95
) -> float:
    """The MOS/Outlier-Exposure code's rule: the ROC point whose ID recall is nearest to
    `recall` (not necessarily above it). Kept to reproduce those papers' tables."""
    labels, scores = _labelled(id_scores, ood_scores)
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, labels = scores[order], labels[order]
    thresholds = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
    tps = np.cumsum(labels)[thresholds]
    fps = 1 + thresholds - tps
    last = int(np.searchsorted(tps, tps[-1]))
    # the reference walks the curve from full recall down and appends (recall 1, fps 0)
    rec = np.r_[(tps / tps[-1])[last::-1], 1.0]
    fps = np.r_[fps[last::-1], 0]
    cutoff = int(np.argmin(np.abs(rec - recall)))
    return float(fps[cutoff] / np.count_nonzero(labels == 0))


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    labels, scores = _labelled(id_scores, ood_scores)
    precision, recall = pr_curve(labels, scores)
    return area(recall, precision)


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    labels, scores = _labelled(id_scores, ood_scores)
    precision, recall = pr_curve(1 - labels, -scores)
    return area(recall, precision)


def all_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """Every reported metric for one (ID, OOD) pair, in a stable key order."""
    return {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr95(id_scores, ood_scores),
        "fpr95_ood_positive": fpr95_ood_positive(id_scores, ood_scores),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
    }
