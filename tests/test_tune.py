"""`oodbench tune`: grids, the hold-out split, the params.yaml round trip, a real run."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods import FitData, create, registry
from oodbench.methods.react import ReAct
from oodbench.results.tune import grid_points, render, search, split_rows, write_choice
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


def test_split_is_seeded_disjoint_and_halves_the_held_out_rows():
    fs = FeatureSet("t", np.zeros((10, 2), np.float32), np.arange(10), np.arange(10) + 100)
    split = split_rows(fs, 0.3, seed=0)
    assert (len(split.fit), len(split.val), len(split.evaluate)) == (7, 1, 2)
    parts = [set(split.fit.index), set(split.val.index), set(split.evaluate.index)]
    assert set().union(*parts) == set(fs.index) and sum(map(len, parts)) == len(fs)
    again = split_rows(fs, 0.3, seed=0)
    assert again.evaluate.index.tolist() == split.evaluate.index.tolist()
    assert again.val.index.tolist() == split.val.index.tolist()
    assert split_rows(fs, 0.01, seed=0).evaluate.index.size == 1  # >= 1 row on each side
    with pytest.raises(ParamsError, match="holdout"):
        split_rows(fs, 1.0, seed=0)


def _problem(n_train: int = 200, n_ood: int = 60) -> tuple[Linear, FeatureSet, FeatureSet]:
    """Distinct random rows (index = row number), so scored rows can be traced back."""
    rng = np.random.default_rng(0)
    d, c = 8, 3
    fc = Linear(
        rng.normal(size=(c, d)).astype(np.float32), np.zeros(c, np.float32), ["a", "b", "c"]
    )
    x = np.abs(rng.normal(size=(n_train, d))).astype(np.float32)
    train = FeatureSet("train", x, rng.integers(0, c, n_train), np.arange(n_train))
    o = np.abs(rng.normal(1, 2, size=(n_ood, d))).astype(np.float32)
    return fc, train, FeatureSet("val_ood", o, -np.ones(n_ood, np.int64), np.arange(n_ood))


def _spy(monkeypatch: pytest.MonkeyPatch, seen: dict) -> None:
    """Record the rows ReAct is fitted on and the rows it scores."""
    fit, score = ReAct.fit, ReAct.score

    def spy_fit(self, data):
        seen.setdefault("fit", []).append((set(data.train.index), set(data.val.index)))
        return fit(self, data)

    def spy_score(self, features, logits):
        seen.setdefault("scored", []).append(features.copy())
        return score(self, features, logits)

    monkeypatch.setattr(ReAct, "fit", spy_fit)
    monkeypatch.setattr(ReAct, "score", spy_score)


def _rows_of(train: FeatureSet, features: np.ndarray) -> set[int]:
    where = {row.tobytes(): int(i) for row, i in zip(train.features, train.index, strict=True)}
    return {where[row.tobytes()] for row in features if row.tobytes() in where}


@pytest.mark.parametrize(
    ("block", "grid"),
    [
        ({"method": "react", "source": "train"}, {"quantile": [0.9, 0.99]}),
        ({"method": "react", "source": "val"}, {"percentile": [80.0, 95.0]}),
    ],
)
def test_no_grid_point_is_scored_on_rows_it_was_fitted_on(monkeypatch, block, grid):
    """Fit rows (train and ID val) and scored ID rows are disjoint for every point, also
    for a detector that fits on ID val (ReAct source: val, swept here over percentile)."""
    monkeypatch.setattr(ReAct, "grid", grid)
    fc, train, ood = _problem()
    split = split_rows(train, 0.2, seed=3)
    seen: dict = {}
    _spy(monkeypatch, seen)
    result = search("react_x", block, fc, split, ood)
    assert len(result.points) == 2 and all(v is not None for _, v, _ in result.points)
    assert result.sizes == (160, 20, 20)
    evaluated = set(split.evaluate.index)
    for fit_rows, val_rows in seen["fit"]:
        assert fit_rows == set(split.fit.index) and val_rows == set(split.val.index)
        assert not (fit_rows | val_rows) & evaluated
    scored_id = [_rows_of(train, f) for f in seen["scored"]]
    assert scored_id[0] == evaluated and scored_id[1] == set()  # ID rows, then OOD rows
    if block.get("source") == "val":  # the clip comes from the val half, not the evaluated
        det = create("react", {"source": "val", "percentile": 95.0})
        det.fit(FitData(fc=fc, train=split.fit, val=split.val))
        assert det.clip_ == np.percentile(split.val.features, 95.0)
    assert "on 20 held-out ID train rows" in render(result)
    assert "fitted on 160 train rows + 20 held-out rows as ID val" in render(result)


def test_sweeping_a_field_the_block_does_not_read_is_refused():
    """react's grid is over quantile; a source: val block reads percentile, so every
    point fails validation and tune stops instead of writing a no-op choice."""
    fc, train, ood = _problem()
    block = {"method": "react", "source": "val", "percentile": 90.0}
    with pytest.raises(
        DataError, match=r"every grid point failed.*quantile: not read with source: val"
    ):
        search("react_val", block, fc, split_rows(train, 0.2, seed=0), ood)


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
