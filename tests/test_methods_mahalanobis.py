"""Mahalanobis and RMDS against per-class, per-sample loops of the reference code.

Both sides compute in float64 (the reference's covariance and precision are float64),
so scores agree to rtol 1e-9 relative to the distance scale (atol 1e-7 * max |score|).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.linalg import pinvh

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create
from oodbench.methods.shared.checks import IllPosedFitWarning
from tests.faults_catalogue import catalogue


def _data(n_per_class: int, d: int, c: int, seed: int = 0, skip: tuple[int, ...] = ()) -> FitData:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(c, d))
    labels = np.repeat([k for k in range(c) if k not in skip], n_per_class)
    x = (centres[labels] + rng.normal(size=(len(labels), d)) * rng.uniform(0.5, 2, d)).astype(
        np.float32
    )
    train = FeatureSet("train", x, labels.astype(np.int64), np.arange(len(x), dtype=np.int64))
    fc = Linear(np.zeros((c, d), np.float32), np.zeros(c, np.float32), [str(k) for k in range(c)])
    return FitData(fc=fc, train=train)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _loop_mahalanobis(data: FitData, test: np.ndarray, class_average: bool = False) -> np.ndarray:
    """ViM benchmark loop (pooled, pinvh) or the PLP one (mean of np.cov, inv)."""
    x, y = data.train.features.astype(np.float64), data.train.labels
    means, centred, covs = [], [], []
    for k in range(data.fc.num_classes):
        fs = x[y == k]
        if len(fs) == 0:
            continue
        means.append(fs.mean(axis=0))
        centred.extend(fs - means[-1])
        covs.append(np.cov(fs.T) if class_average else None)
    if class_average:
        prec = np.linalg.inv(np.mean(covs, axis=0))
    else:
        centred = np.array(centred)
        prec = pinvh(centred.T @ centred / len(centred))
    mean = np.array(means)
    return -np.array([(((f - mean) @ prec) * (f - mean)).sum(axis=-1).min() for f in test])


def _loop_rmds(data: FitData, test: np.ndarray) -> np.ndarray:
    """OpenOOD's RMDS postprocessor, one class at a time."""
    x, y = data.train.features.astype(np.float64), data.train.labels
    means, centred = [], []
    for k in range(data.fc.num_classes):
        fs = x[y == k]
        if len(fs):
            means.append(fs.mean(axis=0))
            centred.append(fs - means[-1])
    centred = np.concatenate(centred)
    prec = pinvh(centred.T @ centred / len(centred))
    whole = x.mean(axis=0)
    prec0 = pinvh((x - whole).T @ (x - whole) / len(x))
    scores = []
    for f in test.astype(np.float64):
        background = (f - whole) @ prec0 @ (f - whole)
        per_class = [(f - m) @ prec @ (f - m) - background for m in means]
        scores.append(-min(per_class))
    return np.array(scores)


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-7 * np.abs(want).max())


@pytest.mark.parametrize("params", [{}, {"normalize": True}])
def test_pooled_matches_reference_loop(params: dict) -> None:
    data = _data(40, 16, 5)
    test = np.random.default_rng(9).normal(0, 3, size=(30, 16)).astype(np.float32)
    got = create("mahalanobis", params).fit(data).score(test, None)
    if params:
        train = data.train
        data = FitData(data.fc, FeatureSet("t", _unit(train.features), train.labels, train.index))
        test = _unit(test.astype(np.float64))
    _close(got, _loop_mahalanobis(data, test))


def test_class_average_matches_plp_loop() -> None:
    data = _data(30, 8, 4, seed=1)
    test = np.random.default_rng(2).normal(0, 3, size=(20, 8)).astype(np.float32)
    got = create("mahalanobis", {"covariance": "class_average"}).fit(data).score(test, None)
    _close(got, _loop_mahalanobis(data, test, class_average=True))


def test_rmds_matches_openood_loop() -> None:
    data = _data(25, 12, 6, seed=3)
    test = np.random.default_rng(4).normal(0, 3, size=(25, 12)).astype(np.float32)
    _close(create("rmds").fit(data).score(test, None), _loop_rmds(data, test))


