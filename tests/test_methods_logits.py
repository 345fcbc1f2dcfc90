"""Logit-based scores and ReAct/GEN families against slow per-sample reference loops.

Each reference below is the published per-sample formulation written out with Python
loops in float64 (sort the probabilities, take the top M, sum, ...). The vectorised
detectors run on the same seeded data; tolerances: float64 inputs 1e-10 relative,
float32 inputs 1e-5 relative (the detectors compute logits in float32, as the
reference does, so float32 rounding is the only difference). Quantiles of float32 features are computed
by numpy in float32, as in the reference, so they equal ``np.quantile`` exactly and the
float64 loop to float32 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create

RTOL64, RTOL32 = 1e-10, 1e-5


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _logits(n: int = 40, c: int = 12, scale: float = 3.0, dtype=np.float64) -> np.ndarray:
    return (_rng(1).normal(size=(n, c)) * scale).astype(dtype)


def _fc(d: int = 16, c: int = 10, seed: int = 2) -> Linear:
    r = _rng(seed)
    w = r.normal(size=(c, d)).astype(np.float32) / np.sqrt(d)
    b = r.normal(size=c).astype(np.float32) * 0.1
    return Linear(weight=w, bias=b, class_names=[str(i) for i in range(c)])


def _feats(n: int, d: int = 16, seed: int = 3) -> np.ndarray:
    """Non-negative, heavy-tailed features like post-ReLU average-pooled activations."""
    return np.maximum(_rng(seed).standard_t(3, size=(n, d)), 0).astype(np.float32)


def _fset(x: np.ndarray, name: str = "train") -> FeatureSet:
    n = len(x)
    return FeatureSet(name, x, np.zeros(n, np.int64), np.arange(n, dtype=np.int64))


# ---- slow references -------------------------------------------------------------------


def ref_softmax(row) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ref_logsumexp(row) -> float:
    m = max(row)
    return m + math.log(sum(math.exp(v - m) for v in row))


def ref_gen(row, gamma: float, top_m: int) -> float:
    probs = sorted(ref_softmax(row))[-top_m:]
    return -sum(p**gamma * (1 - p) ** gamma for p in probs)


def ref_linear(x, fc: Linear) -> list[float]:
    w, b = fc.weight.astype(np.float64), fc.bias.astype(np.float64)
    return [sum(float(x[d]) * w[c, d] for d in range(len(x))) + b[c] for c in range(len(b))]


def ref_quantile(values, q: float) -> float:
    """numpy 'linear' (type 7) quantile written out."""
    s = sorted(float(v) for v in values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def loop(fn, rows) -> np.ndarray:
    return np.array([fn(list(map(float, r))) for r in rows])


# ---- msp / maxlogit / energy / odin -----------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(np.float64, RTOL64), (np.float32, RTOL32)])
def test_logit_scores_match_loops(dtype, rtol):
    z = _logits(dtype=dtype)
    cases = {
        "msp": ({}, lambda r: max(ref_softmax(r))),
        "maxlogit": ({}, max),
        "energy": ({}, ref_logsumexp),
        "odin": ({}, lambda r: max(ref_softmax([v / 1000 for v in r]))),
    }
    for name, (params, ref) in cases.items():
        got = create(name, params).fit(FitData(fc=_fc())).score(None, z)
        np.testing.assert_allclose(got, loop(ref, z), rtol=rtol, err_msg=name)
    t = 2.5
    got = create("energy", {"temperature": t}).score(None, z)
    np.testing.assert_allclose(
        got, loop(lambda r: t * ref_logsumexp([v / t for v in r]), z), rtol=rtol
    )
    got = create("msp", {"temperature": t}).score(None, z)
    np.testing.assert_allclose(
        got, loop(lambda r: max(ref_softmax([v / t for v in r])), z), rtol=rtol
    )


def test_odin_default_is_msp_at_t1000():
    z = _logits()
    odin = create("odin").score(None, z)
    msp = create("msp", {"temperature": 1000}).score(None, z)
    np.testing.assert_array_equal(odin, msp)


def test_single_sample_and_ties():
    z = np.zeros((1, 5))
    assert create("msp").score(None, z) == pytest.approx([0.2])
    assert create("energy").score(None, z) == pytest.approx([math.log(5)])
    assert create("maxlogit").score(None, z) == pytest.approx([0.0])
    assert create("gen").score(None, z) == pytest.approx([-5 * (0.2**0.1 * 0.8**0.1)])


# ---- GEN -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(np.float64, RTOL64), (np.float32, RTOL32)])
@pytest.mark.parametrize("top_m", [1, 5, 12, 100])
def test_gen_matches_loop(dtype, rtol, top_m):
    z = _logits(dtype=dtype)
    got = create("gen", {"M": top_m, "gamma": 0.1}).score(None, z)
    np.testing.assert_allclose(got, loop(lambda r: ref_gen(r, 0.1, top_m), z), rtol=rtol)


def test_gen_m_at_least_c_uses_all_classes():
    z = _logits(c=7)
    full = create("gen", {"M": 7}).score(None, z)
    np.testing.assert_array_equal(create("gen", {"M": 100}).score(None, z), full)
    np.testing.assert_allclose(full, loop(lambda r: ref_gen(r, 0.1, 7), z), rtol=RTOL64)


def test_gen_ties_and_other_gamma():
    z = np.array([[1.0, 1.0, 1.0, 0.0], [2.0, 2.0, -1.0, -1.0]])
    got = create("gen", {"M": 2, "gamma": 0.5}).score(None, z)
    np.testing.assert_allclose(got, loop(lambda r: ref_gen(r, 0.5, 2), z), rtol=RTOL64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gen_finite_when_probabilities_underflow(dtype):
    z = np.array([[0.0, -1e4, -1e4, 5.0], [1e4, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype)
    got = create("gen", {"M": 4}).score(None, z)
    assert np.all(np.isfinite(got))
    # one-hot rows (p in {0, 1}) have zero generalized entropy, the maximum score
    assert got[1] == 0.0
    assert got[0] < 0.0 and got[2] < got[0]


# ---- ReAct family ------------------------------------------------------------------------


def test_react_threshold_is_linear_quantile_of_all_train_elements():
    train = _feats(50, seed=4)
    react = create("react").fit(FitData(fc=_fc(), train=_fset(train)))
    assert react.clip_ == pytest.approx(ref_quantile(train.ravel(), 0.99), rel=RTOL32)
    assert react.clip_ == np.quantile(train.ravel(), 0.99, method="linear")


def test_react_score_matches_loop():
    fc, train, x = _fc(), _feats(60, seed=4), _feats(25, seed=5)
    react = create("react").fit(FitData(fc=fc, train=_fset(train)))
    c = ref_quantile(train.ravel(), 0.99)
    ref = [ref_logsumexp(ref_linear([min(float(v), c) for v in row], fc)) for row in x]
    np.testing.assert_allclose(react.score(x, None), ref, rtol=RTOL32)


def test_react_source_val_uses_val_percentile():
    fc, train, val = _fc(), _feats(60, seed=4), _feats(30, seed=6)
    data = FitData(fc=fc, train=_fset(train), val=_fset(val, "val"))
    react = create("react", {"source": "val"}).fit(data)
    assert react.clip_ == np.percentile(val.ravel(), 90)
    assert react.clip_ == pytest.approx(ref_quantile(val.ravel(), 0.9), rel=RTOL32)
    with pytest.raises(DataError, match="val"):
        create("react", {"source": "val"}).fit(FitData(fc=fc, train=_fset(train)))


def test_react_checks_each_field_against_its_source():
    """quantile is read with source train only, percentile with source val only: the
    other field set is an error naming methods.<name>.<field>, never silently ignored."""
    fc, train, val = _fc(), _feats(60, seed=4), _feats(30, seed=6)
    data = FitData(fc=fc, train=_fset(train), val=_fset(val, "val"))
    assert create("react").fit(data).clip_ == np.quantile(train.ravel(), 0.99)
    explicit = create("react", {"source": "val", "percentile": 85}).fit(data)
    assert explicit.clip_ == np.percentile(val.ravel(), 85)
    with pytest.raises(ParamsError, match=r"^methods\.react\.quantile: not read with source: val"):
        create("react", {"source": "val", "quantile": 0.99})  # even at its default value
    with pytest.raises(ParamsError, match=r"methods\.react\.percentile: not read .* train"):
        create("react", {"percentile": 90})


def test_validation_errors_name_the_params_key_of_an_aliased_block():
    """`react_val: {method: react, ...}`: the error names methods.react_val, the key the
    user wrote, not the registered method's name."""
    from oodbench.methods import from_params

    with pytest.raises(ParamsError, match=r"^methods\.react_val\.quantile: not read"):
        from_params("react_val", {"method": "react", "source": "val", "quantile": 0.9})
    with pytest.raises(ParamsError, match=r"^methods\.hot\.temperature: must be > 0"):
        from_params("hot", {"method": "energy", "temperature": -1})


