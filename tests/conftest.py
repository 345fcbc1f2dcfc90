"""Shared fixtures: a small copy of the project as a real git + DVC workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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


def write_method_spec(
    root: Path, key: str, method: str, hyperparameters: dict | None = None
) -> None:
    """Method key `key` as a score stage finds it after the check stage: its spec
    (resolve.py score_spec: the method, the datasets of the workspace's scoring spec, each
    backbone with a feature folder reading its own, and the code digest's sha256, which
    the stage does not read) and its params.yaml block, whose hyperparameters it reads."""
    from oodbench.formats.specs import method_spec, read_spec, scoring_spec, write_spec

    scoring = read_spec(root / scoring_spec(), "benchmark")
    folders = sorted(p.name for p in (root / "features").iterdir() if p.is_dir())
    spec = {"key": key, "method": method, "scoring": scoring, "code": ""}
    spec["features"] = {backbone: backbone for backbone in folders}
    write_spec(root / method_spec(key), spec)
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text()) if path.is_file() else {}
    block = {**({"method": method} if method != key else {}), **(hyperparameters or {})}
    params.setdefault("methods", {})[key] = block
    path.write_text(yaml.safe_dump(params, sort_keys=False))


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
    commit(dest, "init")
    return dest


def commit(ws: Path, message: str) -> None:
    run(["git", "add", "-A"], ws)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], ws)


def copy_workspace(src: Path, dest: Path) -> Path:
    """A private copy of a built workspace: its git history, DVC cache, lock files and
    every output, so a test can change it without rebuilding (or restoring) anything."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def assert_untouched(ws: Path) -> None:
    """A shared workspace is as it was built: nothing git tracks changed, every stage
    up to date (tests that change a workspace take a copy)."""
    changed = run(["git", "status", "--porcelain"], ws).stdout
    assert changed == "", f"a test changed the shared workspace {ws}:\n{changed}"
    status = run(["dvc", "status"], ws).stdout
    assert "up to date" in status, (
        f"a test left stages of the shared workspace {ws} stale:\n{status}"
    )


def claim_build(tmp_path_factory, name: str) -> None:
    """Fail when another pytest-xdist worker of this run already built workspace `name`:
    its tests are then not grouped on one worker (WORKSPACE_GROUPS), and each worker
    would pay for the build."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    run_dir = tmp_path_factory.getbasetemp().parent  # shared by the workers of one run
    try:
        os.close(os.open(run_dir / f"built-{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pytest.fail(
            f"the {name} workspace was built by two workers: `--dist loadgroup` did not keep "
            "its tests together (pytest-xdist tags node ids with their xdist_group)"
        )


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> Iterator[Path]:
    """A small demo workspace after one full `dvc repro`, committed. Shared by every test
    that only reads it; a test that changes it takes `demo_copy` instead."""
    claim_build(tmp_path_factory, "demo")
    dest = make_workspace(tmp_path_factory.mktemp("workspace"))
    run(["dvc", "repro"], dest)
    commit(dest, "repro")
    yield dest
    assert_untouched(dest)


@pytest.fixture
def demo_copy(demo_workspace: Path, tmp_path: Path) -> Path:
    """A private copy of the built demo workspace, for a test that changes it."""
    return copy_workspace(demo_workspace, tmp_path / "ws")


@pytest.fixture(scope="session")
def user_project(tmp_path_factory) -> Iterator[Path]:
    """A user's own benchmark (tests/user_project.py) after one full `dvc repro`,
    committed; shared like `demo_workspace`, copied by `user_copy`."""
    from tests.user_project import build_project

    claim_build(tmp_path_factory, "user")
    dest = build_project(tmp_path_factory.mktemp("user") / "shapes")
    run(["dvc", "repro"], dest)
    commit(dest, "repro")
    yield dest
    assert_untouched(dest)


@pytest.fixture
def user_copy(user_project: Path, tmp_path: Path) -> Path:
    """A private copy of the built user project, for a test that changes it."""
    return copy_workspace(user_project, tmp_path / "shapes")


@pytest.fixture(scope="session")
def openood_project(tmp_path_factory) -> Iterator[tuple[Path, Path, str]]:
    """OpenOOD's CIFAR-10 benchmark with the user's own model (tests/openood_project.py)
    after one full `dvc repro`: (the project, OpenOOD's data folder, init's output)."""
    from tests.openood_project import build_openood_project

    claim_build(tmp_path_factory, "openood")
    project, data, init = build_openood_project(tmp_path_factory.mktemp("openood"))
    run(["dvc", "repro"], project)
    commit(project, "repro")
    yield project, data, init
    assert_untouched(project)


@pytest.fixture
def openood_copy(openood_project: tuple[Path, Path, str], tmp_path: Path) -> Path:
    """A private copy of the built OpenOOD project, for a test that changes it."""
    return copy_workspace(openood_project[0], tmp_path / "project")


#: the built workspaces; under pytest-xdist (`--dist loadgroup`) every test using one runs
#: on the same worker, so each is built once per run
WORKSPACE_GROUPS = {"demo_workspace": "demo", "user_project": "user", "openood_project": "openood"}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for fixture, group in WORKSPACE_GROUPS.items():
            if fixture in item.fixturenames:
                item.add_marker(pytest.mark.xdist_group(group))
                break


def feature_dir(directory: Path, features: np.ndarray, labels: list[int], backbone: str) -> Path:
    """A real feature directory (one shard) written with the store's own writer."""
    info = {"backbone": backbone, "dataset": directory.name}
    store.write_feature_dir(
        directory, info, features, np.array(labels), shard_rows=max(len(features), 1)
    )
    return directory