@catalogue(
    "arrays",
    "a class covariance is singular (fewer rows than dimensions)",
    "the pooled estimate uses a pseudo-inverse and matches the project's float64 reference "
    "loop, with one warning naming the key, the rank and the feature dimension (the ViM/MOODv2 "
    "code centres in float32, and its pseudo-inverse is then noise: precision norm ~1e10, "
    "rank correlation with the sound answer ~0 at 100 rows, D=384; one-class mode on "
    "ImageNet, ~200 train rows per class at D=768, is in this regime); `class_average` "
    "refuses with a `singular` error",
)
def test_singular_covariance_uses_pseudo_inverse() -> None:
    data = _data(3, 20, 4, seed=5)  # 12 rows, D = 20: rank-deficient pooled covariance
    test = np.random.default_rng(6).normal(size=(7, 20)).astype(np.float32)
    with pytest.warns(
        IllPosedFitWarning, match=r"methods\.mahalanobis: .* rank 8, below the feature dimension 20"
    ):
        maha = create("mahalanobis").fit(data)
    _close(maha.score(test, None), _loop_mahalanobis(data, test))
    with pytest.warns(IllPosedFitWarning, match=r"methods\.rmds: "):
        rmds = create("rmds").fit(data)
    _close(rmds.score(test, None), _loop_rmds(data, test))
    with pytest.raises(DataError, match="singular"):
        create("mahalanobis", {"covariance": "class_average"}).fit(data)


