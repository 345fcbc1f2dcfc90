"""Straightforward per-sample score loops, in the style of the reference scripts.

Each ``loop_<name>(detector, features, logits)`` scores a block of rows one row at a
time in Python, as the ViM benchmark, GEN, MOODv2 and OpenOOD scripts do, reusing the
state of the already *fitted* vectorised detector (its clip threshold, Gaussians, bank,
templates...). They exist only so that ``benchmarks/scores.py`` can time the reference
style next to our vectorised ``score``, and check on the timed rows that both agree.
Fitted arrays are converted to the loop's dtype once per call, outside the row loop.

:data:`LOOPS` maps a method name to its loop; :func:`loop_for` falls back to calling
the vectorised ``score`` on one row at a time for a method without one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import logsumexp, softmax

from oodbench.methods import Detector

LoopFn = Callable[[Detector, np.ndarray, np.ndarray], np.ndarray]


def _rows(
    fn: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """[fn(x_i, z_i) for every row i], as float64."""
    return np.array([fn(x[i], z[i]) for i in range(len(x))], dtype=np.float64)


def _fc32(detector: Detector, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    w = detector.fc_.weight if weight is None else weight
    return np.asarray(w, np.float32), np.asarray(detector.fc_.bias, np.float32)


# ---- logits only ------------------------------------------------------------------------


def loop_msp(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    t = det.temperature
    return _rows(lambda _, zi: softmax(zi / t).max(), x, z)


def loop_maxlogit(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _rows(lambda _, zi: zi.max(), x, z)


def loop_energy(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    t = det.temperature
    return _rows(lambda _, zi: t * logsumexp(zi / t), x, z)


def _gen_row(zi: np.ndarray, gamma: float, top_m: int) -> float:
    p = np.sort(softmax(zi))[-top_m:]
    return -np.sum(p**gamma * np.clip(1 - p, 0, None) ** gamma)


def loop_gen(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _rows(lambda _, zi: _gen_row(zi, det.gamma, det.M), x, z)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """The ViM benchmark's python metric: sum(where(p != 0, p log(p / q), 0))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(p != 0, p * np.log(p / q), 0)))


