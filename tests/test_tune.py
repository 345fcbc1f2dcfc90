"""`oodbench tune`: grids, the hold-out split, the params.yaml round trip, a real run."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from stages.errors import ParamsError
from stages.methods import registry
from stages.store import FeatureSet
from stages.tune import grid_points, split_holdout, write_choice
from tests.conftest import run

PARAMS = """\
# top comment
benchmark:
  ood:
  - digits_near
  one_class: null
methods:
  # react: the ViM benchmark's setting
  react:
    source: train
    quantile: 0.99  # trailing comment
  msp:
    temperature: 1.0
"""


def test_detectors_declare_openood_grids():
    grids = {name: cls.grid for name, cls in registry().items()}
    assert grids["react"] == {"quantile": [0.85, 0.9, 0.95, 0.99]}
    assert grids["gen"]["gamma"] == [0.01, 0.1, 0.5, 1.0, 2.0] and grids["gen"]["M"] == [
        10,
        50,
        100,
    ]
    assert 50 in grids["knn"]["k"] and grids["vim"]["dim"] == [256, 512, 1000]
    assert (
        grids["ash"]["percentile"] == grids["scale"]["percentile"] == [65, 70, 75, 80, 85, 90, 95]
    )
    assert len(grid_points(grids["gen"])) == 15


def test_holdout_split_is_seeded_and_disjoint():
    fs = FeatureSet("t", np.zeros((10, 2), np.float32), np.arange(10), np.arange(10) + 100)
    fit, held = split_holdout(fs, 0.3, seed=0)
    assert len(held) == 3 and len(fit) == 7
    assert set(fit.index).isdisjoint(held.index)
    assert split_holdout(fs, 0.3, seed=0)[1].index.tolist() == held.index.tolist()
    with pytest.raises(ParamsError, match="holdout"):
        split_holdout(fs, 1.0, seed=0)


def test_write_choice_keeps_comments_and_block_style(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    write_choice(path, "react", {"quantile": np.float64(0.9)})
    write_choice(path, "knn", {"k": 10})
    text = path.read_text()
    assert text.startswith("# top comment\n")
    assert "  # react: the ViM benchmark's setting\n" in text
    assert re.search(r"\n    quantile: 0\.9 +# trailing comment\n", text)  # comment column kept
    assert "  one_class: null\n" in text and "  - digits_near\n" in text
    assert text.endswith("  knn:\n    k: 10\n")
    assert yaml.safe_load(text)["methods"]["react"] == {"source": "train", "quantile": 0.9}


@pytest.mark.slow
def test_tune_react_on_a_held_out_ood_set(demo_workspace):
    """textures is dropped from the test sets and used for tuning only."""
    path = demo_workspace / "params.yaml"
    original = path.read_text()
    try:
        params = yaml.safe_load(original)
        params["benchmark"]["ood"] = ["digits_near", "photos"]
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        refused = run(
            ["oodbench", "tune", "lite0", "react", "--ood", "photos"], demo_workspace, check=False
        )
        assert refused.returncode == 2 and "is a test set" in refused.stderr
        out = run(
            ["oodbench", "tune", "lite0", "react", "--ood", "textures"], demo_workspace
        ).stdout
        assert "4 grid points in" in out and "<- best" in out
        chosen = yaml.safe_load(path.read_text())["methods"]["react"]["quantile"]
        assert chosen in (0.85, 0.9, 0.95, 0.99)
        skipped = run(
            ["oodbench", "tune", "lite0", "knn", "--ood", "textures", "--no-write"], demo_workspace
        ).stdout
        assert "skipped (methods.knn.k: 1000 neighbours" in skipped
    finally:
        path.write_text(original)
