"""A user's own benchmark works the first time (tests/user_project.py builds it), through
real `dvc repro` runs: folder and OpenOOD lists, a fine-tuned head with named classes
from a checkpoint saved in an awkward layout, a probe backbone, a local open_clip model,
one-class mode, results kept when a stage fails, reruns only where numbers change, and
a queued experiment that re-extracts in DVC's temporary copy of the repository."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from oodbench.formats.class_names import load_list_classes
from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from tests.conftest import rewrite_params
from tests.faults_catalogue import catalogue
from tests.user_project import CLASSES, build_project, run

pytestmark = pytest.mark.slow
BACKBONES = ("r18", "vt", "clip")


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    dest = build_project(tmp_path_factory.mktemp("user") / "shapes")
    run(["dvc", "repro"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], dest)
    return dest


def metrics(project: Path, backbone: str) -> dict:
    return json.loads((project / "metrics" / f"{backbone}.json").read_text())


def test_the_whole_benchmark_runs_green(project):
    for backbone in BACKBONES:
        report = metrics(project, backbone)
        assert set(report["ood"]) == {"noise", "stripes"}
        assert report["ood"]["noise"]["n"] == 10 and report["id"]["n"] == 24
    # mcm needs CLIP's text head: it runs on clip, and the others say why they skip it
    assert "mcm" in metrics(project, "clip")["methods"]
    for backbone in ("r18", "vt"):
        assert "mcm" not in metrics(project, backbone)["methods"]
        assert "needs a CLIP backbone" in metrics(project, backbone)["skipped"]["mcm"]
        # its summary exists (dvc.yaml declares it) and is empty: a row of dashes
        assert json.loads((project / "metrics" / backbone / "mcm.json").read_text()) == {}
    summary = json.loads((project / "metrics" / "clip" / "mcm.json").read_text())
    assert summary["auroc"]["mean"] == metrics(project, "clip")["methods"]["mcm"]["mean"]["auroc"]
    # nnguide's k=100 and knn_openood's k=50 exceed the 60 train rows: they still run
    for method in ("nnguide", "knn_openood", "she", "vim", "mahalanobis"):
        assert method in metrics(project, "vt")["methods"], method
    board = (project / "metrics" / "leaderboard.md").read_text()
    assert "r18:noise" in board and "clip:mean" in board and "mcm skipped" in board


def test_a_fine_tuned_head_is_named_after_the_lists_classes(project):
    """{timm: resnet18, num_classes: 3, fc: head} with from-folder's classes file: the
    head's outputs take the class names, and ID accuracy equals a loop comparing names."""
    fc = load_fc(project / "features/r18/fc.safetensors")
    assert fc.class_names == list(CLASSES)
    val = load_features(project / "features/r18/shapes_val")
    names = load_list_classes(project / "data/manifests/shapes_val.classes.json").names
    hits = [
        fc.class_names[int(np.argmax(row @ fc.weight.T + fc.bias))] == names[label]
        for row, label in zip(val.features, val.labels, strict=True)
    ]
    report = metrics(project, "r18")
    assert report["id"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)
    # the head was fitted (least squares, more features than images) to exactly these train
    # images: a model loaded right classifies every one of them by name
    train = load_features(project / "features/r18/shapes_train")
    train_names = load_list_classes(project / "data/manifests/shapes_train.classes.json").names
    predicted = np.argmax(train.features @ fc.weight.T + fc.bias, axis=1)
    assert [fc.class_names[p] for p in predicted] == [train_names[y] for y in train.labels]


def test_the_checkpoint_loads_by_name(project):
    """The r18 checkpoint has `net.`-prefixed keys with each BatchNorm's bias before its
    weight; the stored features equal timm's own forward of the same weights."""
    import timm
    import torch
    from PIL import Image

    state = torch.load(project / "checkpoints/r18/r18.pth", weights_only=True)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    model.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    val = load_features(project / "features/r18/shapes_val")
    index = val.index.tolist()
    frame = __import__("pandas").read_parquet(project / "features/r18/shapes_val/index.parquet")
    with torch.no_grad():
        for row in (0, len(val) - 1):
            image = Image.open(project / "data/shapes" / frame["path"][row]).convert("RGB")
            x = transform(image)[None]
            want = model.forward_head(model.forward_features(x), pre_logits=True)[0].numpy()
            np.testing.assert_allclose(val.features[index.index(row)], want, rtol=1e-4, atol=1e-5)