def loop_klm(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per row, KL to every template one class at a time (sklearn's python-metric path)."""
    templates = det.templates_

    def row(_: np.ndarray, zi: np.ndarray) -> float:
        p = softmax(zi.astype(np.float32)).astype(np.float64)
        return -np.min([_kl(p, q) for q in templates])

    return _rows(row, x, z)


def loop_mos(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    starts = np.cumsum([0, *(s + 1 for s in det.sizes_)])

    def row(_: np.ndarray, zi: np.ndarray) -> float:
        others = [softmax(zi[a:b])[0] for a, b in itertools.pairwise(starts)]
        return -min(others)

    return _rows(row, x, z)


# ---- features and the classifier --------------------------------------------------------


def _clipped_logits_loop(det: Detector, x: np.ndarray, clip: float, fn: Callable) -> np.ndarray:
    w, b = _fc32(det)
    c = np.float32(clip)
    return _rows(lambda xi, _: fn(np.minimum(xi.astype(np.float32), c) @ w.T + b), x, x)


def loop_react(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _clipped_logits_loop(det, x, det.clip_, logsumexp)


def loop_gen_react(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _clipped_logits_loop(det, x, det.clip_, lambda zi: _gen_row(zi, det.gamma, det.M))


def loop_local_react(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The dataset-level quantile (here of the block passed in), then a per-row loop."""
    clip = np.quantile(np.asarray(x).ravel(), det.quantile, method="linear")
    return _clipped_logits_loop(det, x, float(clip), logsumexp)


def loop_gradnorm(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The reference: per sample, backward of the all-ones-target loss, sum |grad W| (float32)."""
    w, b = _fc32(det)
    fc = torch.nn.Linear(w.shape[1], w.shape[0])
    fc.weight.data[...] = torch.from_numpy(w)
    fc.bias.data[...] = torch.from_numpy(b)
    logsoftmax = torch.nn.LogSoftmax(dim=-1)
    t = det.temperature
    out = []
    for xi in torch.from_numpy(np.asarray(x, np.float32)):
        fc.zero_grad()
        targets = torch.ones((1, w.shape[0]))
        loss = torch.mean(torch.sum(-targets * logsoftmax(fc(xi[None]) / t), dim=-1))
        loss.backward()
        out.append(torch.sum(torch.abs(fc.weight.grad.data)).item())
    return np.array(out, dtype=np.float64)


def _residual_row(det: Detector, xi: np.ndarray) -> float:
    fit = det.fit_
    return float(np.linalg.norm((xi.astype(np.float32) - fit.origin) @ fit.null_space))


def loop_vim(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    alpha = np.float32(det.fit_.alpha)
    return _rows(lambda xi, zi: logsumexp(zi) - alpha * _residual_row(det, xi), x, z)


def loop_residual(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return _rows(lambda xi, _: -_residual_row(det, xi), x, z)


def _gaussian_min(gaussians: object) -> Callable[[np.ndarray], float]:
    """ViM's ``(((f - mean) @ prec) * (f - mean)).sum(-1).min()`` for one row f, float32."""
    means = np.asarray(gaussians.means + gaussians.shift, np.float32)
    prec = np.asarray(gaussians.precision, np.float32)

    def dist(f: np.ndarray) -> float:
        f = f.astype(np.float32)
        if gaussians.normalize:
            f = f / max(np.linalg.norm(f), np.float32(1e-12))
        diff = f - means
        return float(((diff @ prec) * diff).sum(-1).min())

    return dist


def loop_mahalanobis(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    dist = _gaussian_min(det.gaussians_)
    return _rows(lambda xi, _: -dist(xi), x, z)


def loop_rmds(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    dist, background = _gaussian_min(det.gaussians_), _gaussian_min(det.background_)
    return _rows(lambda xi, _: background(xi) - dist(xi), x, z)


def _topk_row(bank: np.ndarray, xi: np.ndarray, k: int) -> np.ndarray:
    """Inner products of the normalised row with the whole bank, then the k largest."""
    q = xi.astype(np.float32) / max(np.linalg.norm(xi.astype(np.float32)), np.float32(1e-12))
    sims = bank @ q
    return np.sort(sims)[::-1][:k].astype(np.float64)


def loop_knn(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    k, t, openood = det.k_, det.temperature, det.variant == "openood"
    bank = det.bank_.vectors()

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        cos = _topk_row(bank, xi, k)
        return -(2.0 - 2.0 * cos[-1]) if openood else np.exp(cos / t).mean()

    return _rows(row, x, z)


def loop_nnguide(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    bank = det.bank_.vectors()

    def row(xi: np.ndarray, zi: np.ndarray) -> float:
        return _topk_row(bank, xi, det.k_).mean() * logsumexp(zi.astype(np.float32))

    return _rows(row, x, z)


def loop_mcm(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """MCM's per-image loop: project, normalise, cosine to each class text, softmax max."""
    projection = np.asarray(det.projection_, np.float32)
    text = np.asarray(det.text_, np.float32)
    t = det.temperature

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        e = xi.astype(np.float32) @ projection
        e = e / max(np.linalg.norm(e), np.float32(1e-12))
        return softmax((e @ text.T) / t).max()

    return _rows(row, x, z)


# ---- activation shaping and feature geometry (recompute z from x, as the detectors) -----


def _top_values(xi: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries (ties to the lower index, as topk_mask)."""
    idx = np.argsort(-xi, kind="stable")[:k]
    return idx, xi[idx]


def _ash_row(xi: np.ndarray, k: int, variant: str) -> np.ndarray:
    idx, v = _top_values(xi, k)
    s1 = xi.sum()
    out = np.zeros_like(xi)
    if variant == "b":
        out[idx] = s1 / np.float32(k)
        return out
    out[idx] = v
    if variant == "s":
        s2 = out.sum()
        out = out * np.exp(s1 / s2 if s2 != 0 else np.float32(0))
    return out


def _kept(x: np.ndarray, percentile: float) -> int:
    return x.shape[1] - int(np.round(x.shape[1] * percentile / 100.0))


def loop_ash(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det)
    k = _kept(x, det.percentile_)
    shape = det.variant
    return _rows(lambda xi, _: logsumexp(_ash_row(xi.astype(np.float32), k, shape) @ w.T + b), x, z)


def loop_scale(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det)
    k = _kept(x, det.percentile)

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        xi = xi.astype(np.float32)
        s1, s2 = xi.sum(), _top_values(xi, k)[1].sum()
        return logsumexp(xi * np.exp(s1 / s2 if s2 != 0 else np.float32(0)) @ w.T + b)

    return _rows(row, x, z)


def loop_dice(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det, det.masked_weight_)
    return _rows(lambda xi, _: logsumexp(xi.astype(np.float32) @ w.T + b), x, z)


def loop_she(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det)

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        xi = xi.astype(np.float32)
        return xi @ det.patterns_[np.argmax(xi @ w.T + b)]

    return _rows(row, x, z)


def loop_fdbd(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det)
    w64 = w.astype(np.float64)
    centre = det.train_mean_ if det.distance_as_normalizer else np.float32(0)

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        xi = xi.astype(np.float32)
        zi = xi @ w.T + b
        c = np.argmax(zi)
        denom = np.linalg.norm(w64[c] - w64, axis=1)
        denom[c] = 1.0
        distance = np.sum(np.abs(zi[c] - zi).astype(np.float64) / denom)
        return distance / np.linalg.norm((xi - centre).astype(np.float64))

    return _rows(row, x, z)


def loop_nci(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    w, b = _fc32(det)
    w64 = w.astype(np.float64)

    def row(xi: np.ndarray, _: np.ndarray) -> float:
        xi = xi.astype(np.float32)
        centred = (xi - det.train_mean_).astype(np.float64)
        align = w64[np.argmax(xi @ w.T + b)] @ centred / np.linalg.norm(centred)
        return align + det.alpha * np.abs(xi.astype(np.float64)).sum()

    return _rows(row, x, z)


# ---- registry ---------------------------------------------------------------------------


def per_row_vectorised(det: Detector, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The fallback: the vectorised score called on one row at a time (call overhead only)."""
    return np.concatenate([det.score(x[i : i + 1], z[i : i + 1]) for i in range(len(x))])


LOOPS: dict[str, LoopFn] = {
    name[len("loop_") :]: fn for name, fn in globals().items() if name.startswith("loop_")
}
LOOPS["odin"] = loop_msp  # ODIN at eps=0 is temperature-scaled MSP


def loop_for(name: str) -> tuple[LoopFn, bool]:
    """The per-sample loop of `name` and whether it is the per-row-``score`` fallback."""
    return (LOOPS[name], False) if name in LOOPS else (per_row_vectorised, True)
