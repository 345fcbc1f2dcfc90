"""The tool as a dependency, not a fork: `oodbench init` from a wheel, then `dvc repro`.

A wheel of this repository is installed into a fresh virtual environment (which sees
the shared environment's libraries through a .pth file, not its editable oodbench); in
a new folder `oodbench init` makes a project whose stages run that installed package.
The user shrinks the demo, adds a method of their own (tests/own_method.py) and runs
`dvc repro`: no clone, no stages/, no package sources in the project. Checked on the one
build: what the project holds and imports, the method's AUROC against a loop, the CLI
around it (methods, check-method, predict), an edit of the user's helper and an
"upgrade" of the installed package rerunning exactly the stages whose code changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from oodbench.formats.features import load_features
from oodbench.pipeline.layout import folder_digest
from tests.conftest import ROOT, SMALL_DEMO
from tests.own_method import BLOCK, auroc_loop, cosine_scores, write_method

# one wheel, one venv, one project: every test of the module on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("init")]
SCORE_COS = "pipelines/score-cos/dvc.yaml:score"


@dataclass
class Installed:
    """A fresh venv with the wheel installed, and the environment its commands run in."""

    venv: Path
    env: dict[str, str]

    @property
    def package(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages")) / "oodbench"

    def run(
        self, cmd: list[str], cwd: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=self.env)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result


def build_wheel(dest: Path) -> Path:
    """A wheel of this worktree, built from a copy of what the wheel needs."""
    source = dest / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "oodbench", source / "oodbench", ignore=shutil.ignore_patterns("__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(dest / "wheels"), str(source)], check=True, capture_output=True)
    (wheel,) = (dest / "wheels").glob("oodbench-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    dest = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(dest)
    venv = dest / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # pip of this environment installs into the new one, which sees none of this one's
    # packages while it does: so the editable oodbench here cannot satisfy the wheel
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    subprocess.run([*install, "--no-index", "-q", str(wheel)], check=True, capture_output=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # then the libraries (torch, timm, dvc, ...): their folder only, not its .pth files,
    # so this environment's editable oodbench finder is not installed there
    Path(purelib, "shared-libraries.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1")
    return Installed(venv, env)


@pytest.fixture(scope="module")
def bench(installed: Installed, tmp_path_factory) -> dict:
    """`oodbench init`, made small, with the user's method; after one `dvc repro`."""
    dest = tmp_path_factory.mktemp("init") / "mybench"
    made = installed.run(["oodbench", "init", str(dest)], dest.parent).stdout
    template = installed.run(["oodbench", "new-method", "mine"], dest).stdout  # the template
    write_method(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["demo"] = dict(SMALL_DEMO)
    params["probe"]["epochs"] = 20
    params["benchmark"].update(methods=["msp", "cos", "mine"], ood=["digits_near", "textures"])
    params["methods"]["cos"] = dict(BLOCK)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    installed.run(["oodbench", "pipeline"], dest)
    repro = installed.run(["python", "-m", "dvc", "repro"], dest)
    return {"dest": dest, "init": made, "template": template, "repro": repro.stdout}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def stale(installed: Installed, dest: Path) -> dict:
    return json.loads(installed.run(["python", "-m", "dvc", "status", "--json"], dest).stdout)


def test_init_makes_a_project_that_runs_the_installed_package(installed: Installed, bench: dict):
    dest = bench["dest"]
    assert bench["init"].startswith(f"made a benchmark project in {dest}")
    assert {p.name for p in dest.iterdir()} >= {".git", ".dvc", "params.yaml", "datalists"}
    assert not (dest / "stages").exists() and not (dest / "oodbench").exists()
    where = installed.run(["python", "-c", "import oodbench; print(oodbench.__file__)"], dest)
    assert Path(where.stdout.strip()) == installed.package / "__init__.py"
    pipelines = [dest / "dvc.yaml", dest / "pipelines" / "lite0" / "dvc.yaml"]
    commands = [
        s["cmd"] for f in pipelines for s in yaml.safe_load(f.read_text())["stages"].values()
    ]
    assert commands and all(c.startswith("python -m oodbench.cli.stage ") for c in commands)
    assert ran(bench["repro"]) >= {"package", "demo", "check", SCORE_COS, "evaluate"}
    identity = json.loads((dest / "build/package.json").read_text())
    assert identity == {
        "name": "oodbench",
        "version": "0.1.0",
        "sha256": folder_digest(installed.package),
    }
    code = json.loads((dest / "build/specs/code/score-user-cos.json").read_text())
    user = {f for f in code["files"] if not f.startswith("oodbench/")}
    assert user == {"mymethods/__init__.py", "mymethods/common.py", "mymethods/cosine.py"}
    installed_scoring = (installed.package / "results" / "scoring.py").read_bytes()
    assert (
        code["files"]["oodbench/results/scoring.py"]
        == __import__("hashlib").sha256(installed_scoring).hexdigest()
    )
    # after a repro only the package stage, which checks the installed package, is due
    assert stale(installed, dest) == {"package": ["always changed"]}


def test_the_users_method_auroc_equals_a_loop(bench: dict):
    dest = bench["dest"]
    report = json.loads((dest / "metrics" / "lite0.json").read_text())
    folder = dest / "features" / "lite0"
    train = load_features(folder / "digits_id_train")
    id_scores = cosine_scores(
        train.features, train.labels, load_features(folder / "digits_id_val").features
    )
    for ood in ("digits_near", "textures"):
        ood_scores = cosine_scores(
            train.features, train.labels, load_features(folder / ood).features
        )
        assert report["methods"]["cos"][ood]["auroc"] == pytest.approx(
            auroc_loop(id_scores, ood_scores), abs=1e-12
        )
    board = (dest / "metrics" / "leaderboard.md").read_text()
    assert "| cos |" in board and "| mine |" in board  # the user's and the template's
    for kind in ("roc", "hist"):  # `dvc plots show` draws it beside the built-ins
        assert (dest / "plots" / "lite0" / kind / "cos" / "textures.csv").is_file()


def test_the_cli_lists_checks_and_predicts_the_users_method(installed: Installed, bench: dict):
    dest = bench["dest"]
    listed = installed.run(["oodbench", "methods", "cos"], dest).stdout
    assert re.search(r"\ncos +CosineToMeans +mymethods/cosine\.py ", listed)
    checked = installed.run(["oodbench", "check-method", "cos"], dest).stdout
    assert checked.endswith("cos: every rule passed\n")
    assert bench["template"].startswith("wrote methods/mine.py\nadded to params.yaml:\n")
    template = installed.run(["oodbench", "check-method", "mine"], dest).stdout
    assert template.endswith("mine: every rule passed\n")
    image = sorted((dest / "data" / "demo").rglob("*.png"))[0]
    predicted = installed.run(
        ["oodbench", "predict", str(image), "--methods", "msp,cos", "--format", "json"], dest
    )
    verdicts = {v["method"]: v for v in json.loads(predicted.stdout)["verdicts"]}
    assert set(verdicts) == {"msp", "cos"} and -1.0 <= verdicts["cos"]["score"] <= 1.0


def test_an_upgrade_of_the_package_reruns_only_the_stages_whose_code_changed(
    installed: Installed, bench: dict
):
    """The installed msp module changes (as in a release that fixed msp): DVC's package
    stage notices, the check stage's digests stale msp's score stage and nothing else of
    the benchmark."""
    dest = bench["dest"]
    msp = installed.package / "methods" / "msp.py"
    original = msp.read_text()
    try:
        msp.write_text(original + "\n# a release that touched msp\n")
        installed.run(["python", "-m", "dvc", "repro", "check"], dest)
        # the demo stage ran again as the check stage's upstream (same files: nothing follows)
        assert set(stale(installed, dest)) == {"package", "pipelines/score-msp/dvc.yaml:score"}
    finally:
        msp.write_text(original)
        installed.run(["python", "-m", "dvc", "repro", "check"], dest)
    assert stale(installed, dest) == {"package": ["always changed"]}


def test_an_exception_in_the_users_method_stops_repro_and_keeps_the_metrics(
    installed: Installed, bench: dict
):
    dest = bench["dest"]
    kept = {p: p.read_bytes() for p in (dest / "metrics").rglob("*") if p.is_file()}
    assert any(p.suffix == ".json" for p in kept)  # a built project's metrics
    method = dest / "mymethods" / "cosine.py"
    text = method.read_text()
    body = "        return self.scale * (unit_rows(features) @ self.means_.T).max(axis=1)"
    assert body in text
    method.write_text(text.replace(body, "        return {}[len(features)]"))
    line = text.splitlines().index(body) + 1
    try:
        result = installed.run(["python", "-m", "dvc", "repro"], dest, check=False)
    finally:
        method.write_text(text)
    assert result.returncode != 0
    assert (
        "error: methods.cos: score on 'digits_id_val' failed in "
        f"mymethods/cosine.py:CosineToMeans: mymethods/cosine.py:{line}: KeyError: "
    ) in result.stderr
    assert {p: p.read_bytes() for p in (dest / "metrics").rglob("*") if p.is_file()} == kept


def test_editing_the_users_helper_reruns_only_its_stages(installed: Installed, bench: dict):
    """The helper stops normalising: cos becomes the largest dot product with the class
    means, other numbers; its score stage and evaluate rerun, nothing else."""
    dest = bench["dest"]
    before = json.loads((dest / "metrics" / "lite0.json").read_text())["methods"]
    helper = dest / "mymethods" / "common.py"
    text = helper.read_text()
    normalised = "return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)"
    assert normalised in text
    helper.write_text(text.replace(normalised, "return x"))
    result = installed.run(["python", "-m", "dvc", "repro"], dest)
    assert ran(result.stdout) == {"package", "check", SCORE_COS, "evaluate"}
    after = json.loads((dest / "metrics" / "lite0.json").read_text())["methods"]
    assert after["msp"] == before["msp"] and after["cos"] != before["cos"]
