"""GradNorm's closed form against the reference's per-sample autograd (ViM benchmark).

The closed form on float64 logits agrees with float64 autograd to rtol 1e-10. The
detector takes float32 logits (as the pipeline computes them), which moves scores by
~1e-7 relative (rtol 1e-6 against float64 autograd); the reference's own float32
autograd agrees to rtol 1e-4 (its C p_c - 1 cancels near the uniform prediction).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oodbench.core.errors import ParamsError
from oodbench.formats.classifier import Linear
from oodbench.methods import create
from oodbench.methods.gradnorm import gradnorm


def _reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, dtype: torch.dtype, t: float = 1.0):
    """Per sample: loss = mean(sum(-ones * log_softmax(fc(x) / T))), sum |grad W|."""
    fc = torch.nn.Linear(w.shape[1], w.shape[0]).to(dtype)
    fc.weight.data[...] = torch.from_numpy(w).to(dtype)
    fc.bias.data[...] = torch.from_numpy(b).to(dtype)
    logsoftmax = torch.nn.LogSoftmax(dim=-1)
    confs = []
    for i in torch.from_numpy(x).to(dtype):
        targets = torch.ones((1, w.shape[0]), dtype=dtype)
        fc.zero_grad()
        loss = torch.mean(torch.sum(-targets * logsoftmax(fc(i[None]) / t), dim=-1))
        loss.backward()
        confs.append(torch.sum(torch.abs(fc.weight.grad.data)).item())
    return np.array(confs)


def _problem(c: int, d: int = 16, n: int = 25, seed: int = 0):
    rng = np.random.default_rng(seed)
    fc = Linear(
        rng.normal(size=(c, d)).astype(np.float32),
        rng.normal(size=c).astype(np.float32),
        [str(k) for k in range(c)],
    )
    x = np.abs(rng.normal(size=(n, d))).astype(np.float32)  # post-ReLU-like features
    return fc, x


@pytest.mark.parametrize("c", [7, 1000])
def test_matches_per_sample_autograd(c: int) -> None:
    fc, x = _problem(c)
    want64 = _reference(x, fc.weight, fc.bias, torch.float64)
    logits64 = x.astype(np.float64) @ fc.weight.T.astype(np.float64) + fc.bias
    np.testing.assert_allclose(gradnorm(x, logits64), want64, rtol=1e-10)
    got = create("gradnorm").score(x, fc.logits(x))
    np.testing.assert_allclose(got, want64, rtol=1e-6)
    want32 = _reference(x, fc.weight, fc.bias, torch.float32)
    np.testing.assert_allclose(got, want32, rtol=1e-4)


def test_temperature_and_single_sample() -> None:
    fc, x = _problem(5, seed=1)
    det = create("gradnorm", {"temperature": 2.5})
    got = det.score(x[:1], fc.logits(x[:1]))
    assert got.shape == (1,)
    want = _reference(x[:1], fc.weight, fc.bias, torch.float64, 2.5)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_uniform_prediction_and_ties() -> None:
    """Equal logits give p = 1/C and a zero gradient; equal rows get equal scores."""
    x = np.ones((3, 4), np.float32)
    logits = np.zeros((3, 10), np.float32)
    np.testing.assert_array_equal(create("gradnorm").score(x, logits), 0.0)
    fc, x = _problem(6, seed=2)
    twice = np.repeat(x[:1], 2, 0)
    s = create("gradnorm").score(twice, fc.logits(twice))
    assert s[0] == s[1]


@pytest.mark.parametrize(
    ("params", "key"),
    [({"temperature": 0}, "temperature"), ({"temperature": "1"}, "temperature"), ({"c": 3}, "c")],
)
def test_invalid_hyperparameters_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ParamsError, match=rf"methods\.gradnorm\.{key}"):
        create("gradnorm", params)
