"""The thread count changes how fast a stage runs, never a bit of what it writes.

One synthetic workspace, written with the project's own writers (feature shards of
several row blocks and a partial one: 9,000 train rows are 3 blocks of the Gaussian
fits, 2 of the ViM subspace; D = 384, where LAPACK's eigh, pinv and inv change their
last bits with their thread count on the development machine), is copied twice; in
each copy two processes run, with ``OODBENCH_THREADS=1`` and ``=3``, what the stages
run: the score stage of every registered method (and of the options with their own
code paths: faiss kNN, class-averaged and normalised Mahalanobis, KL templates from ID
val), the subspace stage, and the fc stage's trained heads (probe, MOS group head; PLP
through the same probe after CLIP pseudo-labels). Every output file must be equal,
byte for byte.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from oodbench.formats import features as store
from oodbench.formats.classifier import Linear, save_fc
from oodbench.formats.paths import fc_path, features_dir
from oodbench.formats.specs import fc_spec, scoring_spec, write_spec
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT
from oodbench.heads.groups import GROUP_OF_CLASS
from oodbench.heads.probe import ProbeConfig
from oodbench.methods import registry
from tests.conftest import ROOT, stage_command, write_method_spec

pytestmark = pytest.mark.slow
C, D, CLIP_DIM = 6, 384, 64
ROWS = {"train": 9000, "val": 4500, "near": 5000, "far": 300}
GROUPS = [["0", "2", "3", "5"], ["1", "4"]]
#: options with code paths of their own, next to every method's defaults
VARIANTS = {
    "knn_faiss": ("knn", {"backend": "faiss"}),
    "mahalanobis_average": ("mahalanobis", {"covariance": "class_average"}),
    "mahalanobis_pp": ("mahalanobis", {"normalize": True}),
    "klm_val": ("klm", {"templates": "val_labels"}),
}

#: what the stages run, one process for the score and subspace stages, one for the fc
#: stage (each sets up its libraries as its stage does)
RUNNER = """
import sys
import numpy as np
from oodbench.core.entry import run_main
from oodbench.core.threads import limit_blas_threads, reproducible_mkl, size_torch_threads
from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from oodbench.heads.export import export_classifier, fit_plp
from oodbench.heads.probe import ProbeConfig
from oodbench.results.scoring import score_method
from oodbench.results.subspace import write_subspace

def score():
    for key in sys.argv[2:]:
        if key == "mos":
            score_method("mos_head", key, features="bb")
        else:
            score_method("bb", key)
    write_subspace("bb")

def fc():
    export_classifier("probe_head", features="bb")
    export_classifier("mos_trained", features="bb")
    reproducible_mkl(); limit_blas_threads(); size_torch_threads()  # as export_classifier
    fc, train = load_fc("features/bb/fc.safetensors"), load_features("features/bb/train")
    plp = fit_plp(train.features, fc.extras, None, ProbeConfig(epochs=2), "bb")
    np.save("plp_weight.npy", np.concatenate([plp.weight, plp.bias[:, None]], axis=1))

