"""A researcher's own method in their own project: ``methods.<key>.method:
path/file.py:ClassName``, no registration, no edit of the package.

It builds and is validated like a built-in, scores like one, is listed by `oodbench
methods`, tuned by `oodbench tune`, checked by `oodbench check-method` against the
contract every built-in passes too, written from a template by `oodbench new-method`,
and every way it can be wrong is one line naming the key and the user's file:line. Its
file and the project modules it imports are the code of its own score stages only.
The real `dvc repro` runs are in tests/test_user_benchmark.py (a clone-style project)
and tests/test_init_project.py (a project made by `oodbench init` from a wheel).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from oodbench.cli.app import app
from oodbench.core.errors import DataError, OodbenchError, ParamsError
from oodbench.formats.features import FeatureSet
from oodbench.formats.specs import dumps
from oodbench.methods import FitData, from_params, registry
from oodbench.methods.contract import RULES, check_method, synthetic
from oodbench.pipeline import dvcyaml, layout
from oodbench.pipeline.benchmark import Benchmark
from oodbench.pipeline.check import validate
from oodbench.pipeline.project import init_project
from oodbench.pipeline.resolve import resolve
from oodbench.pipeline.scaffold import new_method
from oodbench.results import tune as T
from oodbench.results.scoring import score_set
from tests.conftest import ROOT, write_method_spec
from tests.faults_catalogue import catalogue
from tests.own_method import BLOCK, REFERENCE, cosine_scores, forget, write_method
from tests.test_scoring_stage import BB, run_python, workspace  # noqa: F401 (a fixture)

#: modules of oodbench/methods/ that every score stage runs, whichever the method
METHOD_PLUMBING = {"oodbench/methods/__init__.py", "oodbench/methods/base.py",
                   "oodbench/methods/usermethod.py"}  # fmt: skip

BROKEN = '''\
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from oodbench import Detector


def a_function():
    return 1


class NotADetector:
    pass


class NoDataclass(Detector):
    def _score(self, features, logits):
        return features[:, 0]


@dataclass
class NoScore(Detector):
    pass


@dataclass
class Plain(Detector):
    """A fine method: minus the L1 distance to the mean train feature."""

    requires = frozenset({"train"})
    grid: ClassVar[dict] = {"scale": [1.0, 2.0]}

    scale: float = 1.0

    def _fit(self, data):
        self.mean_ = data.train.features.mean(axis=0)

    def _score(self, features, logits):
        return -self.scale * np.abs(features - self.mean_).sum(axis=1)


@dataclass
class ScoresBeforeFit(Plain):
    def score(self, features, logits):
        return np.zeros(len(features))


@dataclass
class FitFails(Plain):
    def _fit(self, data):
        raise RuntimeError("no train today")


@dataclass
class TwoColumns(Plain):
    def _score(self, features, logits):
        return np.stack([super()._score(features, logits)] * 2, axis=1)


@dataclass
class IntegerScores(Plain):
    def _score(self, features, logits):
        return np.argmax(features, axis=1)


@dataclass
class NaNScores(Plain):
    def _score(self, features, logits):
        scores = super()._score(features, logits)
        return np.where(features[:, 0] > 3.0, np.nan, scores)  # row by row


@dataclass
class Unseeded(Plain):
    def _fit(self, data):
        super()._fit(data)
        self.mean_ = self.mean_ + np.random.default_rng().normal(size=self.mean_.shape)


@dataclass
class BatchNormalised(Plain):
    def _score(self, features, logits):
        scores = super()._score(features, logits)
        return scores - scores.mean()


@dataclass
class EditsInPlace(Plain):
    def _score(self, features, logits):
        features -= self.mean_
        return -self.scale * np.abs(features).sum(axis=1)


@dataclass
class Untyped(Plain):
    temperature: float = 1.0

    def __post_init__(self):
        pass  # skips Detector's type checks


@dataclass
class RaisesInScore(Plain):
    def _score(self, features, logits):
        raise ValueError(f"cannot score {len(features)} rows")


@dataclass
class BadValidate(Plain):
    def validate(self):
        raise KeyError("oops")
'''


def line_of(text: str, needle: str) -> int:
    """The 1-based line of `text` holding `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def project(tmp_path: Path):
    """A user's project folder: mymethods/ (cosine + its helper) and broken.py."""
    write_method(tmp_path)
    (tmp_path / "broken.py").write_text(BROKEN)
    yield tmp_path
    forget(tmp_path, "broken", "bad_syntax", "raises_on_import", "methods")


def test_a_users_class_builds_fits_and_scores_like_a_builtin(project: Path) -> None:
    detector = from_params("cos", BLOCK, project)
    assert type(detector).__name__ == "CosineToMeans" and detector.name == REFERENCE
    assert detector.params_key == "methods.cos" and detector.hyperparameters() == {"scale": 1.0}
    data = synthetic()
    detector.fit(FitData(fc=data.fcs["plain"], train=data.train, val=data.val))
    rows = data.rows[:40]
    want = cosine_scores(data.train.features, data.train.labels, rows)
    np.testing.assert_allclose(detector.score(rows, None), want, rtol=1e-12)
    # validated on construction, one line naming the key, as a built-in is
    for block, message in [
        ({**BLOCK, "scale": "big"}, "methods.cos.scale: expected a number, got 'big'"),
        ({**BLOCK, "scael": 2.0}, "methods.cos.scael: unknown hyperparameter; "),
        ({**BLOCK, "scale": -1.0}, "methods.cos.scale: must be > 0, got -1.0"),
    ]:
        with pytest.raises(ParamsError, match=re.escape(message)):
            from_params("cos", block, project)


def demo_params(**methods: dict) -> dict:
    """The repository's params with `methods` as the benchmark's only methods."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["benchmark"]["methods"] = list(methods)
    params["benchmark"]["backbones"] = ["lite0"]
    params["methods"].update(methods)
    return params


@catalogue(
    "params",
    "`methods.<key>.method` names a user's class wrongly: a file that does not exist, a "
    "function, a class that is no `oodbench.Detector`, no dataclass or has no `_score`, a "
    "file with a syntax error, a file that raises while importing, a `validate` that raises",
    "the check stage stops before any work with one line naming `methods.<key>.method` and "
    "the file (with its line for a syntax error or an exception) and what to write instead",
)
@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nope/cosine.py:CosineToMeans", r"methods\.cos\.method: file nope/cosine\.py not found"),
        ("broken.py:a_function", r"broken\.py:a_function: is a function, not a class"),
        ("broken.py:NotADetector", r"class NotADetector is not a subclass of oodbench\.Detector"),
        ("broken.py:NoDataclass", r"class NoDataclass is not a dataclass; decorate it"),
        ("broken.py:NoScore", r"class NoScore defines no _score\(self, features, logits\)"),
        ("broken.py:Nope", r"broken\.py defines no 'Nope'; it defines "),
        ("bad_syntax.py:X", r"^bad_syntax\.py:3: syntax error .* methods\.cos\.method"),
        ("raises_on_import.py:X", r"methods\.cos\.method: importing raises_on_import\.py failed: "
         r"raises_on_import\.py:2: ZeroDivisionError"),
        ("broken.py:BadValidate", r"methods\.cos: building broken\.py:BadValidate failed: "
         rf"broken\.py:{line_of(BROKEN, 'oops')}: KeyError: 'oops'"),
    ],
)  # fmt: skip
def test_a_bad_method_reference_stops_the_check_stage_in_one_line(
    project: Path, reference: str, message: str
) -> None:
    (project / "bad_syntax.py").write_text("x = 1\n\ndef f(:\n")
    (project / "raises_on_import.py").write_text("import numpy\nSCALE = 1 / 0\n")
    with pytest.raises(OodbenchError, match=message) as err:
        validate(demo_params(cos={"method": reference}), project)
    assert "\n" not in str(err.value)


def test_unknown_method_names_the_reference_form(project: Path) -> None:
    with pytest.raises(ParamsError, match=r"or your own class as 'path/file\.py:ClassName'"):
        from_params("cos", {"method": "cosine"}, project)


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_builtin_method_keeps_the_contract(name: str) -> None:
    results = check_method(name, None, data=synthetic())
    assert [r.rule for r in results] == list(RULES)
    assert all(r.passed is not False for r in results), [r for r in results if not r.passed]


#: one broken class per rule, and what its line says
BROKEN_RULES = [
    ("NotADetector", "builds", "is not a subclass of oodbench.Detector"),
    ("ScoresBeforeFit", "not_fitted", "returned scores instead of raising NotFittedError"),
    ("FitFails", "fits", f"broken.py:{line_of(BROKEN, 'no train today')}: RuntimeError"),
    ("TwoColumns", "shape", "returned shape (400, 2) for 400 rows"),
    ("IntegerScores", "shape", "returned dtype int64; return floats"),
    ("RaisesInScore", "shape", f"broken.py:{line_of(BROKEN, 'cannot score')}: ValueError"),
    ("NaNScores", "finite", "of 400 scores are NaN/Inf (rows ["),
    ("Unseeded", "deterministic", "a second fit on the same data gives other scores"),
    ("BatchNormalised", "blocks", "scores of row blocks (1, 7, 64, 100, 228 rows) differ"),
    ("EditsInPlace", "inputs", "modified in place: score's features"),
    ("Untyped", "hyperparameters", "temperature='not-a-number' accepted"),
]


@catalogue(
    "arrays",
    "a method breaks the score stage's contract (not a Detector, scores before fit, fit "
    "raises, wrong shape or dtype, NaN, non-deterministic, depends on the other rows of "
    "its block, edits its inputs in place, takes ill-typed hyperparameters)",
    "`oodbench check-method KEY` prints one line per rule, FAIL with why and the user's "
    "file:line where an exception was raised, and exits 1",
)
@pytest.mark.parametrize(("cls", "rule", "text"), BROKEN_RULES, ids=[b[0] for b in BROKEN_RULES])
def test_a_broken_method_fails_its_rule_with_the_right_line(
    project: Path, cls: str, rule: str, text: str
) -> None:
    results = check_method("b", {"method": f"broken.py:{cls}"}, project, synthetic())
    failed = [r for r in results if r.passed is False]
    assert [r.rule for r in failed] == [rule], failed
    assert text in failed[0].detail


def test_the_plain_example_and_the_users_cosine_keep_the_contract(project: Path) -> None:
    for block in ({"method": "broken.py:Plain"}, BLOCK):
        results = check_method("x", block, project, synthetic())
        assert all(r.passed for r in results), results


def test_cli_check_method_prints_a_line_per_rule_and_exits_1_on_failure(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    params = {"methods": {"cos": BLOCK, "nan": {"method": "broken.py:NaNScores"}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    good = runner.invoke(app, ["check-method", "cos"])
    assert good.exit_code == 0, good.output
    lines = good.output.splitlines()
    assert lines[0].startswith(f"check-method cos ({REFERENCE}) on synthetic features: ")
    assert [line.split()[:2] for line in lines[1:-1]] == [["pass", rule] for rule in RULES]
    assert lines[-1] == "cos: every rule passed"
    bad = runner.invoke(app, ["check-method", "nan"])
    assert bad.exit_code == 1
    assert re.search(r"\n  FAIL  finite           \d+ of 400 scores are NaN/Inf", bad.output)
    assert bad.output.endswith("1 rule(s) failed: finite\n")
    direct = runner.invoke(app, ["check-method", "broken.py:Plain"])  # before any params block
    assert direct.exit_code == 0 and "broken: every rule passed" in direct.output


def test_methods_lists_the_users_methods_under_their_keys(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    params = {"methods": {"cos": BLOCK, "gone": {"method": "nope.py:X"}, "knn": {}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = CliRunner().invoke(app, ["methods"]).output
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "knn" in rows and "msp" in rows  # the built-ins stay listed
    assert re.match(r"cos +CosineToMeans +mymethods/cosine\.py +our own +scale=1\.0$", rows["cos"])
    assert "file nope.py not found" in rows["gone"]  # a broken entry says why, the rest list
    assert CliRunner().invoke(app, ["methods", "co"]).output.count("\n") == 2  # header + cos
    help_text = CliRunner().invoke(app, ["methods", "--help"]).output
    assert "path/file.py:ClassName" in help_text and "new-method" in help_text


@catalogue(
    "params",
    "`oodbench new-method NAME` would overwrite a file, or params.yaml has `methods.NAME`",
    "refused in one line naming the file or key; nothing is written",
)
def test_new_method_writes_a_template_that_keeps_the_contract(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    (project / "params.yaml").write_text("# my benchmark\nmethods:\n  msp: {}  # the baseline\n")
    result = CliRunner().invoke(app, ["new-method", "my_cos"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote methods/my_cos.py\nadded to params.yaml:\n")
    assert (project / "methods" / "__init__.py").read_text() == ""
    text = (project / "params.yaml").read_text()
    assert text.startswith("# my benchmark\n") and "# the baseline" in text
    block = yaml.safe_load(text)["methods"]["my_cos"]
    assert block == {"method": "methods/my_cos.py:MyCos", "k": 1, "center": True}
    results = check_method("my_cos", block, project, synthetic())
    assert all(r.passed for r in results), results
    # its grid is what `tune` searches; k larger than the classes is refused at fit
    assert T.search_grid("my_cos", block) == {"k": [1, 2, 3], "center": [True, False]}
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    with pytest.raises(OodbenchError, match=r"methods/my_cos\.py exists; nothing written"):
        new_method("my_cos", root=project)
    (project / "methods" / "my_cos.py").unlink()
    with pytest.raises(OodbenchError, match=r"params\.yaml already has methods\.my_cos"):
        new_method("my_cos", root=project)
    with pytest.raises(ParamsError, match=r"'2cos' is not a valid name"):
        new_method("2cos", root=project)
    del before[project / "methods" / "my_cos.py"]
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


def test_tune_searches_the_users_grid_and_names_a_failing_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    data = synthetic()
    fc, ood = data.fcs["plain"], FeatureSet("far", data.rows[200:], -np.ones(200), np.arange(200))
    split = T.split_rows(data.train, 0.3, seed=0)
    result = T.search("cos", BLOCK, fc, split, ood)
    assert [p for p, _, _ in result.points] == [{"scale": 0.5}, {"scale": 1.0}]
    assert result.points[0][1] == result.points[1][1] == result.current_auroc  # a scale: ties
    assert result.best is None
    line = line_of(BROKEN, "no train today")
    with pytest.raises(
        DataError,
        match=rf"every grid point failed; first: methods\.ff: fit failed "
        rf"in broken\.py:FitFails: broken\.py:{line}: RuntimeError: no train today",
    ):
        T.search("ff", {"method": "broken.py:FitFails"}, fc, split, ood)  # fmt: skip


@catalogue(
    "arrays",
    "a user's own method returns scores of the wrong shape, or NaN/Inf scores",
    "the score stage stops naming the params key, the dataset, the shape expected (or the "
    "count of bad rows of how many, and their manifest indices)",
)
def test_wrong_shape_and_nan_scores_name_method_dataset_and_rows(project: Path) -> None:
    data = synthetic()
    fc = data.fcs["plain"]
    rows = FeatureSet("near", data.rows[:50], -np.ones(50, np.int64), np.arange(50) + 1000)
    bad = np.flatnonzero(rows.features[:, 0] > 3.0)  # where NaNScores returns NaN
    assert 0 < bad.size < 10
    for cls, message in [
        ("TwoColumns", "methods.two: score() returned shape (50, 2) for 50 rows of dataset "
         "'near'; it must return one float per row, shape (50,)"),
        ("NaNScores", f"methods.two produced {bad.size} NaN/Inf scores on dataset 'near' "
         f"({bad.size} of 50 rows; manifest index {(bad + 1000).tolist()})"),
    ]:  # fmt: skip
        detector = from_params("two", {"method": f"broken.py:{cls}"}, project)
        detector.fit(FitData(fc=fc, train=data.train, val=data.val))
        with pytest.raises(DataError, match=re.escape(message)):
            score_set(detector, rows, fc, block_rows=50)


@catalogue(
    "params",
    "a user's own method raises inside `fit` or `score` during `dvc repro`",
    "the score stage exits 2 with one line naming `methods.<key>`, the user's file:line and "
    "the exception; `OODBENCH_DEBUG=1` prints the full traceback too",
)
def test_an_exception_inside_the_users_method_names_its_file_and_line(workspace: Path) -> None:  # noqa: F811
    (workspace / "broken.py").write_text(BROKEN)
    write_method_spec(workspace, "boom", "broken.py:RaisesInScore")
    command = [sys.executable, "-m", "oodbench.cli.stage", "score", "--backbones", BB]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [*command, "--method", "boom"], cwd=workspace, capture_output=True, text=True, env=env
    )
    line = line_of(BROKEN, "cannot score")
    assert result.returncode == 2
    assert result.stderr == (
        "error: methods.boom: score on 'val' failed in broken.py:RaisesInScore: "
        f"broken.py:{line}: ValueError: cannot score 90 rows (OODBENCH_DEBUG=1 prints the "
        "traceback)\n"
    )
    debug = subprocess.run(
        [*command, "--method", "boom"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env={**env, "OODBENCH_DEBUG": "1"},
    )
    assert debug.returncode == 2 and debug.stderr.startswith("Traceback (most recent call last)")
    assert f'broken.py", line {line}, in _score' in debug.stderr
    assert debug.stderr.endswith(result.stderr)


def test_the_stage_module_says_its_kinds_and_options() -> None:
    def stage(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "oodbench.cli.stage", *args]
        return subprocess.run(
            command, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}
        )

    listed = stage("--help")
    assert listed.returncode == 0 and "\n  score        fit one OOD method" in listed.stdout
    wrong = stage("scores")
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: python -m oodbench.cli.stage")
    options = stage("score", "--help")
    assert options.returncode == 0 and "--backbones BACKBONES" in options.stdout
    assert "--method METHOD" in options.stdout


def test_the_installed_packages_score_stage_starts_light(workspace: Path) -> None:  # noqa: F811
    """`python -m oodbench.cli.stage score` (a project made by `oodbench init`) imports no
    torch, typer, rich, matplotlib or pandas, as `python stages/score.py` does not."""
    write_method_spec(workspace, "energy", "energy")
    code = f"""
import runpy, sys
sys.argv = ["stage", "score", "--backbones", "{BB}", "--method", "energy"]
runpy.run_module("oodbench.cli.stage", run_name="__main__")
heavy = ("torch", "timm", "typer", "rich", "matplotlib", "pandas")
print(sorted(m for m in heavy if m in sys.modules))
"""
    result = run_python(code, workspace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (workspace / "scores" / BB / "energy.parquet").is_file()


def installed_project(root: Path) -> dict:
    """A project outside a clone (no stages/), with the user's method among built-ins."""
    params = demo_params(msp={}, vim={"dim": "current"}, cos=BLOCK)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def test_outside_a_clone_stages_run_the_installed_package_and_follow_its_closures(
    project: Path,
) -> None:
    params = installed_project(project)
    assert not layout.is_clone(project) and layout.is_clone(ROOT)
    files = dvcyaml.build(params, project)
    shared, lite0 = files["dvc.yaml"], files["pipelines/lite0/dvc.yaml"]
    cos = files["pipelines/score-cos/dvc.yaml"]["score"]
    assert shared["package"] == {
        "cmd": "python -m oodbench.cli.stage package",
        "always_changed": True,
        "outs": [{"build/package.json": {"cache": False}}],
    }
    user = ["mymethods/__init__.py", "mymethods/common.py", "mymethods/cosine.py"]
    assert shared["check"]["deps"] == ["datalists", "build/package.json", *user]
    assert shared["demo"]["deps"] == ["build/package.json"]
    assert cos["cmd"] == "python -m oodbench.cli.stage score --method cos --backbones lite0"
    assert "build/specs/methods/cos.json" in cos["deps"]
    assert "features/lite0" in cos["deps"]
    # cos requires train: with the model's own head, its features are extracted for cos
    # alone (a probe's training would read them anyway)
    for methods, train in (({"msp": {}, "cos": BLOCK}, True), ({"msp": {}}, False)):
        variant = demo_params(**methods)
        variant["backbones"]["lite0"]["fc"] = "head"
        stages = dvcyaml.build(variant, project)["pipelines/lite0/dvc.yaml"]
        assert ("extract-digits_id_train" in stages) == train, methods
    assert all(s["cmd"].startswith("python -m oodbench.cli.stage ") for s in lite0.values())
    specs = resolve(params, Benchmark.of(params), project)
    code = {p.stem: spec for p, spec in specs.items() if p.parent.name == "code"}
    # the package's files are those of the installed package the stages run, closure by
    # closure as in a clone: msp's score stages hold msp's module and no other method's
    msp = code["score-msp"]
    assert msp["entries"] == ["oodbench/results/scoring.py", "oodbench/methods/msp.py"]
    assert {"oodbench/cli/stage.py", "oodbench/core/entry.py", "oodbench/methods/msp.py"} <= set(
        msp["files"]
    )
    methods = {f for f in msp["files"] if f.startswith("oodbench/methods/") and f.count("/") == 2}
    assert methods == {*METHOD_PLUMBING, "oodbench/methods/msp.py"}
    installed = layout.package_root() / "oodbench" / "methods" / "msp.py"
    assert (
        msp["files"]["oodbench/methods/msp.py"]
        == hashlib.sha256(installed.read_bytes()).hexdigest()
    )
    # the user's method: the score stage's package closure plus the user's own files
    cos = code["score-user-cos"]
    assert cos["entries"] == [
        "oodbench/results/scoring.py",
        "mymethods/cosine.py",
        "mymethods/__init__.py",
    ]
    assert {f for f in cos["files"] if not f.startswith("oodbench/")} == set(user)
    assert set(cos["files"]) - set(user) < set(msp["files"]) - {"oodbench/methods/msp.py"}
    assert code["extract"]["entries"] == ["oodbench/models/extract.py"]
    assert "oodbench/results/scoring.py" not in code["extract"]["files"]
    # the score stage's one spec: its method, the datasets it scores, its backbones and its
    # code digest's sha256, so an edit of the user's files reruns it through that one dependency
    assert specs[Path("build/specs/methods/cos.json")] == {
        "key": "cos",
        "method": REFERENCE,
        "scoring": specs[Path("build/specs/scoring.json")],
        "features": {"lite0": "lite0"},
        "code": hashlib.sha256(dumps(cos).encode()).hexdigest(),
    }


def test_the_stage_dispatcher_runs_the_modules_the_digests_follow() -> None:
    """`python -m oodbench.cli.stage KIND` imports layout.STAGE_MODULES[KIND]: the entry
    its code digest follows outside a clone."""
    import inspect

    from oodbench.cli import stage

    for kind, path in layout.STAGE_MODULES.items():
        module = path.removesuffix(".py").replace("/", ".")
        assert f"from {module} import " in inspect.getsource(getattr(stage, kind)), kind
    assert set(stage.STAGES) == {*layout.STAGE_MODULES, "package", "check", "demo"}


def test_a_syntax_error_in_an_imported_helper_names_its_line(project: Path) -> None:
    params = installed_project(project)
    (project / "mymethods" / "common.py").write_text("def unit_rows(x:\n    return x\n")
    with pytest.raises(ParamsError, match=r"^mymethods/common\.py:1: syntax error .* methods\.cos"):
        dvcyaml.build(params, project)


def test_the_package_digest_follows_every_file_but_bytecode(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "a.py").write_text("x = 1\n")
    first = layout.folder_digest(folder)
    (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"bytecode")
    assert layout.folder_digest(folder) == first
    (folder / "a.py").write_text("x = 2\n")
    assert layout.folder_digest(folder) != first


def test_init_refuses_a_folder_that_holds_a_benchmark(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("benchmark: {}\n")
    with pytest.raises(OodbenchError, match=r"already holds a benchmark \(params\.yaml\)"):
        init_project(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
