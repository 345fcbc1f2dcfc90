"""The leaderboard, the summary figure and the plot files, on small metrics written here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import auc, roc_curve
from typer.testing import CliRunner

from oodbench.cli.app import app
from oodbench.core.errors import DataError
from oodbench.results import report
from oodbench.results.figure import metric_matrix, write_png
from oodbench.results.plots import (
    ROC_GRID,
    csv_bytes,
    histogram,
    histogram_scale,
    roc_points,
    write_plots,
)
from tests.conftest import run
from tests.faults_catalogue import catalogue


def fake_metrics(offset: float) -> dict:
    """Two methods x two OOD sets (one near, one far) with means, like evaluate writes."""

    def block(auroc: float) -> dict:
        return {
            "auroc": auroc,
            "fpr95": 1 - auroc,
            "fpr95_ood_positive": 1 - auroc,
            "aupr_in": auroc,
            "aupr_out": auroc,
        }

    methods = {}
    for i, method in enumerate(("msp", "energy")):
        near, far = block(0.6 + 0.1 * i + offset), block(0.8 - 0.1 * i + offset)
        mean = block((near["auroc"] + far["auroc"]) / 2)
        methods[method] = {"digits": near, "textures": far, "mean": mean, "near": near, "far": far}
    return {
        "id": {"n": 24, "accuracy": 0.9},
        "ood": {"digits": {"n": 16}, "textures": {"n": 12}},
        "methods": methods,
    }


@pytest.fixture
def metrics_dir(tmp_path):
    for backbone, offset in (("lite0", 0.0), ("lite1", 0.05)):
        (tmp_path / f"{backbone}.json").write_text(json.dumps(fake_metrics(offset)))
    return tmp_path


def test_csv_puts_backbones_side_by_side(metrics_dir):
    text = report.render(report.load_all(metrics_dir), "auroc", "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == [
        "method",
        "lite0:digits auroc (fraction 0-1)",
        "lite0:textures auroc (fraction 0-1)",
    ]
    assert "lite1:mean auroc (fraction 0-1)" in rows[0]
    assert [r[0] for r in rows[1:]] == ["msp", "energy"]
    assert float(rows[1][rows[0].index("lite1:digits auroc (fraction 0-1)")]) == pytest.approx(0.65)


def test_evaluate_writes_one_summary_per_method(tmp_path, monkeypatch):
    """metrics/<bb>/<method>.json: near/far/mean AUROC and FPR95 (the files dvc.yaml
    declares as metrics); empty for a skipped method; files of methods no longer
    evaluated are removed."""
    from oodbench.results.evaluate import write_summaries

    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "metrics" / "lite0" / "odin.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    detail = fake_metrics(0.0)
    detail["methods"]["only_far"] = {"textures": detail["methods"]["msp"]["textures"]}
    detail["methods"]["only_far"]["far"] = detail["methods"]["only_far"]["mean"] = detail[
        "methods"
    ]["msp"]["far"]
    write_summaries("lite0", ["msp", "energy", "mcm", "only_far"], detail)
    folder = tmp_path / "metrics" / "lite0"
    assert sorted(p.name for p in folder.iterdir()) == [
        "energy.json", "mcm.json", "msp.json", "only_far.json"
    ]  # fmt: skip
    msp = json.loads((folder / "msp.json").read_text())
    assert msp == {
        "auroc": {"near": 0.6, "far": 0.8, "mean": 0.7},
        "fpr95": {"near": 1 - 0.6, "far": 1 - 0.8, "mean": 1 - 0.7},
    }
    assert json.loads((folder / "mcm.json").read_text()) == {}  # skipped: no methods entry
    assert json.loads((folder / "only_far.json").read_text())["auroc"] == {"far": 0.8, "mean": 0.8}


def test_markdown_marks_the_best_per_column(metrics_dir):
    text = report.render(report.load_all(metrics_dir, ["lite1"]), "auroc", "markdown")
    lines = text.splitlines()
    assert lines[0] == "| method | digits | textures | near | far | mean |"
    msp, energy = lines[2], lines[3]
    assert "**75.00**" in energy and "**85.00**" in msp  # digits: energy best, textures: msp


def test_lower_is_better_for_fpr(metrics_dir):
    header, rows = report.leaderboard(report.load_all(metrics_dir, ["lite0"]), "fpr95")
    best = report.best_per_column(rows, "fpr95")
    assert best[header.index("digits") - 1] == pytest.approx(0.3)  # energy: 1 - 0.7


def test_table_has_no_escape_codes_off_a_terminal(metrics_dir):
    text = report.render(report.load_all(metrics_dir), "auroc", "table", color=False)
    assert "\x1b[" not in text and "\nlite1\n" in text and "lite0:digits" not in text
    colored = report.render(report.load_all(metrics_dir), "auroc", "table", color=True)
    assert "\x1b[1m85.00" in colored  # the best of lite0's textures column, in bold


def wide_metrics(sets: int) -> dict:
    """One backbone with `sets` OOD sets of long names, three methods."""
    names = [f"openimage_o_{i:02d}" for i in range(sets)]
    methods = {
        m: {
            n: {"auroc": 0.5 + 0.01 * i + 0.1 * j}
            for j, n in enumerate([*names, "near", "far", "mean"])
        }
        for i, m in enumerate(("msp", "energy", "mahalanobis_pp"))
    }
    return {"id": {"n": 10}, "ood": {n: {"n": 5} for n in names}, "methods": methods}


@pytest.mark.parametrize("width", [40, 80, 120])
def test_table_fits_the_width_in_whole_columns(width):
    """Each backbone is its own table; one wider than the terminal is split into tables
    of whole columns, each repeating the method column: every line fits, no header is
    cut or wrapped, and every value appears once."""
    all_metrics = {"vit": wide_metrics(12), "lite0": fake_metrics(0.0)}
    text = report.render(all_metrics, "auroc", "table", width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    headers = [line.split() for line in lines if line.startswith(" method")]
    columns = [name for header in headers for name in header[1:]]
    want = [f"openimage_o_{i:02d}" for i in range(12)] + ["near", "far", "mean"]
    assert columns == [*want, "digits", "textures", "near", "far", "mean"]
    titles = [line for line in lines if line.startswith("vit")]
    parts = len(titles) - 1  # the counts line starts with "vit:" too
    assert (parts > 1) == (width < 200) and titles[0] == (
        f"vit (1/{parts})" if parts > 1 else "vit"
    )
    rows = [line.split() for line in lines if line.startswith(" mahalanobis_pp")]
    values = [v for row in rows[:parts] for v in row[1:]]
    assert values == [f"{100 * (0.52 + 0.1 * j):.2f}" for j in range(15)]
    assert "vit: ID val n=10; OOD openimage_o_00 n=5" in " ".join(text.split())  # may wrap


def test_cli_report_backbones_metric_and_png(metrics_dir, tmp_path):
    png = tmp_path / "fig" / "summary.png"
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--metrics-dir",
            str(metrics_dir),
            "--backbones",
            "lite1,lite0",
            "--metric",
            "aupr_in",
            "--format",
            "markdown",
            "--png",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("| method | lite1:digits")
    assert "lite0: ID val n=24, accuracy 90.00%" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_backbone_and_metric_are_errors(metrics_dir):
    with pytest.raises(DataError, match=r"lite9\.json: not found"):
        report.load_all(metrics_dir, ["lite9"])
    with pytest.raises(DataError, match="unknown metric"):
        report.leaderboard(report.load_all(metrics_dir), "accuracy")


def test_summary_figure_matrix_order(metrics_dir, tmp_path):
    methods, columns, values = metric_matrix(fake_metrics(0.0), "auroc")
    assert methods == ["msp", "energy"]
    assert columns == ["digits", "textures", "near", "far", "mean"]
    assert values[1, 0] == pytest.approx(0.7)
    write_png(report.load_all(metrics_dir), "fpr95", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_summary_figure_rows_are_shared_across_backbones(tmp_path):
    """A backbone that ran other methods (e.g. only mos) gets the same rows, NaN (grey)
    where it did not run one, so the panels line up."""
    only_mos = fake_metrics(0.0)
    only_mos["methods"] = {"mos": only_mos["methods"]["msp"]}
    methods, _, values = metric_matrix(only_mos, "auroc", ["msp", "energy", "mos"])
    assert methods == ["msp", "energy", "mos"]
    assert np.isnan(values[:2]).all() and values[2, 0] == pytest.approx(0.6)
    write_png({"a": fake_metrics(0.0), "b": only_mos}, "auroc", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_histogram_is_long_format_with_both_samples():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(histogram(rng.normal(1, 1, 300), rng.normal(0, 1, 200)))
    assert list(frame.columns) == ["score", "density", "sample", "x_scale"]
    assert set(frame["x_scale"]) == {"linear"}
    for sample in ("id", "ood"):
        part = frame[frame["sample"] == sample]
        widths = np.diff(part["score"].to_numpy())
        # densities integrate to 1 over the bins (the closing row repeats the last bin)
        assert np.sum(part["density"].to_numpy()[:-1] * widths) == pytest.approx(1.0)


def test_roc_points_span_the_grid():
    frame = pd.DataFrame(roc_points(np.array([3.0, 2.0, 1.5]), np.array([1.0, 2.5])))
    assert list(frame.columns) == ["fpr", "tpr"]
    assert frame["tpr"].iloc[-1] == 1.0 and frame["fpr"].iloc[0] == 0.0


def test_table_and_figure_share_one_column_order():
    """OOD sets in file order, then near/far/mean, whatever order the file has them in;
    the leaderboard and the summary figure take it from report.metric_columns."""
    metrics = fake_metrics(0.0)
    for method, block in metrics["methods"].items():
        keys = ["mean", "far", "textures", "near", "digits"]
        metrics["methods"][method] = {k: block[k] for k in keys}
    expected = ["textures", "digits", "near", "far", "mean"]
    assert report.metric_columns(metrics) == expected
    header, _ = report.leaderboard({"lite0": metrics}, "auroc")
    assert header[1:] == expected
    assert metric_matrix(metrics, "auroc")[1] == expected
    both = {"lite0": metrics, "lite1": fake_metrics(0.05)}
    header, _ = report.leaderboard(both, "auroc")
    assert header[1:6] == [f"lite0:{c}" for c in expected]
    assert header[6:] == [f"lite1:{c}" for c in report.metric_columns(both["lite1"])]


def _highest_point_loop(fpr: np.ndarray, tpr: np.ndarray, x: float) -> float:
    """The highest point of the polyline through sklearn's ROC points at fpr = x."""
    best = -1.0
    for i in range(len(fpr)):
        if fpr[i] == x:
            best = max(best, tpr[i])
        if i + 1 < len(fpr) and fpr[i] < x < fpr[i + 1]:
            t = (x - fpr[i]) / (fpr[i + 1] - fpr[i])
            best = max(best, tpr[i] + t * (tpr[i + 1] - tpr[i]))
    return best


