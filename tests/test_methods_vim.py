"""ViM and Residual against the ViM benchmark's own formulation, written as a slow loop.

Tolerances: our fit accumulates the second moment in float64 and projects in float32
like the reference, the loop below does everything in float64, so scores agree to
rtol 1e-4 (float32 projection of O(10) values) and the subspaces to 1e-6.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, Precomputed, create
from oodbench.methods.shared import subspace as vim_module
from oodbench.methods.shared.checks import IllPosedFitWarning

D, C, N = 32, 10, 600


def _featureset(x: np.ndarray, name: str = "train") -> FeatureSet:
    n = len(x)
    return FeatureSet(name, x, -np.ones(n, np.int64), np.arange(n, dtype=np.int64))


def _problem(seed: int = 0) -> tuple[FitData, np.ndarray]:
    """Features with a clear spectral gap at DIM = D // 2 so the subspace is well defined."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    scales = np.r_[np.full(D // 2, 5.0), np.full(D - D // 2, 0.5)]
    x = ((rng.normal(size=(N, D)) * scales) @ basis.T + 1.0).astype(np.float32)
    fc = Linear(
        rng.normal(size=(C, D)).astype(np.float32) * 0.3,
        rng.normal(size=C).astype(np.float32),
        [str(c) for c in range(C)],
    )
    test = ((rng.normal(size=(50, D)) * 3.0) @ basis.T).astype(np.float32)
    return FitData(fc=fc, train=_featureset(x)), test


