"""The metric test vectors of scores.md, and the metrics against slow direct definitions."""

from __future__ import annotations

import numpy as np
import pytest

from oodbench.core.errors import DataError
from oodbench.results import metrics as M
from tests.faults_catalogue import catalogue


@pytest.fixture
def normal_pair() -> tuple[np.ndarray, np.ndarray]:
    return np.random.default_rng(0).normal(1, 1, 1000), np.random.default_rng(1).normal(0, 1, 800)


def test_spec_vectors_untied(normal_pair):
    ind, ood = normal_pair
    assert M.auroc(ind, ood) == pytest.approx(0.771226, abs=1e-6)
    assert M.fpr95(ind, ood) == pytest.approx(0.692500, abs=1e-12)
    assert M.fpr_at_recall_nearest(ind, ood) == pytest.approx(0.698750, abs=1e-12)
    assert M.aupr_in(ind, ood) == pytest.approx(0.798421, abs=1e-6)


def test_spec_vectors_heavy_ties(normal_pair):
    ind, ood = (np.round(a, 1) for a in normal_pair)
    assert M.auroc(ind, ood) == pytest.approx(0.770721, abs=1e-6)
    assert M.fpr95(ind, ood) == pytest.approx(0.727500, abs=1e-12)
    assert M.aupr_in(ind, ood) == pytest.approx(0.798026, abs=1e-6)


def test_spec_vectors_integers():
    ind, ood = np.arange(20.0), np.arange(10) + 0.5
    assert M.auroc(ind, ood) == pytest.approx(0.725, abs=1e-12)
    assert M.fpr95(ind, ood) == pytest.approx(0.9, abs=1e-12)


def _auroc_pairs(ind: np.ndarray, ood: np.ndarray) -> float:
    """AUROC as the probability an ID score beats an OOD one, ties counting half."""
    wins = 0.0
    for a in ind:
        for b in ood:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(ind) * len(ood))


def _fpr95_loop(ind: np.ndarray, ood: np.ndarray) -> float:
    k = max(int(np.floor(0.95 * len(ind))), 1)
    threshold = sorted(ind, reverse=True)[k - 1]
    return sum(1 for b in ood if b >= threshold) / len(ood)


def _fpr95_ood_positive_loop(ind: np.ndarray, ood: np.ndarray) -> float:
    """Sweep thresholds from the most OOD-looking score up; stop once 95% of OOD is caught."""
    for t in sorted(set(ind) | set(ood)):
        caught = sum(1 for b in ood if b <= t) / len(ood)
        if caught >= 0.95:
            return sum(1 for a in ind if a <= t) / len(ind)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("decimals", [None, 1])
def test_metrics_against_loops(decimals):
    rng = np.random.default_rng(7)
    ind, ood = rng.normal(0.7, 1, 120), rng.normal(0, 1, 90)
    if decimals is not None:
        ind, ood = np.round(ind, decimals), np.round(ood, decimals)
    assert M.auroc(ind, ood) == pytest.approx(_auroc_pairs(ind, ood), abs=1e-12)
    assert M.fpr95(ind, ood) == pytest.approx(_fpr95_loop(ind, ood), abs=1e-12)
    assert M.fpr95_ood_positive(ind, ood) == pytest.approx(
        _fpr95_ood_positive_loop(ind, ood), abs=1e-12
    )


def test_fpr95_threshold_is_the_kth_largest_id_score():
    """What the docstring says: k = floor(0.95 N_id), threshold = sorted_id[-k], the
    k-th largest counting from 1, so exactly k untied ID scores are >= it."""
    ind = np.random.default_rng(3).permutation(np.arange(1.0, 41.0))  # 1..40, shuffled
    k = int(np.floor(0.95 * ind.size))
    assert k == 38 and np.sort(ind)[-k] == 3.0 and np.count_nonzero(ind >= 3.0) == k
    # OOD scores just below, at and above the threshold 3: ties at it are false positives
    assert M.fpr95(ind, np.array([2.9, 3.0, 3.1, 0.0])) == 0.5
    assert M.fpr95(ind, np.array([2.99])) == 0.0


