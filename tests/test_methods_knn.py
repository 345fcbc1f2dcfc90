"""kNN (PLP and OpenOOD variants) and NNGuide against per-sample loops of the references.

The loops work in float64; our top-k uses float32 products of unit vectors (cosines
exact to ~1e-7), so kNN-OpenOOD agrees to atol 1e-6, and exp(cos / 0.02) to rtol 1e-5
(the exponent amplifies a cosine error by 1/T = 50). NNGuide to rtol 1e-5. Both
backends (torch tiles, faiss IndexFlatIP) are held to the same loops, and to each other.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp

from oodbench.core.errors import ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create
from oodbench.methods.shared import neighbours as knn_module
from oodbench.methods.shared.checks import SmallBankWarning
from oodbench.results.metrics import all_metrics

D, C = 16, 5


def _problem(n_train: int = 400, seed: int = 0) -> tuple[FitData, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train, D)).astype(np.float32)
    train = FeatureSet("train", x, -np.ones(n_train, np.int64), np.arange(n_train, dtype=np.int64))
    fc = Linear(
        rng.normal(size=(C, D)).astype(np.float32),
        rng.normal(size=C).astype(np.float32),
        [str(c) for c in range(C)],
    )
    return FitData(fc=fc, train=train), rng.normal(size=(30, D)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _loop_plp(train: np.ndarray, test: np.ndarray, k: int, t: float) -> np.ndarray:
    bank = _unit(train)
    out = []
    for f in _unit(test):
        sims = np.sort(np.exp(bank @ f / t))[::-1]
        out.append(sims[:k].mean())
    return np.array(out)


def _loop_openood(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """faiss IndexFlatL2 on normalised features: squared distances, score -D[:, -1]."""
    bank = _unit(train)
    return np.array([-np.sort(((bank - f) ** 2).sum(axis=1))[k - 1] for f in _unit(test)])


def _loop_nnguide(data: FitData, rows: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """OpenOOD's NNGuide: bank = normalised feats * energy; mean top-k IP * energy."""
    bank = data.train.features[rows].astype(np.float64)
    w, b = data.fc.weight.astype(np.float64), data.fc.bias.astype(np.float64)
    guide = _unit(bank) * logsumexp(bank @ w.T + b, axis=-1)[:, None]
    out = []
    for f in test.astype(np.float64):
        ips = np.sort(guide @ _unit(f))[::-1]
        out.append(ips[:k].mean() * logsumexp(f @ w.T + b))
    return np.array(out)


# faiss-cpu is installed with the faiss extra, which `make setup` (and so CI) installs
BACKENDS = ["torch", "faiss"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("k", "t"), [(1, 0.02), (5, 0.1)])
def test_plp_matches_loop(k: int, t: float, backend: str) -> None:
    data, test = _problem()
    det = create("knn", {"k": k, "temperature": t, "backend": backend}).fit(data)
    want = _loop_plp(data.train.features, test, k, t)
    np.testing.assert_allclose(det.score(test, None), want, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [None, 7])
def test_openood_matches_loop(k: int | None, backend: str) -> None:
    data, test = _problem()
    det = create("knn", {"variant": "openood", "k": k, "backend": backend}).fit(data)
    assert det.neighbours == (50 if k is None else k)
    want = _loop_openood(data.train.features, test, det.neighbours)
    np.testing.assert_allclose(det.score(test, None), want, atol=1e-6)