run_main(score if sys.argv[1] == "score" else fc)
"""


def write_workspace(root: Path) -> list[str]:
    """Features, classifiers and specs as the extract, fc and check stages write them;
    returns the method keys to score."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(C, D)).astype(np.float32)
    text = rng.normal(size=(C, CLIP_DIM)).astype(np.float32)
    fc = Linear(
        0.05 * centres,
        rng.normal(0, 0.1, C).astype(np.float32),
        [str(c) for c in range(C)],
        extras={
            CLIP_PROJECTION: rng.normal(size=(D, CLIP_DIM)).astype(np.float32) / np.sqrt(D),
            CLIP_TEXT: text / np.linalg.norm(text, axis=1, keepdims=True),
        },
    )
    save_fc(root / fc_path("bb"), fc)
    group_of_class = np.array([0, 1, 0, 0, 1, 0], np.int64)
    outputs = C + len(GROUPS)
    mos = Linear(
        0.05 * rng.normal(size=(outputs, D)).astype(np.float32),
        rng.normal(0, 0.1, outputs).astype(np.float32),
        [str(c) for c in range(outputs)],
        extras={GROUP_OF_CLASS: group_of_class},
    )
    save_fc(root / fc_path("mos_head"), mos)
    for name, n in ROWS.items():
        ood = name in ("near", "far")
        labels = -np.ones(n, np.int64) if ood else rng.integers(0, C, n)
        x = rng.normal(size=(n, D)).astype(np.float32) + 0.5
        if not ood:
            x += 1.5 * centres[labels]
        info = {"backbone": "bb", "dataset": name}
        store.write_feature_dir(
            root / features_dir("bb", name), info, np.maximum(x, 0), labels, shard_rows=4096
        )
    scoring = {"id_train": "train", "id_val": "val", "ood": ["near", "far"], "one_class": None}
    write_spec(root / scoring_spec(), scoring)
    keys = {name: (name, {}) for name in registry()} | VARIANTS
    for key, (name, params) in keys.items():
        write_method_spec(root, key, name, params)
    (root / "groups.yaml").write_text(yaml.safe_dump(GROUPS))
    probe = ProbeConfig(epochs=2, batch_size=256).as_dict()
    for backbone, kind, groups in (
        ("probe_head", "probe", None),
        ("mos_trained", "mos", "groups.yaml"),
    ):
        spec = {"backbone": backbone, "fc": kind, "classes": None, "groups": groups,
                "id_train": "train", "probe": probe, "model": None}  # fmt: skip
        write_spec(root / fc_spec(backbone), spec)
    return list(keys)


def outputs(root: Path) -> list[Path]:
    """Every file the runner wrote (not the score cache, a copy of the same scores)."""
    found = [*root.glob("scores/*/*.parquet"), *root.glob("features/*/*.safetensors")]
    return sorted(p.relative_to(root) for p in [*found, *root.glob("features/*/*.npz"),
                                                root / "plp_weight.npy"])  # fmt: skip


def test_every_artifact_is_the_same_bits_for_one_and_three_threads(tmp_path: Path) -> None:
    base = tmp_path / "base"
    keys = write_workspace(base)
    produced = {}
    for threads in ("1", "3"):
        root = tmp_path / f"threads{threads}"
        shutil.copytree(base, root)
        env = {**os.environ, "OODBENCH_THREADS": threads, "PYTHONPATH": str(ROOT)}
        env.pop("MKL_CBWR", None)
        for part in (["score", *keys], ["fc"]):
            command = [sys.executable, "-c", RUNNER, *part]
            result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-3000:]
        produced[threads] = outputs(root)
    one, three = tmp_path / "threads1", tmp_path / "threads3"
    assert produced["1"] == produced["3"]
    # every method key wrote a score table (mcm and mos: the classifiers they need exist)
    scored = {p.stem for p in produced["1"] if p.suffix == ".parquet"}
    assert scored == set(keys)
    assert {p.name for p in produced["1"] if p.suffix != ".parquet"} >= {
        "vim_subspace.npz", "fc.safetensors", "plp_weight.npy"}  # fmt: skip
    assert len([p for p in produced["1"] if p.name == "fc.safetensors"]) == 4  # 2 given, 2 trained
    differ = [str(p) for p in produced["1"] if not filecmp.cmp(one / p, three / p, shallow=False)]
    assert differ == []


def test_extraction_is_the_same_bits_for_one_and_three_threads(demo_workspace: Path) -> None:
    """Extraction is torch's convolutions (oneDNN) and linear layers (oneMKL, in its
    default mode: strict CNR would cost 15-35% of their speed): the extract stage rerun with OODBENCH_THREADS=1 and =3 writes the very bytes `dvc
    repro` wrote with the default count. Measured, not promised by oneDNN for every model
    and CPU (README, "Determinism")."""
    folder = demo_workspace / "features" / "lite0" / "digits_id_val"
    before = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    for threads in ("1", "3"):
        env = {**os.environ, "OODBENCH_THREADS": threads}
        command = stage_command("extract", "--backbone", "lite0", "--dataset", "digits_id_val")
        result = subprocess.run(
            command, cwd=demo_workspace, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "24 computed" in result.stderr  # extracted again, not taken from a work folder
        assert {p.name: p.read_bytes() for p in sorted(folder.iterdir())} == before