def test_score_time_errors_name_the_params_key_of_an_aliased_block():
    """A check that can only run on the data (ASH's percentile against the feature
    dimension) names the block's own key too, not the registered method's."""
    from oodbench.methods import from_params

    ash = from_params("ash_strict", {"method": "ash", "percentile": 99})
    ash.fit(FitData(fc=_fc()))
    with pytest.raises(ParamsError, match=r"^methods\.ash_strict\.percentile: 99\.0 keeps no"):
        ash.score(_feats(3, seed=1), None)


def test_gen_react_matches_loop():
    fc, train, x = _fc(), _feats(60, seed=4), _feats(25, seed=5)
    det = create("gen_react", {"M": 4}).fit(FitData(fc=fc, train=_fset(train)))
    c = ref_quantile(train.ravel(), 0.99)
    assert det.clip_ == pytest.approx(c, rel=RTOL32)
    ref = [ref_gen(ref_linear([min(float(v), c) for v in row], fc), 0.1, 4) for row in x]
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL32)
    assert "train" in det.requires
    with pytest.raises(DataError):
        create("gen_react").fit(FitData(fc=fc))


def test_local_react_clips_each_dataset_at_its_own_quantile():
    fc = _fc()
    det = create("local_react").fit(FitData(fc=fc))
    assert det.requires == frozenset()
    for seed, n in [(7, 30), (8, 1)]:
        x = _feats(n, seed=seed)
        c = ref_quantile(x.ravel(), 0.9995)
        ref = [ref_logsumexp(ref_linear([min(float(v), c) for v in row], fc)) for row in x]
        np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL32)


