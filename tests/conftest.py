"""Shared fixtures: a small copy of the project as a real git + DVC workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from oodbench.formats import features as store

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

#: a demo small enough for tests: a few images per set, one backbone, four methods
SMALL_DEMO = {
    "seed": 0,
    "train_per_class": 6,
    "val_per_class": 4,
    "near_per_class": 4,
    "crops_per_texture": 4,
    "crops_per_photo": 2,
    "crop_size": 64,
}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ})
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def rewrite_params(ws: Path, change) -> str:
    """Apply `change` to the parsed params.yaml of `ws`; return the previous text (to restore it)."""
    path = ws / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def stage_command(kind: str, *args: str) -> list[str]:
    """The command line dvc.yaml runs for a stage: ``python stages/<kind>.py ARGS``."""
    return [sys.executable, str(ROOT / "stages" / f"{kind}.py"), *args]


def make_workspace(dest: Path, edit_params=None) -> Path:
    """Copy the project (params, stage scripts, package sources) into `dest` as its own git +
    DVC repo, and generate its dvc.yaml with `oodbench pipeline` for the edited params."""
    shutil.copy2(ROOT / "params.yaml", dest / "params.yaml")
    shutil.copy2(ROOT / ".dvcignore", dest / ".dvcignore")
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("stages", "oodbench", "checkpoints", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["demo"] = dict(SMALL_DEMO)
    params["benchmark"]["backbones"] = ["lite0"]
    params["benchmark"]["methods"] = ["msp", "energy", "react", "maxlogit"]
    params["probe"]["epochs"] = 20
    if edit_params is not None:
        edit_params(params)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["oodbench", "pipeline"], dest)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Path:
    """A small demo workspace after one full `dvc repro` (shared by the pipeline tests)."""
    dest = make_workspace(tmp_path_factory.mktemp("workspace"))
    run(["dvc", "repro"], dest)
    return dest


def feature_dir(directory: Path, features: np.ndarray, labels: list[int], backbone: str) -> Path:
    """A real feature directory (one shard) written with the store's own writer."""
    info = {"backbone": backbone, "dataset": directory.name}
    store.write_feature_dir(
        directory, info, features, np.array(labels), shard_rows=max(len(features), 1)
    )
    return directory
