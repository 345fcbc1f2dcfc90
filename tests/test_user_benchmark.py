"""A user's own benchmark works the first time (tests/user_project.py builds it, the
`user_project` fixture runs `dvc repro` once), through real `dvc repro` runs: folder and
OpenOOD lists, a fine-tuned head with named classes from a checkpoint saved in an awkward
layout, a probe backbone, a local open_clip model, results kept when a stage fails,
reruns only where numbers change, and a queued experiment that re-extracts in DVC's
temporary copy of the repository. Tests that change the project work on a copy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from oodbench.formats.class_names import load_list_classes
from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from tests.conftest import rewrite_params
from tests.faults_catalogue import catalogue
from tests.own_method import auroc_loop, cosine_scores
from tests.user_project import CLASSES, run

pytestmark = pytest.mark.slow
BACKBONES = ("r18", "vt", "clip")


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def metrics(project: Path, backbone: str) -> dict:
    return json.loads((project / "metrics" / f"{backbone}.json").read_text())


def test_the_whole_benchmark_runs_green(user_project):
    project = user_project
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


def dvc_stale(project: Path) -> set[str]:
    """Stage names `dvc status` reports as changed (DVC's Python API: no process start;
    it names stages relative to the working directory)."""
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(str(project)) as repo:
        return set(repo.status())


def test_the_users_own_method_runs_beside_the_builtins(user_project, user_copy):
    """`cos: {method: mymethods/cosine.py:CosineToMeans}`, a file of the user's project that
    imports a helper of its own, runs on every backbone; its AUROC equals a loop over the
    stored features; an edit of the file or of its helper (in a copy) stales its score
    stages alone."""
    project = user_project
    for backbone in BACKBONES:
        report = metrics(project, backbone)
        assert "cos" in report["methods"], backbone
        folder = project / "features" / backbone
        train = load_features(folder / "shapes_train")
        id_scores = cosine_scores(
            train.features, train.labels, load_features(folder / "shapes_val").features
        )
        for ood in ("noise", "stripes"):
            ood_scores = cosine_scores(
                train.features, train.labels, load_features(folder / ood).features
            )
            want = auroc_loop(id_scores, ood_scores)
            assert report["methods"]["cos"][ood]["auroc"] == pytest.approx(want, abs=1e-12)
    assert "| cos |" in (project / "metrics" / "leaderboard.md").read_text()
    project = user_copy
    assert dvc_stale(project) == set()
    for file in ("mymethods/cosine.py", "mymethods/common.py"):
        path = project / file
        original = path.read_text()
        try:
            path.write_text(original + "\n# an edit\n")
            run(["python", "stages/check.py"], project)  # what `dvc repro` runs first
            assert dvc_stale(project) - {"check"} == {"pipelines/score-cos/dvc.yaml:score"}, file
        finally:
            path.write_text(original)
            run(["python", "stages/check.py"], project)
    assert dvc_stale(project) == set()


def test_a_fine_tuned_head_is_named_after_the_lists_classes(user_project):
    """{timm: resnet18, num_classes: 3, fc: head} with from-folder's classes file: the
    head's outputs take the class names, and ID accuracy equals a loop comparing names."""
    project = user_project
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


def test_the_checkpoint_loads_by_name(user_project):
    """The r18 checkpoint has `net.`-prefixed keys with each BatchNorm's bias before its
    weight; the stored features equal timm's own forward of the same weights."""
    project = user_project
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
def test_a_failing_stage_keeps_the_last_results(user_copy):
    project = user_copy
    kept = {
        p: p.read_bytes()
        for p in [*(project / "metrics").rglob("*.*"), *(project / "plots/r18").rglob("*.csv")]
    }
    original = rewrite_params(project, lambda p: p["benchmark"].update(ood=["shapes_val"]))
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0
    assert "benchmark.ood[0]: 'shapes_val' is benchmark.id_val" in result.stdout + result.stderr
    assert "Running stage 'pipelines" not in result.stdout
    (project / "params.yaml").write_text(original)
    rewrite_params(project, lambda p: p["methods"]["vim"].update(dim=100000))
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0 and "methods.vim.dim" in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in kept} == kept


def test_settings_that_change_no_number_rerun_nothing(user_copy):
    rewrite_params(user_copy, lambda p: p["extract"].update(num_workers=1))
    assert ran(run(["dvc", "repro"], user_copy).stdout) == {"check"}


def test_a_backbones_classifier_keys_rerun_its_fc_not_its_extraction(user_copy):
    project = user_copy
    names = project / "configs" / "shape_names.txt"
    names.write_text("square\ncircle\ntriangle\n")  # the head's outputs, named in its order
    rewrite_params(
        project, lambda p: p["backbones"]["r18"].update(classes=str(names.relative_to(project)))
    )
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


def test_a_new_ood_set_costs_only_its_own_extraction_and_scoring(user_copy):
    project = user_copy
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

    rewrite_params(project, add)
    run(["oodbench", "pipeline"], project)
    result = run(["dvc", "repro"], project)
    stages = ran(result.stdout)
    assert {s for s in stages if ":extract" in s} == {
        f"pipelines/{b}/dvc.yaml:extract-stripes2" for b in BACKBONES
    }
    assert "materialize-stripes2" in stages and "materialize-noise" not in stages
    # each score stage reuses its stored scores of the sets that did not change
    assert re.search(r"score r18/msp: .*3 sets from cache, 1 scored", result.stdout + result.stderr)
    assert "stripes2" in metrics(project, "r18")["ood"]