def _reference_loop(data: FitData, test: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The ViM benchmark: u = -pinv(W) b, eig of the second moment about u, per-sample scores."""
    w, b = data.fc.weight, data.fc.bias
    x = data.train.features.astype(np.float64)
    u = -np.matmul(np.linalg.pinv(w), b).astype(np.float64)
    sigma = np.zeros((D, D))
    for row in x:
        sigma += np.outer(row - u, row - u)
    sigma /= len(x)
    eig_vals, eigen_vectors = np.linalg.eig(sigma)
    ns = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T).real
    train_logits = x @ w.T.astype(np.float64) + b
    vlogit_train = np.array([np.linalg.norm((row - u) @ ns) for row in x])
    alpha = train_logits.max(axis=-1).mean() / vlogit_train.mean()
    vim, residual = [], []
    for row in test.astype(np.float64):
        r = np.linalg.norm((row - u) @ ns)
        z = row @ w.T.astype(np.float64) + b
        vim.append(logsumexp(z) - alpha * r)
        residual.append(-r)
    return np.array(vim), np.array(residual)


def test_vim_and_residual_match_reference_loop() -> None:
    data, test = _problem()
    logits = data.fc.logits(test)
    vim = create("vim").fit(data)
    residual = create("residual").fit(data)
    want_vim, want_residual = _reference_loop(data, test, dim=D // 2)
    np.testing.assert_allclose(vim.score(test, logits), want_vim, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(residual.score(test, logits), want_residual, rtol=1e-4, atol=1e-4)


def test_integer_dim_and_single_sample() -> None:
    data, test = _problem(1)
    det = create("vim", {"dim": D // 2}).fit(data)
    one = det.score(test[:1], data.fc.logits(test[:1]))
    assert one.shape == (1,)
    np.testing.assert_allclose(one, _reference_loop(data, test[:1], D // 2)[0], rtol=1e-4)


@pytest.mark.parametrize(
    ("rule", "d", "c", "want"),
    [
        ("current", 2048, 1000, 1000),
        ("current", 1024, 1000, 512),
        ("current", 768, 1000, 512),
        ("current", 512, 1000, 256),
        ("legacy", 2048, 1000, 1000),
        ("legacy", 1024, 1000, 512),
        ("moodv2", 2048, 21841, 21841),
        ("moodv2", 768, 21841, 512),
        ("moodv2", 384, 1000, 192),
        (100, 768, 1000, 100),
    ],
)
def test_principal_dim_rules(rule: str | int, d: int, c: int, want: int) -> None:
    assert vim_module.principal_dim(rule, d, c) == want


@pytest.mark.parametrize("params", [{"dim": D}, {"dim": D + 5}, {"dim": "legacy"}])
def test_dim_at_least_feature_dim_is_an_error(params: dict) -> None:
    data, _ = _problem()
    with pytest.raises(ParamsError, match=r"methods\.vim\.dim"):
        create("vim", params).fit(data)


@pytest.mark.parametrize(
    ("params", "key"),
    [({"dim": -1}, "dim"), ({"dim": "newest"}, "dim"), ({"dim": 2.5}, "dim"), ({"k": 1}, "k")],
)
def test_invalid_hyperparameters_name_the_key(params: dict, key: str) -> None:
    for name in ("vim", "residual"):
        with pytest.raises(ParamsError, match=rf"methods\.{name}\.{key}"):
            create(name, params)


def test_fit_is_shared_between_vim_and_residual(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = vim_module._fit_vim_uncached

    def counting(*args: object) -> vim_module.ViMFit:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(vim_module, "_fit_vim_uncached", counting)
    data, _ = _problem(2)
    a = create("vim").fit(data)
    b = create("residual").fit(data)
    assert len(calls) == 1 and a.fit_ is b.fit_
    create("vim", {"dim": 8}).fit(data)  # another DIM is another fit
    assert len(calls) == 2
    copy = FitData(fc=data.fc, train=_featureset(data.train.features.copy()))
    create("vim").fit(copy)  # equal values but another array: refit, never a stale hit
    assert len(calls) == 3


@pytest.mark.parametrize("dim", [1, D // 2, D - 1])
def test_moments_give_the_in_process_fit(dim: int) -> None:
    """The subspace stage's DIM-independent moments give the same null space bit for bit
    and alpha to float rounding (a float64 table instead of float32 norms), for any DIM."""
    data, test = _problem(3)
    direct = vim_module.fit_vim(data.train.features, data.fc, dim)
    moments = vim_module.subspace_moments(data.train.features, data.fc)
    from_moments = moments.fit(dim)
    np.testing.assert_array_equal(from_moments.null_space, direct.null_space)
    np.testing.assert_array_equal(from_moments.origin, direct.origin)
    assert from_moments.alpha == pytest.approx(direct.alpha, rel=1e-6)
    np.testing.assert_allclose(from_moments.residual(test), direct.residual(test), rtol=1e-6)
    assert moments.rows == N and moments.residual_means[D] == 0.0
    assert np.all(np.diff(moments.eigenvalues) >= 0)  # ascending, as eigh returns them


def test_detectors_fit_from_a_saved_subspace_without_train(tmp_path) -> None:
    data, test = _problem(4)
    path = tmp_path / "vim_subspace.npz"
    vim_module.save_moments(path, vim_module.subspace_moments(data.train.features, data.fc, "f1"))
    assert Precomputed(path, "f1").current() and not Precomputed(path, "f2").current()
    logits = data.fc.logits(test)
    no_train = FitData(fc=data.fc, precomputed=Precomputed(path, "f1"))
    for name in ("vim", "residual"):
        want = create(name).fit(data).score(test, logits)
        got = create(name).fit(no_train).score(test, logits)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(DataError, match="computed from other train features"):
        create("vim").fit(FitData(fc=data.fc, precomputed=Precomputed(path, "f2")))
    path.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable ViM subspace file"):
        create("vim").fit(FitData(fc=data.fc, precomputed=Precomputed(path, "f1")))


@pytest.mark.parametrize("name", ["vim", "residual"])
def test_fewer_train_rows_than_dim_warn_naming_key_rank_and_dimension(name: str) -> None:
    """DIM = 16 principal directions from 10 rows: the second moment has rank <= 10, so
    6 principal directions are arbitrary. One warning names the key, the rank, DIM and D."""
    data, _ = _problem(5)
    few = FitData(fc=data.fc, train=_featureset(data.train.features[:10]))
    with pytest.warns(IllPosedFitWarning) as caught:
        create(name).fit(few)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"methods.{name}: 10 train rows" in message
    assert "rank <= 10, below DIM 16 (feature dimension 32)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # DIM <= rows: no warning
        create(name).fit(FitData(fc=data.fc, train=_featureset(data.train.features[:16])))
