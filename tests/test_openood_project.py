"""OpenOOD's CIFAR-10 benchmark with the user's own model, through one real `dvc repro`
(tests/openood_project.py builds it): `init openood` on a small imglist folder, the
v1.5 preset loading a checkpoint saved under OpenOOD's names, the same architecture
from the user's own file, and the same features imported from elsewhere. The features
are checked against the test's own forward pass, the metrics against loops written here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from tests.conftest import rewrite_params
from tests.faults_catalogue import catalogue
from tests.openood_project import OOD, own_features
from tests.user_project import run

pytestmark = pytest.mark.slow
DATASETS = ["cifar10_train", "cifar10_test", *OOD]


def metrics(project: Path, backbone: str) -> dict:
    return json.loads((project / "metrics" / f"{backbone}.json").read_text())


def auroc_loop(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(ID score > OOD score) + P(tie) / 2, over every pair."""
    wins = sum(
        float(np.sum(s > ood_scores)) + 0.5 * float(np.sum(s == ood_scores)) for s in id_scores
    )
    return wins / (len(id_scores) * len(ood_scores))


def msp(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = features.astype(np.float64) @ weight.T.astype(np.float64) + bias
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits).max(axis=1) / np.exp(logits).sum(axis=1)


def test_the_users_model_file_extracts_what_its_own_forward_gives(openood_project) -> None:
    """Every stored feature row of `own` (model: mynets/resnet.py:ResNet18_32x32) equals
    the test's forward pass with OpenOOD's torchvision test transform; the preset
    `openood_cifar10` loads the same checkpoint (OpenOOD's names) to the same features."""
    project, data, _ = openood_project
    for dataset in DATASETS:
        want = own_features(project, data, project / "datalists" / f"{dataset}.txt")
        got = load_features(project / "features" / "own" / dataset)
        preset = load_features(project / "features" / "resnet18" / dataset)
        np.testing.assert_allclose(got.features, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(preset.features, got.features, rtol=1e-5, atol=1e-6)
        assert got.index.tolist() == list(range(len(want)))
    state = torch.load(project / "checkpoints/resnet18/best.ckpt")
    for backbone in ("own", "resnet18", "imported"):  # get_fc(), the preset's fc, fc.pkl
        fc = load_fc(project / "features" / backbone / "fc.safetensors")
        np.testing.assert_array_equal(fc.weight, state["fc.weight"].numpy())
        np.testing.assert_array_equal(fc.bias, state["fc.bias"].numpy())


def test_imported_features_run_every_method(openood_project) -> None:
    """imported/own/ (.npy, a ViM pickle, an import-pkl folder, fc.pkl): the rows are
    stored as they are and msp's AUROC equals a pairwise loop over them."""
    project, _, _ = openood_project
    folder = project / "imported" / "own"
    fc = pickle.loads((folder / "fc.pkl").read_bytes())
    arrays = {}
    for dataset in DATASETS:
        stored = load_features(project / "features" / "imported" / dataset).features
        if (folder / f"{dataset}.npy").is_file():
            source = np.load(folder / f"{dataset}.npy")
        elif (folder / f"{dataset}.pkl").is_file():
            source = pickle.loads((folder / f"{dataset}.pkl").read_bytes())
        else:
            source = load_features(folder / dataset).features
        np.testing.assert_array_equal(stored, source)
        arrays[dataset] = source
    report = metrics(project, "imported")
    assert set(report["methods"]) == {"msp", "energy", "knn", "mahalanobis", "vim"}
    id_scores = msp(arrays["cifar10_test"], *fc)
    for dataset in ("cifar100", "mnist"):
        want = auroc_loop(id_scores, msp(arrays[dataset], *fc))
        assert report["methods"]["msp"][dataset]["auroc"] == pytest.approx(want, abs=1e-12)
    pipeline = (project / "pipelines" / "imported" / "dvc.yaml").read_text()
    for dep in ("imported/own/cifar10_train.npy", "imported/own/cifar10_test.pkl",
                "imported/own/cifar100\n", "imported/own/fc.pkl"):  # fmt: skip
        assert f"- {dep}" in pipeline, dep
    assert "extract-" not in pipeline


def test_full_spectrum_counts_cifar10c_as_id(openood_project) -> None:
    """group csid: left out of the standard metrics, ID in `fsood` (OpenOOD's
    eval_ood(fsood=True)), AUROC over ID test + CIFAR-10-C against each OOD set."""
    project, _, _ = openood_project
    report = metrics(project, "own")
    assert set(report["ood"]) == {"cifar100", "mnist"}
    assert "cifar10c" not in report["methods"]["msp"]
    fs = report["fsood"]
    assert fs["csid"] == {"cifar10c": {"n": 10}} and fs["id"]["n"] == 30
    scores = pd.read_parquet(project / "scores" / "own" / "msp.parquet")
    by_set = {
        name: group.sort_values("index")["score"].to_numpy()
        for name, group in scores.groupby("dataset")
    }
    full_id = np.concatenate([by_set["cifar10_test"], by_set["cifar10c"]])
    for dataset in ("cifar100", "mnist"):
        assert fs["methods"]["msp"][dataset]["auroc"] == pytest.approx(
            auroc_loop(full_id, by_set[dataset]), abs=1e-12
        )
        assert report["methods"]["msp"][dataset]["auroc"] == pytest.approx(
            auroc_loop(by_set["cifar10_test"], by_set[dataset]), abs=1e-12
        )
    # ID accuracy over test + CIFAR-10-C, from the stored features and the classifier
    fc = load_fc(project / "features" / "own" / "fc.safetensors")
    hits = []
    for dataset in ("cifar10_test", "cifar10c"):
        rows = load_features(project / "features" / "own" / dataset)
        hits += list(np.argmax(rows.features @ fc.weight.T + fc.bias, axis=1) == rows.labels)
    assert fs["id"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)
    table = run(["oodbench", "report", "--layout", "openood", "--format", "csv"], project).stdout
    near = report["methods"]["msp"]["near"]
    row = f"own: OOD,msp,{near['auroc']:.6f},{report['methods']['msp']['far']['auroc']:.6f}"
    assert row in table and "own: full-spectrum OOD (ID + cifar10c),msp," in table


def test_the_model_file_is_a_dependency_of_its_backbones_stages_only(openood_copy) -> None:
    """Editing mynets/blocks.py (imported by mynets/resnet.py) makes `own`'s extract and
    fc stages stale, and nothing of the preset or the imported backbone."""
    project = openood_copy
    blocks = project / "mynets" / "blocks.py"
    original = blocks.read_text()
    blocks.write_text(original + "# a comment\n")
    run(["dvc", "repro", "check"], project)
    status = run(["dvc", "status"], project).stdout
    stale = {line.rstrip(":") for line in status.splitlines() if line and not line[0].isspace()}
    want = {f"pipelines/own/dvc.yaml:extract-{d}" for d in DATASETS} | {"pipelines/own/dvc.yaml:fc"}
    assert stale == want
    blocks.write_text(original)  # the edit undone: nothing is stale any more
    run(["dvc", "repro", "check"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout


@catalogue(
    "files",
    "`dvc repro` runs with a `model:` whose class is not in the user's file",
    "the extract stage stops with one line naming `backbones.<bb>.model`, the file and what it defines; every metrics file stays as it was",
)
def test_a_missing_factory_stops_the_run_and_keeps_the_metrics(openood_copy) -> None:
    project = openood_copy
    kept = {p: p.read_bytes() for p in (project / "metrics").rglob("*") if p.is_file()}
    assert any(p.suffix == ".json" for p in kept)  # a built project's metrics
    original = rewrite_params(
        project, lambda p: p["backbones"]["own"].update(model="mynets/resnet.py:ResNet19")
    )
    result = run(["dvc", "repro"], project, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "error: params.yaml: backbones.own.model: mynets/resnet.py defines no 'ResNet19'; "
        "it defines " in output
    )
    assert {p: p.read_bytes() for p in kept} == kept
    # with the factory named again, nothing but the check stage has anything to do
    (project / "params.yaml").write_text(original)
    assert "Running stage" not in run(["dvc", "repro"], project).stdout.replace(
        "Running stage 'check'", ""
    )


def test_init_said_what_to_do_next(openood_project) -> None:
    _, _, init = openood_project
    assert "benchmark.tune_ood: tin_val" in init
    assert "checkpoints/resnet18/best.ckpt, then `oodbench pipeline` and `dvc repro`" in init
