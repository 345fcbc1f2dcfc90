"""A CLIP backbone through the real pipeline, checked against open_clip's own API.

The user project's (tests/user_project.py, built once by the `user_project` fixture)
backbone `clip` is a tiny open_clip ViT given by its own architecture file
(``clip_config:``, no ``clip:`` name: registered under the file's stem in every stage
process) and random local weights, with ``fc: plp``, through check -> materialize ->
extract -> fc -> score (mcm, knn, msp, energy, ...) -> evaluate. In this process
open_clip alone rebuilds the model from the same two files
(``create_model_and_transforms``) and computes, with its own preprocessing, what the
stored artifacts must hold. Then the rerun rules, on a copy: new class names, or an
edited prompt set, rerun fc and score but never extraction.

Tolerances: the pipeline and open_clip run the same float32 weights on the same pixels
(uint8 pixels normalised as (x - 255 m) / (255 s) here, x / 255 then (. - m) / s in
open_clip: ~1e-7 apart), batched differently; unit-norm embeddings, cosines and MCM
scores agree to ~2e-7 (measured), so 1e-5 fails on any real difference (a wrong layer,
activation, pixel or prompt moves them by >1e-3).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from scipy.special import softmax

from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features, read_feature_info
from oodbench.formats.manifest import read_manifest
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT, zero_shot_logits
from tests.conftest import rewrite_params, run
from tests.user_project import CLASSES, PARAMS, TINY_CLIP

pytestmark = pytest.mark.slow

ARCH = TINY_CLIP
ARCH_NAME = "tiny-clip"
CONFIG = f"configs/{ARCH_NAME}.json"
CHECKPOINT = "checkpoints/clip/tiny.safetensors"
NAMES = list(CLASSES)  # the ID lists' class folders name the PLP prompts
MCM_PROMPTS = [  # scores.md, written out: the oracle must not import the code under test
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
]
METHODS = ["mcm", "knn", "msp", "energy"]
ID_TRAIN, ID_VAL, OOD = "shapes_train", "shapes_val", ["noise", "stripes"]
TOL = 1e-5
#: open_clip's model, its eval preprocessing and its tokenizer
Reference = tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor], Callable]


def repro(ws: Path) -> dict[str, set[str]]:
    """`dvc repro` in the workspace; the stages it ran by kind (extract, fc, score, ...).

    The stages import the workspace's own copy of the package (PYTHONPATH), as in a
    user's checkout, so that an edit there changes what they compute."""
    result = subprocess.run(
        ["dvc", "repro"],
        cwd=ws,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ws)},
    )
    assert result.returncode == 0, f"dvc repro failed\n{result.stdout}\n{result.stderr}"
    ran: dict[str, set[str]] = {}
    for address in re.findall(r"Running stage '([^']+)'", result.stdout):
        name = address.rsplit(":", 1)[-1]  # pipelines/<bb>/dvc.yaml:fc or fc-<bb>
        ran.setdefault(name.split("-", 1)[0], set()).add(address)
    return ran