def _one_class(rows: int, d: int, seed: int = 0) -> tuple[FitData, np.ndarray]:
    """One-class mode: the rows of a single class, with the non-zero mean real features have."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=d)
    x = (offset + rng.normal(size=(rows, d)) * rng.uniform(0.5, 2, d)).astype(np.float32)
    test = (offset + rng.normal(size=(200, d)) * 2).astype(np.float32)
    fc = Linear(np.zeros((3, d), np.float32), np.zeros(3, np.float32), ["a", "b", "c"])
    train = FeatureSet("train", x, np.zeros(rows, np.int64), np.arange(rows))
    return FitData(fc=fc, train=train), test


def test_float32_centring_of_the_reference_is_noise_below_d_rows() -> None:
    """100 rows of one class in D = 384 (the docs/faults.md numbers): ours matches the
    float64 loop, while the reference's float32 centring leaves rounding noise that
    pinvh inverts: its precision has norm ~1e10 and its scores no rank correlation with
    the sound ones. With 2,000 rows the two agree again."""
    from scipy.stats import spearmanr

    data, test = _one_class(100, 384)
    with pytest.warns(
        IllPosedFitWarning,
        match=r"100 train rows in 1 classes has rank 99, below the feature dimension 384",
    ):
        got = create("mahalanobis").fit(data).score(test, None)
    _close(got, _loop_mahalanobis(data, test))
    noise = _vim_benchmark_float32(data, test, precision_norm=True)
    assert noise.precision_norm > 1e8
    assert abs(spearmanr(noise.scores, got).statistic) < 0.3
    many, test = _one_class(2000, 384, seed=1)
    sound = _vim_benchmark_float32(many, test, precision_norm=True)
    assert sound.precision_norm < 10
    np.testing.assert_allclose(
        create("mahalanobis").fit(many).score(test, None), sound.scores, rtol=1e-4
    )


def test_enough_rows_per_class_do_not_warn() -> None:
    data = _data(30, 20, 4, seed=5)  # N - K = 116 >= D = 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create("mahalanobis").fit(data)
        create("rmds").fit(data)


def test_class_without_train_rows_is_left_out() -> None:
    data = _data(20, 6, 5, seed=7, skip=(2,))
    test = np.random.default_rng(8).normal(size=(10, 6)).astype(np.float32)
    got = create("mahalanobis").fit(data).score(test, None)
    assert np.isfinite(got).all()
    _close(got, _loop_mahalanobis(data, test))


@catalogue(
    "arrays", "a single sample is scored", "one finite score of shape (1,); ties give equal scores"
)
def test_single_sample_and_ties() -> None:
    data = _data(20, 6, 3, seed=10)
    det = create("mahalanobis").fit(data)
    row = data.train.features[:1]
    assert det.score(row, None).shape == (1,)
    twice = det.score(np.repeat(row, 2, axis=0), None)
    assert twice[0] == twice[1]
    # a point equidistant from two identical class means: the min is that shared distance
    same = _data(20, 6, 2, seed=11)
    same.train.features[same.train.labels == 1] = same.train.features[same.train.labels == 0]
    tied = create("mahalanobis").fit(same).score(row, None)
    _close(tied, _loop_mahalanobis(same, row))


def test_blocks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from oodbench.methods.shared import gaussians as mahalanobis

    data = _data(30, 10, 4, seed=12)
    test = np.random.default_rng(13).normal(size=(50, 10)).astype(np.float32)
    whole = create("rmds").fit(data).score(test, None)
    monkeypatch.setattr(mahalanobis, "CHUNK_ROWS", 7)
    _close(create("rmds").fit(data).score(test, None), whole)


def test_missing_labels_are_a_data_error() -> None:
    data = _data(10, 4, 2)
    data.train.labels[3] = -1
    with pytest.raises(DataError, match="label"):
        create("mahalanobis").fit(data)


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("mahalanobis", {"covariance": "full"}, "covariance"),
        ("mahalanobis", {"normalize": "yes"}, "normalize"),
        ("mahalanobis", {"shrinkage": 0.1}, "shrinkage"),
        ("rmds", {"normalize": True}, "normalize"),
    ],
)
def test_invalid_hyperparameters_name_the_key(name: str, params: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=rf"methods\.{name}\.{key}"):
        create(name, params)


@dataclass
class Reference:
    scores: np.ndarray
    precision_norm: float


def _vim_benchmark_float32(
    data: FitData, test: np.ndarray, precision_norm: bool = False
) -> np.ndarray | Reference:
    """The ViM benchmark verbatim in dtype: class means and centring in float32, then
    sklearn's EmpiricalCovariance (float64, pinvh) on the centred rows."""
    from sklearn.covariance import EmpiricalCovariance

    x, y = data.train.features.astype(np.float32), data.train.labels
    means, centred = [], []
    for k in range(data.fc.num_classes):
        fs = x[y == k]
        if len(fs) == 0:
            continue
        means.append(fs.mean(axis=0))
        centred.extend(fs - means[-1])
    ec = EmpiricalCovariance(assume_centered=True).fit(np.array(centred).astype(np.float64))
    mean = np.array(means).astype(np.float64)
    scores = np.array(
        [-(((f - mean) @ ec.precision_) * (f - mean)).sum(axis=-1).min() for f in test]
    )
    if precision_norm:
        return Reference(scores, float(np.linalg.norm(ec.precision_, 2)))
    return scores


@pytest.mark.filterwarnings("ignore::oodbench.methods.shared.checks.IllPosedFitWarning")
@pytest.mark.parametrize("n_per_class", [8, 60])
def test_float64_centring_agrees_with_the_float32_reference(n_per_class: int) -> None:
    """We centre in float64; the reference centres in float32. On these post-ReLU features
    the two agree to float32 rounding even when N - C < D (a rank-deficient covariance),
    because the reference's rounding noise lies below pinvh's cutoff here; with a larger
    mean relative to the spread it does not (test_float32_centring_of_the_reference_...)."""
    rng = np.random.default_rng(11)
    data = _data(n_per_class, 96, 6, seed=12)
    relu = np.maximum(data.train.features, 0)  # post-ReLU, like CNN penultimate features
    train = FeatureSet("t", relu, data.train.labels, data.train.index)
    data = FitData(data.fc, train)
    test = np.maximum(rng.normal(0, 3, size=(40, 96)), 0).astype(np.float32)
    got = create("mahalanobis").fit(data).score(test, None)
    want = _vim_benchmark_float32(data, test)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (np.argsort(got) == np.argsort(want)).all()