def test_openood_score_is_the_squared_distance_with_the_plain_distances_ranking() -> None:
    """kNN-OpenOOD is -(squared L2 distance), as faiss IndexFlatL2 returns it, not the
    square root; squaring is monotone, so the ranking and every metric are the same."""
    data, test = _problem()
    k = 7
    got = create("knn", {"variant": "openood", "k": k}).fit(data).score(test, None)
    dist = np.sort(np.linalg.norm(_unit(data.train.features)[None] - _unit(test)[:, None], axis=-1))
    squared, plain = -(dist[:, k - 1] ** 2), -dist[:, k - 1]
    np.testing.assert_allclose(got, squared, atol=1e-6)
    assert not np.allclose(got, plain, atol=1e-3)  # the values do differ
    assert (np.argsort(got) == np.argsort(plain)).all()
    ood = test * 0.1 + 2.0  # any second set: the metrics of the two scores agree
    ood_got = create("knn", {"variant": "openood", "k": k}).fit(data).score(ood, None)
    ood_dist = np.sort(
        np.linalg.norm(_unit(data.train.features)[None] - _unit(ood)[:, None], axis=-1)
    )[:, k - 1]
    assert all_metrics(got, ood_got) == pytest.approx(all_metrics(plain, -ood_dist), abs=1e-12)


def test_tiles_and_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tiles (bank split mid-top-k) and duplicated bank rows give the same answer."""
    data, test = _problem(n_train=101)
    data.train.features[50:60] = data.train.features[0]  # ten tied neighbours
    test[0] = data.train.features[0] * 3
    whole = create("knn", {"variant": "openood", "k": 12}).fit(data).score(test, None)
    monkeypatch.setattr(knn_module, "QUERY_ROWS", 4)
    monkeypatch.setattr(knn_module, "BANK_ROWS", 9)
    tiled = create("knn", {"variant": "openood", "k": 12}).fit(data).score(test, None)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    np.testing.assert_allclose(tiled, _loop_openood(data.train.features, test, 12), atol=1e-6)


def test_single_sample() -> None:
    data, test = _problem()
    got = create("knn").fit(data).score(test[:1], None)
    assert got.shape == (1,)
    np.testing.assert_allclose(got, _loop_plp(data.train.features, test[:1], 1, 0.02), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("fraction", "k"), [(1.0, 10), (0.25, 5)])
def test_nnguide_matches_openood_loop(fraction: float, k: int, backend: str) -> None:
    data, test = _problem(seed=1)
    det = create("nnguide", {"bank_fraction": fraction, "k": k, "backend": backend}).fit(data)
    rows = det.bank_rows(len(data.train))
    assert len(rows) == int(np.ceil(len(data.train) * fraction))
    logits = data.fc.logits(test)
    want = _loop_nnguide(data, rows, test, k)
    np.testing.assert_allclose(det.score(test, logits), want, rtol=1e-5, atol=1e-6)


def test_nnguide_bank_is_reproducible() -> None:
    a = create("nnguide", {"seed": 3}).bank_rows(10_000)
    b = create("nnguide", {"seed": 3}).bank_rows(10_000)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 100 and not np.array_equal(a, create("nnguide").bank_rows(10_000))


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("knn", {"k": 0}, "k"),
        ("knn", {"variant": "faiss"}, "variant"),
        ("knn", {"backend": "annoy"}, "backend"),
        ("nnguide", {"backend": "gpu"}, "backend"),
        ("knn", {"temperature": -1}, "temperature"),
        ("knn", {"K": 5}, "K"),
        ("nnguide", {"k": 0}, "k"),
        ("nnguide", {"bank_fraction": 0}, "bank_fraction"),
        ("nnguide", {"bank_fraction": 1.5}, "bank_fraction"),
        ("nnguide", {"alpha": 0.01}, "alpha"),
    ],
)
def test_invalid_hyperparameters_name_the_key(name: str, params: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=rf"methods\.{name}\.{key}"):
        create(name, params)


def test_explicit_k_larger_than_the_bank_names_k_and_a_fix_that_works() -> None:
    data, _ = _problem(n_train=20)
    with pytest.raises(
        ParamsError,
        match=r"^methods\.knn\.k: 50 neighbours but the bank has 20 rows.*set k <= 20, or k: null",
    ):
        create("knn", {"variant": "openood", "k": 50}).fit(data)
    # at bank_fraction 1.0 raising it cannot help: the advice must not say so
    with pytest.raises(ParamsError, match=r"methods\.nnguide\.k: 30 .* 20 rows") as caught:
        create("nnguide", {"k": 30, "bank_fraction": 1.0}).fit(data)
    assert "bank_fraction to" not in str(caught.value)
    # below 1.0, when the train rows outnumber k, it can
    with pytest.raises(ParamsError, match=r"raise bank_fraction to >= 0\.5\b"):
        create("nnguide", {"k": 10, "bank_fraction": 0.1}).fit(data)


@pytest.mark.parametrize("one_class_rows", [20, 49])
def test_default_k_is_capped_at_a_small_bank_with_one_warning(one_class_rows: int) -> None:
    """knn_openood (k 50) in one-class mode, nnguide (k 100) on a demo: the default k is
    capped at the bank size, warned once naming the key and both numbers, and the scores
    are those of k = bank size set explicitly."""
    data, test = _problem(n_train=one_class_rows)
    n = one_class_rows
    with pytest.warns(
        SmallBankWarning,
        match=rf"methods\.knn\.k: the default 50 .* bank of {n} rows.*using k = {n}",
    ) as caught:
        capped = create("knn", {"variant": "openood"}).fit(data)
    assert len(caught) == 1 and capped.k_ == n
    explicit = create("knn", {"variant": "openood", "k": n}).fit(data)
    np.testing.assert_array_equal(capped.score(test, None), explicit.score(test, None))
    np.testing.assert_allclose(
        capped.score(test, None), _loop_openood(data.train.features, test, n), atol=1e-6
    )
    logits = data.fc.logits(test)
    with pytest.warns(
        SmallBankWarning, match=rf"methods\.nnguide\.k: the default 100 .* bank of {n} rows"
    ):
        guide = create("nnguide", {"bank_fraction": 1.0}).fit(data)
    assert guide.k_ == n
    want = _loop_nnguide(data, np.arange(n), test, n)
    np.testing.assert_allclose(guide.score(test, logits), want, rtol=1e-5, atol=1e-6)


def test_default_k_within_the_bank_is_not_capped() -> None:
    data, _ = _problem(n_train=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert create("knn", {"variant": "openood"}).fit(data).k_ == 50


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of each row's neighbour set found by both searches."""
    return float(np.mean([len(np.intersect1d(x, y)) / len(x) for x, y in zip(a, b, strict=True)]))