@pytest.fixture(scope="module")
def reference(user_project: Path) -> Reference:
    """open_clip's model, eval preprocessing and tokenizer, built by open_clip from the
    project's architecture file and checkpoint (public API, in this process)."""
    open_clip.add_model_config(user_project / CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(
        ARCH_NAME, pretrained=str(user_project / CHECKPOINT)
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(ARCH_NAME)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def open_clip_images(ws: Path, dataset: str, reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """(manifest index, normalised encode_image) of every image the features hold."""
    model, preprocess, _ = reference
    rows = pd.read_parquet(ws / "features" / "clip" / dataset / "index.parquet")
    root = ws / read_manifest(ws / "data" / "manifests" / f"{dataset}.parquet")[1]["root"]
    pixels = []
    for path in rows["path"]:
        with Image.open(root / path) as image:
            pixels.append(preprocess(image))
    with torch.no_grad():
        embedded = model.encode_image(torch.stack(pixels)).numpy()
    return rows["index"].to_numpy(), normalize(embedded)


def open_clip_text(reference: Reference, names: list[str], prompts: list[str]) -> np.ndarray:
    """Per class, the normalised mean of the normalised encode_text of its prompts."""
    model, _, tokenizer = reference
    with torch.no_grad():
        per_class = []
        for name in names:
            emb = normalize(model.encode_text(tokenizer([p.format(name) for p in prompts])).numpy())
            per_class.append(emb.mean(axis=0))
    return normalize(np.stack(per_class))


def scores_by_index(ws: Path, method: str, dataset: str) -> pd.Series:
    table = pd.read_parquet(ws / "scores" / "clip" / f"{method}.parquet")
    rows = table[table["dataset"] == dataset]
    return pd.Series(rows["score"].to_numpy(), index=rows["index"].to_numpy())


def assert_mcm_is_open_clips(
    ws: Path, reference: Reference, names: list[str], prompts: list[str]
) -> None:
    text = open_clip_text(reference, names, prompts)
    for dataset in [ID_VAL, *OOD]:
        index, image = open_clip_images(ws, dataset, reference)
        expected = softmax(image @ text.T, axis=1).max(axis=1)  # T = 1, no x100
        got = scores_by_index(ws, "mcm", dataset).loc[index].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL, err_msg=dataset)


def test_clip_artifacts_are_open_clips_numbers(user_project: Path, reference: Reference) -> None:
    ws = user_project
    # the first `dvc repro` ran every stage of the CLIP backbone: their lock entries
    lock = yaml.safe_load((ws / "pipelines" / "clip" / "dvc.lock").read_text())["stages"]
    assert {s for s in lock if s.startswith("extract-")} == {
        f"extract-{d}" for d in [ID_TRAIN, ID_VAL, *OOD]
    }
    assert "fc" in lock
    for method in PARAMS["benchmark"]["methods"]:  # each method's one score stage ran
        scored = ws / "pipelines" / f"score-{method}" / "dvc.lock"
        assert "score" in yaml.safe_load(scored.read_text())["stages"], method
    assert "evaluate" in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    model, _, _ = reference
    fc = load_fc(ws / "features" / "clip" / "fc.safetensors")
    projection, text = fc.extras[CLIP_PROJECTION], fc.extras[CLIP_TEXT]
    np.testing.assert_array_equal(projection, model.visual.proj.detach().numpy())
    expected_text = open_clip_text(reference, NAMES, MCM_PROMPTS)
    np.testing.assert_allclose(text, expected_text, rtol=0, atol=TOL)
    assert fc.class_names == NAMES and fc.weight.shape == (len(NAMES), ARCH["vision_cfg"]["width"])

    for dataset in [ID_TRAIN, ID_VAL, *OOD]:
        stored = load_features(ws / "features" / "clip" / dataset)
        index, image = open_clip_images(ws, dataset, reference)
        np.testing.assert_array_equal(stored.index, index)
        # the stored feature is the embedding before the projection
        assert stored.features.shape == (len(index), ARCH["vision_cfg"]["width"])
        np.testing.assert_allclose(
            normalize(stored.features @ projection), image, rtol=0, atol=TOL, err_msg=dataset
        )
        # the zero-shot logits mcm and PLP's pseudo-labels use
        np.testing.assert_allclose(
            zero_shot_logits(stored.features, projection, text),
            image @ expected_text.T,
            rtol=0,
            atol=TOL,
            err_msg=dataset,
        )
        if dataset == ID_TRAIN:
            continue
        for method in ("msp", "energy"):  # the PLP probe's scores
            scores = scores_by_index(ws, method, dataset).loc[index].to_numpy()
            assert len(scores) == len(index) and np.isfinite(scores).all(), (method, dataset)
        logits = fc.logits(stored.features)
        np.testing.assert_allclose(
            scores_by_index(ws, "msp", dataset).loc[stored.index].to_numpy(),
            softmax(logits.astype(np.float64), axis=1).max(axis=1),
            rtol=1e-6,
        )
    assert_mcm_is_open_clips(ws, reference, NAMES, MCM_PROMPTS)

    info = read_feature_info(ws / "features" / "clip" / ID_VAL)
    assert (info["clip"], info["clip_config"]) == (ARCH_NAME, CONFIG)
    assert info["feature_dim"] == ARCH["vision_cfg"]["width"] and info["num_classes"] == 0
    assert info["data_config"]["interpolation"] == "bicubic"
    metrics = json.loads((ws / "metrics" / "clip.json").read_text())
    assert set(metrics["methods"]) == set(PARAMS["benchmark"]["methods"])
    for method in METHODS:
        for dataset in OOD:
            assert 0.0 <= metrics["methods"][method][dataset]["auroc"] <= 1.0, (method, dataset)


def test_names_and_prompts_rerun_fc_and_score_not_extraction(
    user_copy: Path, reference: Reference
) -> None:
    """On a copy reduced to the CLIP backbone and four methods: the classes of the ID
    lists renamed (their classes files) rerun their materialize stages (names only: the
    manifests keep their bytes), fc and score; an edited prompt set reruns fc and score."""
    ws = user_copy
    rewrite_params(ws, lambda p: p["benchmark"].update(backbones=["clip"], methods=METHODS))
    run(["oodbench", "pipeline"], ws)
    renamed = [f"shape {name}" for name in NAMES]
    for split in ("shapes_train", "shapes_val"):
        listed = ws / "datalists" / f"{split}.classes.txt"
        assert listed.read_text().split("\n")[: len(NAMES)] == NAMES
        listed.write_text("\n".join(renamed) + "\n")
    ran = repro(ws)
    assert "extract" not in ran, ran
    assert ran["materialize"] == {"materialize-shapes_train", "materialize-shapes_val"}, ran
    assert len(ran["fc"]) == 1 and len(ran["score"]) == len(METHODS), ran
    assert load_fc(ws / "features" / "clip" / "fc.safetensors").class_names == renamed
    assert_mcm_is_open_clips(ws, reference, renamed, MCM_PROMPTS)

    module = ws / "oodbench" / "heads" / "clip_text.py"
    original = module.read_text()
    last = '    "a photo of the small {}.",\n)'
    assert original.count(last) == 1
    module.write_text(original.replace(last, last[:-1] + '    "a sketch of a {}.",\n)'))
    ran = repro(ws)
    assert "extract" not in ran and "materialize" not in ran, ran
    assert len(ran["fc"]) == 1 and len(ran["score"]) == len(METHODS), ran
    assert_mcm_is_open_clips(ws, reference, renamed, [*MCM_PROMPTS, "a sketch of a {}."])
