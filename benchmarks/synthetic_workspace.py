"""A synthetic ImageNet-shaped workspace, written with the project's own writers.

Shapes follow the ViM ImageNet benchmark with a ViT-B/16: C=1000 classes, D=768
features, 200k ID train rows, 50k ID val, OOD sets of 17,632 / 5,160 / 10,000 / 2,000
rows (OpenImage-O, Texture, iNaturalist, ImageNet-O); ``scale`` multiplies every row
count. The workspace holds what the extract, fc and check stages would have written:
feature folders of 4096-row NPY shards *with* the model head's logits shards (which the
score stage must not read), the fc file (with a CLIP text head, so ``mcm`` runs), a
second backbone sharing the features with a MOS group head (``mos``), and the
resolved specs. :func:`run_stage` runs a real stage script in it as its own process and
returns its wall seconds and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from oodbench.formats import features as store
from oodbench.formats.classifier import Linear, save_fc
from oodbench.formats.features import FeatureSet
from oodbench.formats.paths import fc_path, features_dir
from oodbench.formats.specs import method_spec, scoring_spec, write_spec
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT
from oodbench.methods import create
from oodbench.methods.mos import IMAGENET_GROUP_SIZES

ROOT = Path(__file__).resolve().parents[1]
C, D, CLIP_DIM = 1000, 768, 512
ROWS = {"train": 200_000, "val": 50_000}
OOD_ROWS = {"openimage_o": 17_632, "texture": 5_160, "inaturalist": 10_000, "imagenet_o": 2_000}
BACKBONE, MOS_BACKBONE = "vitb", "vitb_mos"
SHARD_ROWS = 4096


@dataclass
class Bench:
    fc: Linear  # W, b and the CLIP text head
    mos_fc: Linear  # a group head: C + 8 outputs, ImageNet's MOS taxonomy
    train: FeatureSet
    val: FeatureSet
    ood: dict[str, FeatureSet]

    def scored(self) -> dict[str, FeatureSet]:
        return {"val": self.val, **self.ood}


def _features(rng: np.random.Generator, centres: np.ndarray, n: int, ood: bool) -> FeatureSet:
    """Non-negative (post-activation-like) rows: a class centre plus noise, or pure noise."""
    labels = rng.integers(0, C, n) if not ood else -np.ones(n, np.int64)
    x = np.empty((n, D), np.float32)
    for s in range(0, n, 16384):
        block = rng.standard_normal((min(16384, n - s), D), dtype=np.float32)
        if not ood:
            block += 1.5 * centres[labels[s : s + len(block)]]
        x[s : s + len(block)] = np.maximum(block + 0.5, 0)
    return FeatureSet("ood" if ood else "id", x, labels.astype(np.int64), np.arange(n))


def synthetic(scale: float, seed: int = 0) -> Bench:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((C, D), dtype=np.float32)
    projection = rng.standard_normal((D, CLIP_DIM), dtype=np.float32) / np.sqrt(D)
    text = centres @ projection
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    names = [str(c) for c in range(C)]
    fc = Linear(
        0.05 * centres,
        rng.normal(0, 0.1, C).astype(np.float32),
        names,
        extras={CLIP_PROJECTION: projection, CLIP_TEXT: text.astype(np.float32)},
    )
    outputs = C + len(IMAGENET_GROUP_SIZES)
    mos_fc = Linear(
        0.05 * rng.standard_normal((outputs, D), dtype=np.float32),
        rng.normal(0, 0.1, outputs).astype(np.float32),
        [str(c) for c in range(outputs)],
    )
    train = _features(rng, centres, max(int(ROWS["train"] * scale), 2 * C), ood=False)
    val = _features(rng, centres, max(int(ROWS["val"] * scale), 1), ood=False)
    ood = {
        name: _features(rng, centres, max(int(n * scale), 1), ood=True)
        for name, n in OOD_ROWS.items()
    }
    return Bench(fc, mos_fc, train, val, ood)


def write_features(root: Path, name: str, fs: FeatureSet, fc: Linear) -> None:
    """One feature folder as extract writes it (features and head-logits shards)."""
    info = {"backbone": BACKBONE, "dataset": name}
    store.write_feature_dir(
        root / features_dir(BACKBONE, name),
        info,
        fs.features,
        fs.labels,
        logits=fc.logits(fs.features),
        shard_rows=SHARD_ROWS,
    )


def write_workspace(root: Path, bench: Bench) -> None:
    save_fc(root / fc_path(BACKBONE), bench.fc)
    save_fc(root / fc_path(MOS_BACKBONE), bench.mos_fc)
    write_features(root, "train", bench.train, bench.fc)
    for name, fs in bench.scored().items():
        write_features(root, name, fs, bench.fc)
    spec = {"id_train": "train", "id_val": "val", "ood": list(bench.ood), "one_class": None}
    write_spec(root / scoring_spec(), spec)


def write_method(root: Path, key: str, name: str, params: dict) -> None:
    create(name, params, where=f"methods.{key}")  # a bad block stops here, not in the stage
    write_method_spec(root, key, name, params)


def write_method_spec(root: Path, key: str, name: str, hyperparameters: dict) -> None:
    """The method's spec as the check stage writes it (oodbench/pipeline/resolve.py
    score_spec: with the datasets of the workspace's scoring spec; the code digest's
    sha256 the stage does not read) and its params.yaml block, whose hyperparameters the
    score stage reads."""
    scoring = json.loads((root / scoring_spec()).read_text())
    features = {BACKBONE: BACKBONE, MOS_BACKBONE: BACKBONE}  # the MOS head reads vitb's
    spec = {"key": key, "method": name, "scoring": scoring, "features": features, "code": ""}
    write_spec(root / method_spec(key), spec)
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text()) if path.is_file() else {}
    params.setdefault("methods", {})[key] = (
        {"method": name} if name != key else {}
    ) | hyperparameters
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass
class StageRun:
    seconds: float
    peak_rss: int  # bytes
    output: str


#: runs a stage script and reports its own peak RSS (VmHWM: the high-water mark of this
#: process image; ru_maxrss would also count the benchmark's memory the child was forked from)
STAGE_RUNNER = """
import atexit, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(f"@@peak_rss_kb {kb}", file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_stage(root: Path, kind: str, *args: str) -> StageRun:
    """``python stages/<kind>.py ARGS`` in `root`, as DVC runs it (``DVC_STAGE`` set: DVC
    has hashed the dependencies); wall seconds and the process's own peak RSS."""
    env = {**os.environ, store.DVC_STAGE_ENV: f"{kind}-bench"}
    script = str(ROOT / "stages" / f"{kind}.py")
    command = [sys.executable, "-c", STAGE_RUNNER, script, *args]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{script} {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    peak = [line for line in result.stderr.splitlines() if line.startswith("@@peak_rss_kb")]
    return StageRun(seconds, int(peak[-1].split()[1]) * 1024, result.stdout)


def floor_seconds(root: Path, read: list[str], fc: Linear) -> float:
    """One read of the feature shards of the datasets in `read` from NPY, plus their logits
    x W^T + b in float32: what a score stage reading those datasets cannot avoid."""
    start = time.perf_counter()
    w, b = fc.weight, fc.bias
    for name in read:
        for path in sorted((root / features_dir(BACKBONE, name)).glob("*.features.npy")):
            np.load(path) @ w.T + b
    return time.perf_counter() - start


def array_bytes(bench: Bench, with_train: bool) -> int:
    scored = sum(fs.features.nbytes for fs in bench.scored().values())
    return scored + (bench.train.features.nbytes if with_train else 0)