def test_torch_and_faiss_backends_agree() -> None:
    """The two exact backends on 2,000 x 64 bank rows: cosines equal to float32 rounding
    and the same neighbours (k = 1 and k = 50); tiles split the bank mid top-k."""
    rng = np.random.default_rng(5)
    bank_rows = knn_module.unit_rows(rng.normal(size=(2000, 64)))
    queries = knn_module.unit_rows(rng.normal(size=(300, 64)))
    torch_bank = knn_module.Bank(bank_rows, "torch")
    faiss_bank = knn_module.Bank(bank_rows, "faiss")
    for k in (1, 50):
        cos_t, rows_t = torch_bank.search(queries, k)
        cos_f, rows_f = faiss_bank.search(queries, k)
        assert np.abs(cos_t - cos_f).max() < 1e-6
        assert (rows_t[:, 0] == rows_f[:, 0]).mean() == 1.0
        assert _overlap(rows_t, rows_f) == 1.0
        exact = np.sort(bank_rows.astype(np.float64) @ queries.T.astype(np.float64), axis=0)[::-1][
            :k
        ].T
        np.testing.assert_allclose(cos_t, exact, atol=1e-6)


def test_faiss_missing_names_the_backend_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    data, _ = _problem()
    with pytest.raises(ParamsError, match=r"methods\.knn\.backend: faiss is not installed"):
        create("knn", {"backend": "faiss"}).fit(data)
