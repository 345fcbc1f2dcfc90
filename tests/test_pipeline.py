"""The pipeline end to end with real `dvc repro` / `dvc status` calls in a temporary repo."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from oodbench.results.metrics import METRIC_NAMES
from tests.conftest import rewrite_params, run, stage_command
from tests.faults_catalogue import catalogue

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


def lite0_scores(ws, method: str, dataset: str = "textures") -> np.ndarray:
    import pandas as pd

    table = pd.read_parquet(ws / "scores" / "lite0" / f"{method}.parquet")
    return table[table["dataset"] == dataset]["score"].to_numpy()


def test_method_param_change_reruns_only_its_score_and_evaluate(demo_copy):
    """A score stage declares its method's block (``methods.energy``) and reads the
    hyperparameters itself; the check stage declares the sections it resolves, not the
    hyperparameters: so the experiment reruns energy's score stage and evaluate only."""
    from scipy.special import logsumexp

    from oodbench.formats.classifier import load_fc
    from oodbench.formats.features import load_features

    rewrite_params(demo_copy, lambda p: p["methods"]["energy"].update(temperature=2.0))
    assert stale_stages(demo_copy) == {"pipelines/score-energy/dvc.yaml:score"}
    out = run(["dvc", "repro"], demo_copy).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {"pipelines/score-energy/dvc.yaml:score", "evaluate"}
    features = load_features(demo_copy / "features" / "lite0" / "textures")
    fc = load_fc(demo_copy / "features" / "lite0" / "fc.safetensors")
    logits = features.features @ fc.weight.T + fc.bias
    expected = 2.0 * logsumexp(logits / 2.0, axis=1)  # the new temperature was used
    np.testing.assert_allclose(lite0_scores(demo_copy, "energy"), expected, rtol=1e-5)
    assert stale_stages(demo_copy) == set()


@catalogue(
    "params",
    "a method's hyperparameter is bad under `dvc repro` or `dvc exp run -S methods.energy.temperature=hot`",
    "the method's score stage, the one stage that declares `methods.energy` (the check stage does not: an experiment on one method does not rerun it), stops before reading any data with one `error:` line naming the key; its last scores stay (they persist) and nothing after it runs",
)
def test_a_bad_hyperparameter_stops_its_score_stage_and_keeps_its_scores(demo_copy):
    before = (demo_copy / "scores/lite0/energy.parquet").read_bytes()
    metrics = (demo_copy / "metrics/lite0.json").read_bytes()
    rewrite_params(demo_copy, lambda p: p["methods"]["energy"].update(temperature="hot"))
    result = run(["dvc", "repro"], demo_copy, check=False)
    assert result.returncode != 0
    assert re.findall(r"Running stage '([^']+)'", result.stdout) == [
        "pipelines/score-energy/dvc.yaml:score"
    ]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "methods.energy.temperature" in errors[0], result.stderr
    assert "'hot'" in errors[0]
    assert (demo_copy / "scores/lite0/energy.parquet").read_bytes() == before
    assert (demo_copy / "metrics/lite0.json").read_bytes() == metrics
    # the check stage refuses it too, when it runs (a new benchmark, or a code change)
    check = run(stage_command("check"), demo_copy, check=False)
    assert check.returncode == 2 and "methods.energy.temperature" in check.stderr


def test_a_method_named_after_the_check_stage_ran_is_refused_until_the_pipeline_follows(
    demo_copy,
):
    """Which method a key runs decides its code digest, which the check stage resolves:
    a ``method:`` added to a block is refused by its score stage (the one stage that
    reran) until `oodbench pipeline` declares the key to the check stage."""
    rewrite_params(demo_copy, lambda p: p["methods"].update(energy={"method": "maxlogit"}))
    result = run(["dvc", "repro"], demo_copy, check=False)
    assert result.returncode != 0
    assert "methods.energy.method: 'maxlogit', but the check stage resolved 'energy'" in (
        result.stderr
    )
    assert "run `oodbench pipeline`" in result.stderr
    run(["oodbench", "pipeline"], demo_copy)
    assert "check" in stale_stages(demo_copy)
    out = run(["dvc", "repro"], demo_copy).stdout
    assert "Running stage 'check'" in out
    np.testing.assert_array_equal(
        lite0_scores(demo_copy, "energy"), lite0_scores(demo_copy, "maxlogit")
    )


