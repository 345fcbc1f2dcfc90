"""KL-Matching against the ViM benchmark's per-pair formulation, in a slow loop.

Both sides use the same float32 softmax; the loop evaluates the reference's
``sum(where(p != 0, p * log(p / q), 0))`` per (sample, template) pair in float64, our
code the expanded form in float64: agreement to rtol 1e-7, atol 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create

D, C = 12, 6


def _fs(x: np.ndarray, labels: np.ndarray | None = None, name: str = "s") -> FeatureSet:
    n = len(x)
    lab = -np.ones(n, np.int64) if labels is None else labels.astype(np.int64)
    return FeatureSet(name, x.astype(np.float32), lab, np.arange(n, dtype=np.int64))


def _problem(seed: int = 0, never_predicted: int | None = None) -> tuple[FitData, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(C, D)).astype(np.float32)
    b = rng.normal(size=C).astype(np.float32)
    if never_predicted is not None:
        b[never_predicted] = -1e4  # this class can never be the argmax
    fc = Linear(w, b, [str(c) for c in range(C)])
    train = _fs(rng.normal(size=(300, D)))
    val_labels = np.arange(120) % C
    val = _fs(rng.normal(size=(120, D)), val_labels, "val")
    test = rng.normal(size=(40, D)).astype(np.float32) * 2
    return FitData(fc=fc, train=train, val=val), test


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """The reference's pairwise KL (ViM benchmark.py)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(p != 0, p * np.log(p / q), 0)))


def _loop(data: FitData, test: np.ndarray, empty: str, by_val: bool = False) -> np.ndarray:
    source = data.val if by_val else data.train
    probs = softmax(data.fc.logits(source.features), axis=-1).astype(np.float64)
    group = source.labels if by_val else np.argmax(probs, axis=-1)
    templates = []
    for i in range(C):
        rows = probs[group == i]
        if len(rows):
            templates.append(rows.mean(axis=0))
        else:
            templates.append(np.zeros(C) if empty == "zeros" else np.full(C, np.nan))
    scores = []
    for p in softmax(data.fc.logits(test), axis=-1).astype(np.float64):
        scores.append(-np.min([kl(p, q) for q in templates]))
    return np.array(scores)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("templates", ["train_predicted", "val_labels"])
def test_matches_reference_loop(templates: str) -> None:
    data, test = _problem()
    det = create("klm", {"templates": templates}).fit(data)
    want = _loop(data, test, "zeros", by_val=templates == "val_labels")
    _close(det.score(test, data.fc.logits(test)), want)


def test_never_predicted_class_zeros_never_wins() -> None:
    data, test = _problem(1, never_predicted=2)
    det = create("klm").fit(data)
    assert det.empty_classes_.tolist() == [2]
    got = det.score(test, data.fc.logits(test))
    assert np.isfinite(got).all()
    _close(got, _loop(data, test, "zeros"))


def test_never_predicted_class_nan_poisons_every_score() -> None:
    data, test = _problem(1, never_predicted=2)
    got = create("klm", {"empty": "nan"}).fit(data).score(test, data.fc.logits(test))
    assert np.isnan(got).all() and np.isnan(_loop(data, test, "nan")).all()


def test_underflowing_probabilities_follow_the_per_pair_formula() -> None:
    """Large logits make float32 softmax entries exactly 0 in templates and in p."""
    data, test = _problem(2)
    data.fc.weight *= 60
    logits = data.fc.logits(test)
    assert (softmax(logits, axis=1) == 0).any()
    got = create("klm").fit(data).score(test, logits)
    _close(got, _loop(data, test, "zeros"))


def test_single_sample_and_ties() -> None:
    data, test = _problem(3)
    det = create("klm").fit(data)
    one = det.score(test[:1], data.fc.logits(test[:1]))
    assert one.shape == (1,)
    _close(one, _loop(data, test[:1], "zeros"))
    twice = det.score(np.repeat(test[:1], 2, 0), data.fc.logits(np.repeat(test[:1], 2, 0)))
    assert twice[0] == twice[1]


def test_val_labels_need_labels() -> None:
    data, _ = _problem()
    data.val.labels[:] = -1
    with pytest.raises(DataError, match="label"):
        create("klm", {"templates": "val_labels"}).fit(data)


@pytest.mark.parametrize(
    ("params", "key"),
    [({"empty": "inf"}, "empty"), ({"templates": "val"}, "templates"), ({"T": 1}, "T")],
)
def test_invalid_hyperparameters_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=rf"methods\.klm\.{key}"):
        create("klm", params)