def test_fpr95_clamps_k_to_the_largest_score():
    """floor(tpr N_id) = 0 with several ID scores: k = 1 (the maximum), not the
    reference's sort(ind)[-0], which would wrap to the minimum."""
    ind, ood = np.array([1.0, 2.0, 3.0]), np.array([2.5, 3.0])
    assert M.fpr95(ind, ood, tpr=0.3) == 0.5  # threshold 3.0: only the tie at 3.0 counts
    assert M.fpr95(ind, ood, tpr=0.34) == 0.5  # floor(1.02) = 1: the same threshold


def test_aupr_out_is_aupr_in_with_roles_swapped(normal_pair):
    ind, ood = normal_pair
    assert M.aupr_out(ind, ood) == pytest.approx(M.aupr_in(-ood, -ind), abs=1e-12)


@catalogue(
    "arrays",
    "all scores are equal",
    "AUROC 0.5 and FPR95 1.0 (ties count against the method), never NaN",
)
def test_perfect_and_constant_scores():
    ind, ood = np.arange(10.0, 20.0), np.arange(10.0)
    expected = {
        "auroc": 1.0,
        "fpr95": 0.0,
        "fpr95_ood_positive": 0.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
    }
    assert M.all_metrics(ind, ood) == pytest.approx(expected, abs=1e-12)
    flat = M.all_metrics(np.zeros(10), np.zeros(5))
    assert flat["auroc"] == 0.5
    assert flat["fpr95"] == 1.0  # ties at the threshold count as false positives


@catalogue("arrays", "ID or OOD has a single sample", "metrics are still defined")
def test_single_samples():
    assert M.fpr95(np.array([1.0]), np.array([0.5])) == 0.0
    assert M.fpr95(np.array([1.0]), np.array([1.0])) == 1.0
    assert M.auroc(np.array([1.0]), np.array([0.0])) == 1.0


@catalogue(
    "arrays",
    "scores hold NaN/Inf or an OOD set is empty",
    "DataError instead of a silent NaN metric",
)
def test_rejects_nan_and_empty():
    with pytest.raises(DataError, match="NaN/Inf"):
        M.auroc(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(DataError, match="0 OOD"):
        M.fpr95(np.array([1.0]), np.array([]))


@pytest.mark.parametrize("kind", ["normal", "integers", "rounded", "extremes"])
def test_curves_are_sklearns_float_for_float(kind):
    """metrics.py computes the ROC and PR curves with numpy (scikit-learn costs the
    evaluate stage a second of imports); every metric must stay the float sklearn gives,
    not merely close to it, so regenerated metrics files do not move."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(11)
    for _ in range(200):
        n_id, n_ood = rng.integers(1, 80, 2)
        if kind == "normal":
            ind, ood = rng.normal(0.5, 1, n_id), rng.normal(0, 1, n_ood)
        elif kind == "integers":  # a few values: long ties across both sets
            ind, ood = rng.integers(0, 4, n_id) * 1.0, rng.integers(0, 4, n_ood) * 1.0
        elif kind == "rounded":
            ind, ood = np.round(rng.normal(0.3, 1, n_id), 1), np.round(rng.normal(size=n_ood), 1)
        else:  # signed zeros and kNN-sized magnitudes
            ind = rng.choice([0.0, -0.0, 1e21, -1e21, 3.0], n_id)
            ood = rng.choice([0.0, -0.0, 1e21, 2.0], n_ood)
        labels = np.r_[np.ones(n_id, np.int64), np.zeros(n_ood, np.int64)]
        scores = np.r_[ind, ood]
        fpr, tpr, _ = skm.roc_curve(1 - labels, -scores)
        want = {
            "auroc": skm.roc_auc_score(labels, scores),
            "fpr95_ood_positive": fpr[np.argmax(tpr >= 0.95)],
            "aupr_in": skm.auc(*skm.precision_recall_curve(labels, scores)[1::-1]),
            "aupr_out": skm.auc(*skm.precision_recall_curve(1 - labels, -scores)[1::-1]),
        }
        got = M.all_metrics(ind, ood)
        assert {k: got[k] for k in want} == {k: float(v) for k, v in want.items()}
        points = skm.roc_curve(labels, scores)[:2]
        for mine, theirs in zip(M.roc_curve(labels, scores), points, strict=True):
            np.testing.assert_array_equal(mine, theirs)