def test_roc_steps_keep_their_top_at_repeated_fpr():
    """sklearn's points (0,0) (0,1/3) (.5,1/3) (.5,1) (1,1): two vertical steps."""
    frame = pd.DataFrame(roc_points(np.array([3.0, 2.0, 1.5]), np.array([1.0, 2.5])))
    tpr = dict(zip(np.round(frame["fpr"], 6), frame["tpr"], strict=True))
    assert tpr[0.0] == pytest.approx(1 / 3)  # the top of the step at fpr 0, not 0
    assert tpr[0.25] == pytest.approx(1 / 3)  # flat between the steps, not slanted
    assert tpr[0.5] == 1.0 and tpr[0.75] == 1.0
    perfect = roc_points(np.array([2.0, 3.0]), np.array([0.0, 1.0]))
    assert (perfect["tpr"] == 1.0).all()  # one step at fpr 0 up to tpr 1


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_points_are_sklearns_curve_on_the_grid(decimals):
    """Against sklearn's roc_curve, untied (pure steps) and heavily tied (slanted)."""
    rng = np.random.default_rng(5)
    ind, ood = rng.normal(0.8, 1, 150), rng.normal(0, 1, 90)
    if decimals is not None:
        ind, ood = np.round(ind, decimals), np.round(ood, decimals)
    labels = np.r_[np.ones(ind.size), np.zeros(ood.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[ind, ood])
    got = roc_points(ind, ood)
    np.testing.assert_array_equal(got["fpr"], ROC_GRID)
    want = [_highest_point_loop(fpr, tpr, x) for x in ROC_GRID]
    np.testing.assert_allclose(got["tpr"], want, atol=1e-12)
    assert np.all(np.diff(got["tpr"]) >= 0)
    if decimals is None:  # untied: a staircase, the value is the last step at or left of x
        full_fpr, full_tpr, _ = roc_curve(labels, np.r_[ind, ood], drop_intermediate=False)
        steps = [full_tpr[full_fpr <= x].max() for x in ROC_GRID]
        np.testing.assert_allclose(got["tpr"], steps, atol=1e-12)
    # the grid's area is sklearn's to within one grid cell of fpr
    assert auc(got["fpr"], got["tpr"]) == pytest.approx(auc(fpr, tpr), abs=ROC_GRID[1])


@pytest.mark.parametrize(
    ("id_scores", "ood_scores", "scale"),
    [
        # kNN of unnormalised features: negative distances from -1e21 to -1e3
        (-np.logspace(3, 5, 50), -np.logspace(18, 21, 30), "-log10(-score)"),
        (np.logspace(10, 21, 50), np.logspace(0, 2, 30), "log10"),
        # mixed signs, a few huge outliers: the bulk would fill < 0.1% of the axis
        (np.r_[np.linspace(-1, 1, 200), [1e21] * 3], np.linspace(-2, 0, 30), "rank"),
        (np.linspace(2, 9, 40), np.linspace(1, 3, 40), "linear"),  # under 3 decades
        (np.linspace(-5, 5, 40), np.linspace(-6, 1, 40), "linear"),
    ],
)
def test_histograms_of_scores_over_many_decades_are_transformed(id_scores, ood_scores, scale):
    assert histogram_scale(np.r_[id_scores, ood_scores]) == scale
    frame = pd.DataFrame(histogram(id_scores, ood_scores))
    assert set(frame["x_scale"]) == {scale}
    axis = frame["score"].to_numpy()
    if scale == "-log10(-score)":  # higher is still more in-distribution
        assert axis.min() == pytest.approx(-21, abs=0.2) and axis.max() == pytest.approx(
            -3, abs=0.1
        )
    if scale == "log10":
        assert axis.min() == pytest.approx(0, abs=0.2) and axis.max() == pytest.approx(21, abs=0.2)
    if scale == "rank":
        assert axis.min() >= 0.0 and axis.max() <= 1.0
    for sample in ("id", "ood"):  # still a density over the (transformed) axis
        part = frame[frame["sample"] == sample]
        widths = np.diff(part["score"].to_numpy())
        assert np.sum(part["density"].to_numpy()[:-1] * widths) == pytest.approx(1.0)
    id_part = frame[frame["sample"] == "id"]
    peak = id_part["score"].to_numpy()[np.argmax(id_part["density"].to_numpy()[:-1])]
    ood_part = frame[frame["sample"] == "ood"]
    ood_peak = ood_part["score"].to_numpy()[np.argmax(ood_part["density"].to_numpy()[:-1])]
    if scale != "linear":  # the order survives: ID (higher scores) peaks right of OOD
        assert peak > ood_peak


def test_plot_files_are_what_pandas_to_csv_writes(tmp_path):
    """The plot CSVs are written without pandas (evaluate starts without it); they must
    stay byte for byte what ``DataFrame.to_csv(index=False, float_format="%.6g")`` wrote,
    NaN, inf, -0.0 and a transformed axis name included."""
    rng = np.random.default_rng(3)
    cases = [
        roc_points(rng.normal(1, 1, 50), rng.normal(0, 1, 40)),
        histogram(rng.normal(1, 1, 300), rng.normal(0, 1, 200)),
        histogram(np.logspace(10, 21, 50), np.logspace(0, 2, 30)),  # x_scale "log10"
        histogram(-np.logspace(3, 5, 50), -np.logspace(18, 21, 30)),  # "-log10(-score)"
        {"a": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300, 123456789.0]), "b": list("uvwxyz")},
    ]
    for i, columns in enumerate(cases):
        (tmp_path / f"{i}.csv").write_bytes(csv_bytes(columns))
        want = pd.DataFrame(columns).to_csv(index=False, float_format="%.6g")
        assert (tmp_path / f"{i}.csv").read_text() == want


