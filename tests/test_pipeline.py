"""The pipeline end to end with real `dvc repro` / `dvc status` calls in a temporary repo."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from stages.metrics import METRIC_NAMES
from tests.conftest import run

pytestmark = pytest.mark.slow


def stale_stages(workspace) -> set[str]:
    out = run(["dvc", "status"], workspace).stdout
    return set(re.findall(r"^(\S+):\s*$", out, flags=re.M))


def test_full_repro_writes_metrics(demo_workspace):
    report = json.loads((demo_workspace / "metrics" / "lite0.json").read_text())
    assert set(report["methods"]) == {"msp", "energy", "react", "maxlogit"}
    for method in report["methods"].values():
        assert set(method) == {"digits_near", "textures", "photos", "mean", "near", "far"}
        for values in method.values():
            assert set(values) == set(METRIC_NAMES)
            assert all(0.0 <= v <= 1.0 for v in values.values())
    # the probe learns the six digit classes far above chance (1/6)
    assert report["id"]["accuracy"] > 0.5
    assert report["id"]["n"] == 6 * 4
    assert report["ood"]["textures"]["n"] == 3 * 4


def test_second_repro_reruns_nothing(demo_workspace):
    out = run(["dvc", "repro"], demo_workspace).stdout
    assert "Running stage" not in out
    assert stale_stages(demo_workspace) == set()


def test_method_param_change_reruns_only_its_score_and_evaluate(demo_workspace):
    params_path = demo_workspace / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["methods"]["energy"]["temperature"] = 2.0
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert stale_stages(demo_workspace) == {"score@lite0-energy"}
        out = run(["dvc", "repro"], demo_workspace).stdout
        ran = set(re.findall(r"Running stage '([^']+)'", out))
        assert ran == {"score@lite0-energy", "evaluate@lite0"}
    finally:
        params_path.write_text(original)
        run(["dvc", "repro"], demo_workspace)


def test_scores_match_a_direct_computation(demo_workspace):
    """The energy scores on disk equal logsumexp of features @ W^T + b computed here."""
    import pandas as pd
    from scipy.special import logsumexp

    from stages.store import load_fc, load_features

    features = load_features(demo_workspace / "features" / "lite0" / "textures")
    fc = load_fc(demo_workspace / "features" / "lite0" / "fc.safetensors")
    table = pd.read_parquet(demo_workspace / "scores" / "lite0" / "energy.parquet")
    rows = table[table["dataset"] == "textures"]
    expected = logsumexp(features.features @ fc.weight.T + fc.bias, axis=1)
    np.testing.assert_allclose(rows["score"].to_numpy(), expected, rtol=1e-5)
    assert rows["index"].tolist() == features.index.tolist()


def test_dvc_metrics_show_prints_the_table(demo_workspace):
    out = run(["dvc", "metrics", "show"], demo_workspace).stdout
    assert "methods.msp.textures.auroc" in out
