"""The linear probe: learns separable classes, is deterministic, folds standardisation into (W, b)."""

from __future__ import annotations

import numpy as np
import pytest

from oodbench.core.errors import DataError, ParamsError
from oodbench.heads.export import fit_probe
from oodbench.heads.probe import ProbeConfig, lr_at, train_linear_probe


def blobs(n_per_class: int = 40, dim: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (classes, dim))
    x = np.concatenate([c + rng.normal(0, 1, (n_per_class, dim)) for c in centers])
    # an offset and scale far from zero mean / unit variance exercise the folding
    x = (x * 50 + 100).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_probe_separates_blobs_and_is_deterministic():
    x, y = blobs()
    config = ProbeConfig(epochs=30, batch_size=16)
    w1, b1 = train_linear_probe(x, y, 3, config)
    w2, b2 = train_linear_probe(x, y, 3, config)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    accuracy = np.mean((x @ w1.T + b1).argmax(1) == y)
    assert accuracy > 0.95


def test_folding_is_the_identity_on_standardised_input():
    """On input that is already standardised, folding must change nothing."""
    x, y = blobs()
    x64 = x.astype(np.float64)
    x_std = ((x64 - x64.mean(0)) / x64.std(0)).astype(np.float32)
    w_fold, b_fold = train_linear_probe(x_std, y, 3, ProbeConfig(epochs=5, standardize=True))
    w_raw, b_raw = train_linear_probe(x_std, y, 3, ProbeConfig(epochs=5, standardize=False))
    np.testing.assert_allclose(w_fold, w_raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b_fold, b_raw, rtol=1e-4, atol=1e-5)


def test_schedule_warms_up_then_decays_to_zero():
    config = ProbeConfig(lr=1e-3, warmup=0.1)
    total = 100
    assert lr_at(0, total, config) == pytest.approx(1e-4)
    assert lr_at(9, total, config) == pytest.approx(1e-3)
    assert lr_at(10, total, config) == pytest.approx(1e-3)
    assert lr_at(99, total, config) < 1e-6


def test_probe_config_rejects_bad_keys_and_types():
    with pytest.raises(ParamsError, match=r"probe\.epoch"):
        ProbeConfig.from_params({"epoch": 3})
    with pytest.raises(ParamsError, match=r"probe\.lr"):
        ProbeConfig.from_params({"lr": "fast"})
    assert ProbeConfig.from_params({"epochs": 3}).epochs == 3


def test_fit_probe_needs_every_class():
    x, y = blobs()
    with pytest.raises(DataError, match=r"0\.\.C-1"):
        fit_probe(x, np.where(y == 1, 2, y), ProbeConfig(epochs=1), "train")
    with pytest.raises(DataError, match="no labels"):
        fit_probe(x, -np.ones_like(y), ProbeConfig(epochs=1), "train")