def test_a_score_stage_depends_on_the_feature_folder_but_not_on_temp_litter(demo_copy):
    """Score stages depend on the backbone's feature folder as one (dvc.yaml), evaluate on
    the folder of its scores: a file added there is a change to them, while the temp file
    a killed writer leaves (oodbench/formats/atomic.py: `.<name>.<random>.tmp`) is in
    .dvcignore and changes nothing."""
    (demo_copy / "features/lite0/.fc.safetensors.k1.tmp").write_bytes(b"partial")
    (demo_copy / "features/lite0/.photos.k2.tmp").mkdir()
    (demo_copy / "features/lite0/.photos.k2.tmp/shard-00000.features.npy").write_bytes(b"x")
    (demo_copy / "scores/lite0/.msp.parquet.k3.tmp").write_bytes(b"partial")
    assert stale_stages(demo_copy) == set()
    (demo_copy / "features/lite0/stray.npy").write_bytes(b"x")
    (demo_copy / "scores/lite0/stray.parquet").write_bytes(b"x")
    scores = {f"pipelines/score-{m}/dvc.yaml:score" for m in ("msp", "energy", "react", "maxlogit")}
    assert stale_stages(demo_copy) == scores | {"evaluate"}


def test_scores_match_a_direct_computation(demo_workspace):
    """The energy scores on disk equal logsumexp of features @ W^T + b computed here."""
    import pandas as pd
    from scipy.special import logsumexp

    from oodbench.formats.classifier import load_fc
    from oodbench.formats.features import load_features

    features = load_features(demo_workspace / "features" / "lite0" / "textures")
    fc = load_fc(demo_workspace / "features" / "lite0" / "fc.safetensors")
    table = pd.read_parquet(demo_workspace / "scores" / "lite0" / "energy.parquet")
    rows = table[table["dataset"] == "textures"]
    expected = logsumexp(features.features @ fc.weight.T + fc.bias, axis=1)
    np.testing.assert_allclose(rows["score"].to_numpy(), expected, rtol=1e-5)
    assert rows["index"].tolist() == features.index.tolist()


