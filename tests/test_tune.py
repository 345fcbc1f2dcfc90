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
from oodbench.results import tune as T
from oodbench.results.metrics import auroc
from oodbench.results.tune import grid_points, render, search, split_rows, write_choice
from tests.conftest import rewrite_params, run
from tests.faults_catalogue import catalogue

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
    monkeypatch.setattr(T, "SOURCE_GRIDS", {("react", "val"): grid})
    fc, train, ood = _problem()
    split = split_rows(train, 0.2, seed=3)
    seen: dict = {}
    _spy(monkeypatch, seen)
    result = search("react_x", block, fc, split, ood)
    assert len(result.points) == 2 and all(v is not None for _, v, _ in result.points)
    assert len(seen["fit"]) == 3  # the current setting, then the two grid points
    assert result.sizes == (160, 20, 20)
    evaluated = set(split.evaluate.index)
    for fit_rows, val_rows in seen["fit"]:
        assert fit_rows == set(split.fit.index) and val_rows == set(split.val.index)
        assert not (fit_rows | val_rows) & evaluated
    scored_id = [_rows_of(train, f) for f in seen["scored"]]
    assert scored_id[0::2] == [evaluated] * 3 and scored_id[1::2] == [set()] * 3  # ID, OOD
    if block.get("source") == "val":  # the clip comes from the val half, not the evaluated
        det = create("react", {"source": "val", "percentile": 95.0})
        det.fit(FitData(fc=fc, train=split.fit, val=split.val))
        assert det.clip_ == np.percentile(split.val.features, 95.0)
    assert "on 20 held-out ID train rows" in render(result)
    assert "fitted on 160 train rows + 20 held-out rows as ID val" in render(result)


@catalogue(
    "params",
    "`oodbench tune` a ReAct block with `source: val` (`react_val`), whose class grid "
    "sweeps `quantile`, a field that source refuses",
    "the grid for source val sweeps `percentile` (OpenOOD's 85-99) and the best is chosen",
)
def test_react_val_is_tuned_over_percentile():
    fc, train, ood = _problem()
    block = {"method": "react", "source": "val", "percentile": 90.0}
    assert T.search_grid("react_val", block) == {"percentile": [85.0, 90.0, 95.0, 99.0]}
    assert T.search_grid("react", {"source": "train"}) == ReAct.grid
    split = split_rows(train, 0.2, seed=0)
    result = search("react_val", block, fc, split, ood)
    assert [p for p, _, _ in result.points] == [{"percentile": q} for q in (85.0, 90.0, 95.0, 99.0)]
    assert all(why == "" for _, _, why in result.points)
    expected = {}
    for q in (85.0, 90.0, 95.0, 99.0):
        det = create("react", {"source": "val", "percentile": q})
        det.fit(FitData(fc=fc, train=split.fit, val=split.val))
        scores = [det.score(x, fc.logits(x)) for x in (split.evaluate.features, ood.features)]
        expected[q] = auroc(*scores)
    assert [v for _, v, _ in result.points] == list(expected.values())
    assert result.current == {"percentile": 90.0} and result.current_auroc == expected[90.0]
    winner = max(expected, key=expected.get)
    if expected[winner] > expected[90.0]:
        assert result.best == {"percentile": winner}
    else:
        assert result.best is None


def test_a_grid_over_a_field_the_source_refuses_fails_every_point(monkeypatch):
    """Were a grid to sweep a field the block's source does not read, every point is
    refused by the detector and tune stops instead of writing a no-op choice."""
    monkeypatch.setattr(T, "SOURCE_GRIDS", {})
    fc, train, ood = _problem()
    block = {"method": "react", "source": "val", "percentile": 90.0}
    with pytest.raises(
        DataError, match=r"every grid point failed.*quantile: not read with source: val"
    ):
        search("react_val", block, fc, split_rows(train, 0.2, seed=0), ood)