def test_rewritten_plots_keep_the_files_whose_bytes_did_not_change(tmp_path):
    """write_plots swaps in a new folder but hard-links every file whose bytes are the
    same (DVC knows a file by inode and mtime: it need not hash it again); a changed
    method's files are new, and every file holds what a write from scratch writes."""
    rng = np.random.default_rng(5)
    scores = {m: {"val": rng.normal(1, 1, 60), "near": rng.normal(0, 1, 50)} for m in "ab"}
    out = tmp_path / "plots" / "bb"
    write_plots(out, scores, "val", ["near"])
    before = {p.relative_to(out): p.stat().st_ino for p in out.rglob("*.csv")}
    assert len(before) == 4
    scores["b"] = {"val": rng.normal(2, 1, 60), "near": rng.normal(0, 1, 50)}
    write_plots(out, scores, "val", ["near"])
    after = {p.relative_to(out): p.stat().st_ino for p in out.rglob("*.csv")}
    kept = {p for p in after if after[p] == before[p]}
    assert kept == {Path("roc/a/near.csv"), Path("hist/a/near.csv")}
    fresh = tmp_path / "fresh"
    write_plots(fresh, scores, "val", ["near"])
    for path in after:
        assert (out / path).read_bytes() == (fresh / path).read_bytes(), path