# ---- hyperparameter validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "name,params,key",
    [
        ("msp", {"temperature": 0}, "methods.msp.temperature"),
        ("energy", {"temperature": -1.0}, "methods.energy.temperature"),
        ("odin", {"temperature": "hot"}, "methods.odin.temperature"),
        ("react", {"quantile": 1.5}, "methods.react.quantile"),
        ("react", {"percentile": 0}, "methods.react.percentile"),
        ("react", {"source": "test"}, "methods.react.source"),
        ("react", {"source": "val", "percentile": 120}, "methods.react.percentile"),
        ("react", {"source": "train", "percentile": 95}, "methods.react.percentile"),
        ("react", {"source": "val", "quantile": 0.9}, "methods.react.quantile"),
        ("gen", {"gamma": 0}, "methods.gen.gamma"),
        ("gen", {"M": 0}, "methods.gen.M"),
        ("gen", {"M": 2.5}, "methods.gen.M"),
        ("gen", {"m": 10}, "methods.gen.m"),
        ("gen_react", {"quantile": 0.0}, "methods.gen_react.quantile"),
        ("gen_react", {"gamma": -0.1}, "methods.gen_react.gamma"),
        ("local_react", {"quantile": 2}, "methods.local_react.quantile"),
        ("maxlogit", {"temperature": 1}, "methods.maxlogit.temperature"),
    ],
)
def test_invalid_hyperparameters_name_the_key(name, params, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        create(name, params)