@catalogue(
    "params",
    "`oodbench tune` finds no grid point better than the current setting (every point "
    "ties, e.g. all reach AUROC 100% on an easy validation set)",
    "the current setting (the defaults) is kept, params.yaml is not written, and the "
    "report says the best point ties it",
)
def test_ties_keep_the_current_setting_and_say_so():
    fc, train, ood = _problem()
    far = FeatureSet("far", ood.features + 100.0, ood.labels, ood.index)  # fully separated
    result = search("react", {}, fc, split_rows(train, 0.2, seed=0), far)
    values = [v for _, v, _ in result.points]
    assert values == [values[0]] * 4 and values[0] in (0.0, 1.0)  # every point the same
    assert result.current_auroc == values[0] and result.best is None
    text = render(result)
    shown = f"{100 * values[0]:.2f}"
    assert re.search(rf"\n  current: quantile=default +{re.escape(shown)}\n", text)
    assert "<- best" not in text
    assert text.endswith(
        f"the best grid point ties the current setting (quantile=default, AUROC {shown}): "
        "methods.react is kept as it is\n"
    )


def test_cli_does_not_write_params_on_a_tie(tmp_path):
    """`oodbench tune` on features where every point ties leaves params.yaml unchanged."""
    from oodbench.formats.classifier import save_fc
    from tests.conftest import feature_dir

    fc, train, ood = _problem()
    params = {
        "benchmark": {"backbones": ["bb"], "methods": ["react"], "id_train": "train",
                      "ood": ["test_set"], "one_class": None},
        "methods": {"react": {"source": "train", "quantile": 0.99}},
    }  # fmt: skip
    text = yaml.safe_dump(params, sort_keys=False)
    (tmp_path / "params.yaml").write_text(text)
    feature_dir(tmp_path / "features/bb/train", train.features, train.labels.tolist(), "bb")
    far = ood.features + 100.0
    feature_dir(tmp_path / "features/bb/far", far, [-1] * len(far), "bb")
    save_fc(tmp_path / "features/bb/fc.safetensors", fc)
    result = run(["oodbench", "tune", "bb", "react", "--ood", "far"], tmp_path)
    assert "methods.react is kept as it is" in result.stdout
    assert "wrote methods.react" not in result.stdout
    assert (tmp_path / "params.yaml").read_text() == text


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
def test_tune_react_on_a_held_out_ood_set(demo_copy):
    """textures is dropped from the test sets and used for tuning only. On the seeded
    small demo a grid point beats the current setting (0.99), and exactly that point is
    written back."""
    path = demo_copy / "params.yaml"
    rewrite_params(demo_copy, lambda p: p["benchmark"].update(ood=["digits_near", "photos"]))
    refused = run(["oodbench", "tune", "lite0", "react", "--ood", "photos"], demo_copy, check=False)
    assert refused.returncode == 2 and "is a test set" in refused.stderr
    out = run(["oodbench", "tune", "lite0", "react", "--ood", "textures"], demo_copy).stdout
    assert "4 grid points in" in out
    current = float(re.search(r"^  current: quantile=\S+ +(\S+)$", out, flags=re.M).group(1))
    points = {
        float(q): float(a)
        for q, a in re.findall(r"^  quantile=(\S+) +(\S+)(?:  <- best)?$", out, flags=re.M)
    }
    assert set(points) == {0.85, 0.9, 0.95, 0.99}
    (best,) = re.findall(r"^  quantile=(\S+) +\S+  <- best$", out, flags=re.M)
    assert points[float(best)] == max(points.values()) > current
    assert yaml.safe_load(path.read_text())["methods"]["react"]["quantile"] == float(best)
    assert f"wrote methods.react: {{'quantile': {best}}} to params.yaml" in out
    skipped = run(
        ["oodbench", "tune", "lite0", "knn", "--ood", "textures", "--no-write"], demo_copy
    ).stdout
    assert "skipped (methods.knn.k: 1000 neighbours" in skipped
