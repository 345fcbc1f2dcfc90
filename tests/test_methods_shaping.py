"""ASH, SCALE, DICE, SHE, fDBD and NCI against slow per-sample reference loops.

The loops follow the reference code sample by sample in float64 (torch.topk becomes
a stable sort of the indices by decreasing value, so ties go to the lower index, the
rule the vectorised code documents). The detectors compute in float32 like the
references: scores agree to 1e-5 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create
from oodbench.methods.shared.shaping import kept_count, topk_mask

RTOL = 1e-5
D, C = 32, 10


def _fc(seed: int = 2) -> Linear:
    r = np.random.default_rng(seed)
    w = (r.normal(size=(C, D)) / np.sqrt(D)).astype(np.float32)
    b = (r.normal(size=C) * 0.1).astype(np.float32)
    return Linear(weight=w, bias=b, class_names=[str(i) for i in range(C)])


def _feats(n: int, seed: int) -> np.ndarray:
    """Non-negative sparse-ish features, like post-ReLU average pooling."""
    return np.maximum(np.random.default_rng(seed).normal(0.2, 1, size=(n, D)), 0).astype(np.float32)


def _train(fc: Linear, n: int = 200, seed: int = 4) -> FeatureSet:
    x = _feats(n, seed)
    pred = np.argmax(fc.logits(x), axis=1)
    flip = np.random.default_rng(seed + 1).random(n) < 0.3
    labels = np.where(flip, (pred + 1) % C, pred).astype(np.int64)  # 70% correct
    return FeatureSet("train", x, labels, np.arange(n, dtype=np.int64))


# ---- slow references -------------------------------------------------------------------


def ref_linear(x, fc: Linear) -> list[float]:
    w, b = fc.weight.astype(np.float64), fc.bias.astype(np.float64)
    return [sum(float(x[d]) * w[c, d] for d in range(len(x))) + b[c] for c in range(len(b))]


def ref_energy(x, fc: Linear) -> float:
    z = ref_linear(x, fc)
    m = max(z)
    return m + math.log(sum(math.exp(v - m) for v in z))


def ref_top(row, percentile: float) -> list[int]:
    n = len(row)
    k = n - int(np.round(n * percentile / 100.0))
    return sorted(range(n), key=lambda i: -row[i])[:k]


def ref_ash(row, percentile: float, variant: str) -> list[float]:
    row = [float(v) for v in row]
    keep = ref_top(row, percentile)
    out = [0.0] * len(row)
    s1 = sum(row)
    s2 = sum(row[i] for i in keep)
    for i in keep:
        if variant == "p":
            out[i] = row[i]
        elif variant == "b":
            out[i] = s1 / len(keep)
        else:
            out[i] = row[i] * math.exp(s1 / s2)
    return out


def ref_scale(row, percentile: float) -> list[float]:
    row = [float(v) for v in row]
    s2 = sum(row[i] for i in ref_top(row, percentile))
    return [v * math.exp(sum(row) / s2) for v in row]


def ref_mean(x) -> list[float]:
    return [sum(float(r[d]) for r in x) / len(x) for d in range(x.shape[1])]


def ref_quantile(values, q: float) -> float:
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def argmax(z) -> int:
    return z.index(max(z))


# ---- ASH / SCALE ---------------------------------------------------------------------------


def test_topk_mask_exact_count_and_ties():
    x = np.array([[1.0, 3.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    mask = topk_mask(x, 2)
    assert mask.sum(axis=1).tolist() == [2, 2, 2]
    assert mask[0].tolist() == [False, True, True, False, False]
    assert mask[1].tolist() == [True, True, False, False, False]
    assert mask[2].tolist() == [True, True, False, False, False]
    assert kept_count(2048, 90) == 205 and kept_count(512, 65) == 179


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [None, 50.0, 90.0])
def test_ash_matches_loop(variant, percentile):
    fc, x = _fc(), _feats(20, 5)
    params = {"variant": variant} | ({} if percentile is None else {"percentile": percentile})
    det = create("ash", params).fit(FitData(fc=fc))
    p = det.percentile_
    assert p == (percentile or {"p": 60.0, "b": 65.0, "s": 90.0}[variant])
    ref = [ref_energy(ref_ash(row, p, variant), fc) for row in x]
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)


def test_ash_ties_single_sample_and_zero_row():
    fc = _fc()
    x = np.zeros((1, D), np.float32)
    x[0, :4] = 2.0  # ties across the kept boundary: k = 32 - round(28.8) = 3
    for variant in "pbs":
        got = create("ash", {"variant": variant}).fit(FitData(fc=fc)).score(x, None)
        ref = ref_energy(
            ref_ash(x[0], create("ash", {"variant": variant}).percentile_, variant), fc
        )
        assert got.shape == (1,) and got[0] == pytest.approx(ref, rel=RTOL)
    zero = np.zeros((2, D), np.float32)
    got = create("ash").fit(FitData(fc=fc)).score(zero, None)
    bias_energy = ref_energy([0.0] * D, fc)
    np.testing.assert_allclose(got, [bias_energy, bias_energy], rtol=RTOL)


@pytest.mark.parametrize("percentile", [85.0, 65.0, 0.0])
def test_scale_matches_loop(percentile):
    fc, x = _fc(), _feats(20, 6)
    det = create("scale", {"percentile": percentile}).fit(FitData(fc=fc))
    ref = [ref_energy(ref_scale(row, percentile), fc) for row in x]
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)
    assert create("scale").percentile == 85.0


def test_percentile_keeping_nothing_is_a_params_error():
    fc, x = _fc(), _feats(3, 5)
    with pytest.raises(ParamsError, match=r"methods\.ash\.percentile"):
        create("ash", {"percentile": 99.0}).fit(FitData(fc=fc)).score(x, None)


# ---- DICE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [70.0, 90.0, 0.0])
def test_dice_matches_loop(p):
    fc = _fc()
    train, x = _train(fc), _feats(15, 7)
    det = create("dice", {"p": p}).fit(FitData(fc=fc, train=train))
    mean = ref_mean(train.features)
    w = fc.weight.astype(np.float64)
    contrib = [[mean[d] * w[c, d] for d in range(D)] for c in range(C)]
    thresh = ref_quantile([v for row in contrib for v in row], p / 100)
    assert det.threshold_ == pytest.approx(thresh, rel=1e-5)
    masked = np.array(
        [[w[c, d] if contrib[c][d] > thresh else 0.0 for d in range(D)] for c in range(C)]
    )
    ref = [ref_energy(row, Linear(masked, fc.bias, fc.class_names)) for row in x]
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)
    assert create("dice").p == 70.0 and det.requires == {"train"}


# ---- SHE -----------------------------------------------------------------------------------


def ref_she_patterns(train: FeatureSet, fc: Linear) -> dict[int, list[float]]:
    members: dict[int, list] = {}
    for row, label in zip(train.features, train.labels, strict=True):
        pred = argmax(ref_linear(row, fc))
        if pred == label:
            members.setdefault(pred, []).append(row)
    return {c: ref_mean(np.array(rows)) for c, rows in members.items()}


def test_she_matches_loop():
    fc = _fc()
    train, x = _train(fc), _feats(15, 8)
    det = create("she").fit(FitData(fc=fc, train=train))
    patterns = ref_she_patterns(train, fc)
    ref = []
    for row in x:
        pattern = patterns.get(argmax(ref_linear(row, fc)), [0.0] * D)
        ref.append(sum(float(a) * b for a, b in zip(row, pattern, strict=True)))
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)
    assert det.requires == {"train", "labels"}


def test_she_empty_class_option():
    fc = _fc()
    train = _train(fc)
    z = fc.logits(train.features)
    pred = np.argmax(z, axis=1)
    victim = int(np.bincount(pred, minlength=C).argmax())
    labels = np.where(pred == victim, (victim + 1) % C, train.labels)  # victim never correct
    train = FeatureSet("train", train.features, labels, train.index)
    x = train.features[pred == victim][:3]
    zeros = create("she").fit(FitData(fc=fc, train=train))
    assert victim in zeros.empty_classes_
    np.testing.assert_array_equal(zeros.score(x, None), 0.0)
    nan = create("she", {"empty": "nan"}).fit(FitData(fc=fc, train=train))
    assert np.all(np.isnan(nan.score(x, None)))
    unlabelled = FeatureSet("train", train.features, np.full(len(labels), -1), train.index)
    with pytest.raises(DataError, match="label"):
        create("she").fit(FitData(fc=fc, train=unlabelled))


# ---- fDBD / NCI ------------------------------------------------------------------------------


@pytest.mark.parametrize("normalizer", [True, False])
def test_fdbd_matches_loop(normalizer):
    fc = _fc()
    train, x = _train(fc), _feats(15, 9)
    det = create("fdbd", {"distance_as_normalizer": normalizer}).fit(FitData(fc=fc, train=train))
    mean = ref_mean(train.features)
    w = fc.weight.astype(np.float64)
    ref = []
    for row in x:
        z = ref_linear(row, fc)
        c = argmax(z)
        total = sum(
            abs(z[c] - z[j]) / math.sqrt(sum((w[c, d] - w[j, d]) ** 2 for d in range(D)))
            for j in range(C)
            if j != c
        )
        centre = [float(row[d]) - (mean[d] if normalizer else 0.0) for d in range(D)]
        ref.append(total / math.sqrt(sum(v * v for v in centre)))
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)
    one = det.score(x[:1], None)
    assert one.shape == (1,) and one[0] == pytest.approx(ref[0], rel=RTOL)


@pytest.mark.parametrize("alpha", [1e-4, 0.1, 0.0])
def test_nci_matches_loop(alpha):
    fc = _fc()
    train, x = _train(fc), _feats(15, 10)
    det = create("nci", {"alpha": alpha}).fit(FitData(fc=fc, train=train))
    mean = ref_mean(train.features)
    w = fc.weight.astype(np.float64)
    ref = []
    for row in x:
        c = argmax(ref_linear(row, fc))
        centre = [float(row[d]) - mean[d] for d in range(D)]
        norm = math.sqrt(sum(v * v for v in centre))
        align = sum(w[c, d] * centre[d] for d in range(D)) / norm
        ref.append(align + alpha * sum(abs(float(v)) for v in row))
    np.testing.assert_allclose(det.score(x, None), ref, rtol=RTOL)


@pytest.mark.parametrize("name", ["dice", "she", "fdbd", "nci"])
def test_train_is_required(name):
    assert "train" in create(name).requires
    with pytest.raises(DataError):
        create(name).fit(FitData(fc=_fc()))


@pytest.mark.parametrize(
    "name,params,key",
    [
        ("ash", {"variant": "q"}, "methods.ash.variant"),
        ("ash", {"percentile": 100}, "methods.ash.percentile"),
        ("ash", {"percentile": -1}, "methods.ash.percentile"),
        ("ash", {"percentile": "90"}, "methods.ash.percentile"),
        ("scale", {"percentile": 150.0}, "methods.scale.percentile"),
        ("dice", {"p": 100}, "methods.dice.p"),
        ("dice", {"p": 0.7, "q": 1}, "methods.dice.q"),
        ("she", {"empty": "drop"}, "methods.she.empty"),
        ("she", {"metric": "cosine"}, "methods.she.metric"),
        ("fdbd", {"distance_as_normalizer": "yes"}, "methods.fdbd.distance_as_normalizer"),
        ("nci", {"alpha": -0.1}, "methods.nci.alpha"),
    ],
)
def test_invalid_hyperparameters_name_the_key(name, params, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        create(name, params)


@pytest.mark.parametrize("name", ["she", "fdbd", "nci"])
def test_given_logits_are_the_recomputed_ones_bit_for_bit(name):
    """she, fdbd and nci use the logits score() is given instead of recomputing
    fc.logits(x): the score stage passes fc.logits(block), that very product, so the
    scores are bit-identical to recomputing it; logits of another shape are refused.
    (Blocks of 5 rows against all 37 differ by float32 rounding only: BLAS may round a
    row's product differently with another row count.)"""
    from oodbench.results.scoring import score_set

    fc = _fc()
    det = create(name).fit(FitData(fc=fc, train=_train(fc)))
    x = _feats(37, seed=11)
    recomputed = det.score(x, None)
    np.testing.assert_array_equal(det.score(x, fc.logits(x)), recomputed)
    blocks = score_set(det, FeatureSet("x", x, np.zeros(37, np.int64), np.arange(37)), fc, 5)
    np.testing.assert_allclose(blocks, recomputed, rtol=1e-6)
    for start in range(0, 37, 5):
        block = x[start : start + 5]
        np.testing.assert_array_equal(blocks[start : start + 5], det.score(block, None))
    with pytest.raises(DataError, match=r"pass fc\.logits"):
        det.score(x, fc.logits(x)[:, :3])