@catalogue(
    "files",
    "a stage fails after earlier runs (an ID set listed as OOD; a method that fails while fitting)",
    "the check stage refuses the bad params before any work; a failing score stage stops `dvc repro`; either way metrics/<bb>.json, plots/<bb>/ and the leaderboard keep the last good results",
)
def test_a_failing_stage_keeps_the_last_results(project):
    kept = {
        p: p.read_bytes()
        for p in [*(project / "metrics").rglob("*.*"), *(project / "plots/r18").rglob("*.csv")]
    }
    original = rewrite_params(project, lambda p: p["benchmark"].update(ood=["shapes_val"]))
    try:
        result = run(["dvc", "repro"], project, check=False)
        assert result.returncode != 0
        assert "benchmark.ood[0]: 'shapes_val' is benchmark.id_val" in result.stdout + result.stderr
        assert "Running stage 'pipelines" not in result.stdout
    finally:
        (project / "params.yaml").write_text(original)
    original = rewrite_params(project, lambda p: p["methods"]["vim"].update(dim=100000))
    try:
        result = run(["dvc", "repro"], project, check=False)
        assert result.returncode != 0 and "methods.vim.dim" in result.stdout + result.stderr
    finally:
        (project / "params.yaml").write_text(original)
    assert {p: p.read_bytes() for p in kept} == kept
    run(["dvc", "repro"], project)


def test_settings_that_change_no_number_rerun_nothing(project):
    original = rewrite_params(project, lambda p: p["extract"].update(num_workers=1))
    try:
        assert ran(run(["dvc", "repro"], project).stdout) == {"check"}
    finally:
        (project / "params.yaml").write_text(original)
    run(["dvc", "repro"], project)


def test_a_backbones_classifier_keys_rerun_its_fc_not_its_extraction(project):
    names = project / "configs" / "shape_names.txt"
    names.write_text("square\ncircle\ntriangle\n")  # the head's outputs, named in its order
    original = rewrite_params(
        project, lambda p: p["backbones"]["r18"].update(classes=str(names.relative_to(project)))
    )
    try:
        run(["oodbench", "pipeline"], project)
        stages = ran(run(["dvc", "repro"], project).stdout)
        assert "pipelines/r18/dvc.yaml:fc" in stages
        assert not {s for s in stages if ":extract" in s}
        assert not {s for s in stages if s.startswith(("pipelines/vt/", "pipelines/clip/"))}
        assert load_fc(project / "features/r18/fc.safetensors").class_names == [
            "square",
            "circle",
            "triangle",
        ]
    finally:
        (project / "params.yaml").write_text(original)
        names.unlink()
        run(["oodbench", "pipeline"], project)
        run(["dvc", "repro"], project)


def test_a_new_ood_set_costs_only_its_own_extraction_and_scoring(project):
    shutil.copytree(project / "data/stripes", project / "data/stripes2")
    run(
        [
            "oodbench",
            "datalists",
            "from-folder",
            "data/stripes2",
            "--labels",
            "none",
            "--name",
            "stripes2",
        ],
        project,
    )

    def add(p):
        p["datasets"]["stripes2"] = {"root": "data/stripes2", "group": "near"}
        p["benchmark"]["ood"].append("stripes2")

    original = rewrite_params(project, add)
    try:
        run(["oodbench", "pipeline"], project)
        result = run(["dvc", "repro"], project)
        stages = ran(result.stdout)
        assert {s for s in stages if ":extract" in s} == {
            f"pipelines/{b}/dvc.yaml:extract-stripes2" for b in BACKBONES
        }
        assert "materialize-stripes2" in stages and "materialize-noise" not in stages
        # each score stage reuses its stored scores of the sets that did not change
        assert re.search(
            r"score r18/msp: .*3 sets from cache, 1 scored", result.stdout + result.stderr
        )
        assert "stripes2" in metrics(project, "r18")["ood"]
    finally:
        (project / "params.yaml").write_text(original)
        (project / "datalists/stripes2.txt").unlink()
        shutil.rmtree(project / "data/stripes2")
        run(["oodbench", "pipeline"], project)
        run(["dvc", "repro"], project)


def test_one_class_mode(project):
    """MOODv2's one-class benchmark on the user's data: class 0 (circle) is ID."""
    original = rewrite_params(project, lambda p: p["benchmark"].update(one_class=0))
    try:
        run(["dvc", "repro"], project)
        report = metrics(project, "vt")
        assert report["id"]["one_class"] == 0 and report["id"]["n"] == 8
        assert {"class_1", "class_2", "noise", "stripes"} <= set(report["ood"])
        assert "knn_openood" in report["methods"] and "nnguide" in report["methods"]
    finally:
        (project / "params.yaml").write_text(original)
        run(["dvc", "repro"], project)


@catalogue(
    "images",
    "a queued experiment (`dvc exp run --queue`) must re-extract in DVC's temporary copy",
    "images and weights tracked with `dvc add` are checked out there and the experiment succeeds; untracked images give one line saying to `dvc add` them",
)
def test_a_queued_experiment_re_extracts(project):
    run(["dvc", "exp", "run", "--queue", "-n", "batch8", "-S", "extract.batch_size=8"], project)
    run(["dvc", "queue", "start", "-j", "1"], project)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if "Success" in status or "Failed" in status:
            break
        time.sleep(5)
    logs = run(["dvc", "queue", "logs", "batch8"], project, check=False).stdout
    assert "Success" in status, status + logs
    assert "Running stage 'pipelines/r18/dvc.yaml:extract-shapes_val'" in logs
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert "batch8" in text and "metrics/r18/" in text  # the experiment's summaries