def queue_status(project: Path) -> str:
    return run(["dvc", "queue", "status"], project).stdout


@catalogue(
    "images",
    "a queued experiment (`dvc exp run --queue`) must re-extract in DVC's temporary copy",
    "images and weights tracked with `dvc add` are checked out there and the experiment succeeds; untracked images give one line saying to `dvc add` them",
)
def test_a_queued_experiment_re_extracts(user_copy):
    """A change to r18's model (its preprocessing) re-extracts r18's sets in the queue's
    temporary copy of the repository, from images and weights DVC checks out there."""
    project = user_copy
    change = ["-S", "+backbones.r18.preprocess=reference"]  # `+`: a key the block lacks
    run(["dvc", "exp", "run", "--queue", "-n", "reference", *change], project)
    run(["dvc", "queue", "start", "-j", "1"], project)
    # until the worker has taken the task (seconds), then follow its log to the end: one
    # waiting process instead of a `dvc queue status` (a DVC start-up) every 2 s
    deadline = time.monotonic() + 120
    while "Queued" in queue_status(project):
        assert time.monotonic() < deadline, "the queue's worker did not take the task"
        time.sleep(1)
    follow = ["dvc", "queue", "logs", "--follow", "reference"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    logs = subprocess.run(
        follow, cwd=project, env=env, capture_output=True, text=True, timeout=900
    ).stdout
    deadline = time.monotonic() + 120  # the log ends as the task records its result
    while not re.search(r"reference\s.*(Success|Failed)", status := queue_status(project)):
        assert time.monotonic() < deadline, status + logs
        time.sleep(1)
    assert "Success" in status, status + logs
    assert "Running stage 'pipelines/r18/dvc.yaml:extract-shapes_val'" in logs
    assert "Running stage 'pipelines/vt/dvc.yaml:extract-" not in logs
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert "reference" in text and "metrics/r18/" in text  # the experiment's summaries


def test_a_head_with_logit_methods_leaves_dvc_status_clean(user_copy):
    """The issue's case through `dvc repro`: a backbone classified by its own head whose
    methods (msp, energy) fit nothing reads no ID train features, so no extract stage is
    generated for them (one would never run and leave `dvc status` changed for good)."""

    def add(p):
        p["benchmark"]["backbones"].append("r18b")
        p["backbones"]["r18b"] = {**p["backbones"]["r18"], "methods": ["msp", "energy"]}

    project = user_copy
    rewrite_params(project, add)
    run(["oodbench", "pipeline"], project)
    stages = yaml.safe_load((project / "pipelines/r18b/dvc.yaml").read_text())["stages"]
    assert "extract-shapes_train" not in stages and "extract-shapes_val" in stages
    assert "extract-shapes_train" in (project / "pipelines/r18/dvc.yaml").read_text()
    assert "pipelines/score-energy/dvc.yaml:score" in ran(run(["dvc", "repro"], project).stdout)
    assert "Data and pipelines are up to date." in run(["dvc", "status"], project).stdout
    assert set(metrics(project, "r18b")["methods"]) == {"msp", "energy"}


@catalogue(
    "files",
    "a checkpoint is truncated after earlier runs (an interrupted copy), or an extract stage fails (an image made unreadable after materialize checked it)",
    "the check stage names the truncated file (`backbones.<bb>.checkpoint: ... is truncated or damaged`) before any other stage runs, so DVC removes nothing, and says how to bring back the committed file (`dvc repro` records a changed DVC-tracked file in its .dvc file before running any stage: `git checkout <x>.dvc && dvc checkout <x>.dvc`); an extract stage that fails leaves its features folder byte for byte (its output persists: DVC does not delete it first, and the stage swaps the new one in only when complete)",
)
def test_a_truncated_checkpoint_or_a_failing_extraction_keeps_the_features(user_copy):
    project = user_copy
    kept = {p: p.read_bytes() for p in (project / "features/r18").rglob("*") if p.is_file()}
    assert project / "features/r18/fc.safetensors" in kept
    assert project / "features/r18/stripes/info.json" in kept
    checkpoint = project / "checkpoints/r18/r18.pth"
    whole = checkpoint.read_bytes()
    checkpoint.write_bytes(whole[: len(whole) // 2])
    result = run(["dvc", "repro"], project, check=False)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "backbones.r18.checkpoint: checkpoints/r18/r18.pth is truncated or damaged" in out
    assert ran(result.stdout) == {"check"}
    # DVC committed the damaged file to checkpoints/r18.dvc first; the advice undoes it
    assert run(["git", "status", "--short", "checkpoints/r18.dvc"], project).stdout
    restore = "git checkout checkpoints/r18.dvc && dvc checkout checkpoints/r18.dvc"
    assert restore in out
    for command in restore.split(" && "):
        run(command.split(), project)
    assert checkpoint.read_bytes() == whole
    assert {p: p.read_bytes() for p in kept} == kept
    image = project / "data/stripes/stripes_003.jpg"
    good = image.read_bytes()
    image.write_bytes(b"not a JPEG any more")
    stage = "pipelines/r18/dvc.yaml:extract-stripes"
    result = run(["dvc", "repro", "--force", "--single-item", stage], project, check=False)
    assert result.returncode != 0
    assert ran(result.stdout) == {stage}
    assert "stripes_003.jpg" in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in kept} == kept
    image.write_bytes(good)  # the image mended: nothing is stale
    assert "Data and pipelines are up to date." in run(["dvc", "status"], project).stdout