def test_rank_transform_is_the_pooled_fraction_below():
    from oodbench.results.plots import transform_scores

    pooled = np.array([1.0, 2.0, 2.0, 5.0])
    got = transform_scores(np.array([1.0, 2.0, 5.0]), pooled, "rank")
    np.testing.assert_allclose(got, [0.125, 0.5, 0.875])  # half the ties count as below


@catalogue(
    "files",
    "`metrics/` holds a metrics file of a backbone no longer in `benchmark.backbones` and "
    "`oodbench report` runs without `--backbones`",
    "the stale file is left out of the leaderboard and named on stderr; without "
    "params.yaml every file is shown",
)
def test_report_leaves_out_backbones_not_in_the_benchmark(tmp_path):
    (tmp_path / "metrics").mkdir()
    for backbone, offset in (("lite0", 0.0), ("old", 0.05), ("lite1", 0.1)):
        (tmp_path / "metrics" / f"{backbone}.json").write_text(json.dumps(fake_metrics(offset)))
    result = run(["oodbench", "report", "--format", "csv"], tmp_path)
    assert "old:digits" in result.stdout.splitlines()[0]  # no params.yaml: every file
    (tmp_path / "params.yaml").write_text("benchmark:\n  backbones:\n  - lite1\n  - lite0\n")
    result = run(["oodbench", "report", "--format", "csv"], tmp_path)
    header = result.stdout.splitlines()[0].split(",")
    assert header[1].startswith("lite1:digits") and header[6].startswith("lite0:digits")
    assert not any(h.startswith("old:") for h in header)
    assert result.stderr == (
        "report: left out metrics/old.json: not in benchmark.backbones of params.yaml "
        "(stale; name it with --backbones to show it)\n"
    )
    explicit = run(["oodbench", "report", "--format", "csv", "--backbones", "old"], tmp_path)
    rows = list(csv.reader(io.StringIO(explicit.stdout)))
    assert rows[0][1] == "digits auroc (fraction 0-1)" and not explicit.stderr
    assert float(rows[1][1]) == pytest.approx(0.65)  # old's msp: 0.6 + its offset 0.05