def test_dvc_metrics_show_is_a_row_per_method_with_the_detail_one_target_away(
    demo_workspace, monkeypatch
):
    """dvc.yaml declares the per-method summaries as metrics: `dvc metrics show` is one
    row per method, six columns, within a 120-column terminal; the per-set detail is a
    versioned output that DVC shows when named."""
    from oodbench.results.evaluate import method_summary

    monkeypatch.setenv("COLUMNS", "120")
    lines = run(["dvc", "metrics", "show"], demo_workspace).stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[0].split()
    assert header == [
        "Path",
        *(f"{m}.{s}" for m in ("auroc", "fpr95") for s in ("far", "mean", "near")),
    ]
    detail = json.loads((demo_workspace / "metrics" / "lite0.json").read_text())
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(rows) == {f"metrics/lite0/{m}.json" for m in detail["methods"]}
    for method, block in detail["methods"].items():
        summary = json.loads((demo_workspace / f"metrics/lite0/{method}.json").read_text())
        assert summary == method_summary(block)
        for name, shown in zip(header[1:], rows[f"metrics/lite0/{method}.json"], strict=True):
            metric, group = name.split(".")
            assert float(shown) == pytest.approx(block[group][metric], abs=6e-6)  # 5 digits
    named = run(["dvc", "metrics", "show", "metrics/lite0.json", "--json"], demo_workspace)
    assert (
        json.loads(named.stdout)[""]["data"]["metrics/lite0.json"]["data"]["methods"]
        == (detail["methods"])
    )
    lock = yaml.safe_load((demo_workspace / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["evaluate"]["outs"]}
    assert outs["metrics/lite0.json"]["md5"] and outs["metrics/lite0"]["nfiles"] == 4


DATASETS = ("digits_id_train", "digits_id_val", "digits_near", "textures", "photos")


def ran_stages(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def test_a_val_classes_file_maps_accuracy_by_name_without_re_extracting(demo_copy):
    """datalists/digits_id_val.classes.txt swaps the names of labels 0 and 1: the probe's
    class "1" is list label 0. Materialize records the names, score and evaluate rerun,
    extraction and the probe do not, and accuracy equals a loop mapping by name."""
    from oodbench.formats.classifier import load_fc
    from oodbench.formats.features import load_features

    names = ["1", "0", "2", "3", "4", "5"]
    classes = demo_copy / "datalists" / "digits_id_val.classes.txt"
    classes.write_text("\n".join(names) + "\n")
    # a new classes file is a new dependency: without `oodbench pipeline` the check
    # stage stops the run, naming the stage whose dependencies changed
    stopped = run(["dvc", "repro"], demo_copy, check=False)
    assert stopped.returncode != 0
    assert "dvc.yaml: out of date" in stopped.stderr + stopped.stdout
    assert "materialize-digits_id_val" in stopped.stderr + stopped.stdout
    run(["oodbench", "pipeline"], demo_copy)
    ran = ran_stages(run(["dvc", "repro"], demo_copy).stdout)
    methods = ("msp", "energy", "react", "maxlogit")
    assert ran == {"check", "materialize-digits_id_val", "evaluate"} | {
        f"pipelines/score-{m}/dvc.yaml:score" for m in methods
    }
    report = json.loads((demo_copy / "metrics" / "lite0.json").read_text())
    features = demo_copy / "features" / "lite0"
    val = load_features(features / "digits_id_val")
    fc = load_fc(features / "fc.safetensors")
    hits = 0
    for row, label in zip(val.features, val.labels, strict=True):
        z = row @ fc.weight.T + fc.bias
        hits += int(fc.class_names[int(np.argmax(z))] == names[label])
    assert report["id"]["accuracy"] == pytest.approx(hits / len(val), abs=1e-12)
    assert report["id"]["accuracy_n"] == len(val)
    # without the file, accuracy is by label index again
    classes.unlink()
    run(["oodbench", "pipeline"], demo_copy)
    run(["dvc", "repro"], demo_copy)
    report = json.loads((demo_copy / "metrics" / "lite0.json").read_text())
    assert "accuracy_n" not in report["id"]


@catalogue(
    "datalist",
    "a list the demo stage writes (datalists/digits_near.txt) is edited, or a file is added under data/demo",
    "`dvc repro` stops at the demo stage with one line naming the changed files, instead of putting the generated ones back (DVC reruns a stage whose outputs changed); the edit stays, and the line says to save the list under another name with a `datasets:` block of its own, then `dvc checkout` the demo's",
)
def test_an_edited_demo_list_is_refused_not_undone(demo_copy):
    near = demo_copy / "datalists" / "digits_near.txt"
    original = near.read_text()
    edited = "".join(original.splitlines(keepends=True)[:3])
    near.write_text(edited)
    result = run(["dvc", "repro"], demo_copy, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "error: datalists/digits_near.txt: changed since the demo stage wrote them" in out
    assert "cp datalists/digits_near.txt datalists/my_digits_near.txt" in out
    assert set(re.findall(r"Running stage '([^']+)'", result.stdout)) == {"demo"}
    assert near.read_text() == edited
    near.write_text(original)  # the edit undone: nothing is stale
    assert stale_stages(demo_copy) == set()


def test_evaluate_keeps_a_backbone_whose_inputs_and_outputs_are_as_it_left_them(demo_copy):
    """The evaluate stage leaves a backbone as it is when what it reads and what it wrote
    are as after its last evaluation (results/evaluated.py), and evaluates it again when
    either changed: an output edited by hand is written again, a changed score file is
    evaluated, each to the bytes an evaluation without any record writes."""
    metrics = demo_copy / "metrics" / "lite0.json"
    good = metrics.read_bytes()
    command = stage_command("evaluate", "--backbones", "lite0")
    kept = "evaluate lite0: inputs and outputs as after its last evaluation, kept"
    evaluated = "evaluate lite0: 4 methods x 3 OOD sets"
    assert kept in run(command, demo_copy).stdout
    metrics.write_bytes(good + b"\n")  # an output changed by hand
    assert evaluated in run(command, demo_copy).stdout
    assert metrics.read_bytes() == good
    assert kept in run(command, demo_copy).stdout
    scores = demo_copy / "scores" / "lite0"
    shutil.copy2(scores / "msp.parquet", scores / "energy.parquet")  # an input changed
    assert evaluated in run(command, demo_copy).stdout
    report = json.loads(metrics.read_text())
    assert (
        report["methods"]["energy"]
        == report["methods"]["msp"]
        != (json.loads(good)["methods"]["energy"])
    )
    incremental = metrics.read_bytes()
    shutil.rmtree(demo_copy / "build" / "evaluated")
    assert evaluated in run(command, demo_copy).stdout
    assert metrics.read_bytes() == incremental


def test_the_check_stage_output_folder_holds_only_what_it_resolves(demo_copy):
    """The check stage's output is the folder build/specs: a spec of something the
    benchmark no longer has (here a method taken out) is removed, so the folder's hash
    says what is resolved now, and `dvc status` is clean after the rerun."""
    stale = demo_copy / "build" / "specs" / "methods" / "gone.json"
    stale.write_text('{"key": "gone"}\n')
    assert "check" in stale_stages(demo_copy)  # the folder's hash changed
    run(stage_command("check"), demo_copy)
    assert not stale.exists()
    assert (demo_copy / "build" / "specs" / "methods" / "energy.json").is_file()
    assert stale_stages(demo_copy) == set()
