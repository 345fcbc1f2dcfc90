"""dvc.yaml lists, for each stage, every project module its command imports.

DVC does not follow Python imports, so a module missing from `deps` would let a code
change leave stale artifacts behind. cli.py (argument dispatch) and errors.py
(message text) do not change any artifact and are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.params import STAGE_MATRIX, STAGE_PARAMS, load_params, read_params_file

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = {"stages/cli.py", "stages/errors.py", "stages/__init__.py"}
STAGE_MODULE = {
    "demo": "stages/demo.py",
    "materialize": "stages/materialize.py",
    "extract": "stages/extract.py",
    "fc": "stages/fc.py",
    "score": "stages/score.py",
    "evaluate": "stages/evaluate.py",
}


def module_file(name: str) -> str | None:
    path = ROOT / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return str(path.with_suffix(".py").relative_to(ROOT))
    if (path / "__init__.py").is_file():
        return str((path / "__init__.py").relative_to(ROOT))
    return None


def project_imports(path: str) -> set[str]:
    """Project modules imported by `path`, transitively (imports inside functions too)."""
    seen: set[str] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        tree = ast.parse((ROOT / current).read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] == "stages" and (found := module_file(name)):
                    todo.append(found)
    return seen


def covered(module: str, deps: list[str]) -> bool:
    return any(module == dep or module.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGE_MODULE))
def test_stage_deps_list_every_imported_module(stage):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    deps = [d for d in spec["deps"] if d.startswith("stages")]
    missing = sorted(
        m for m in project_imports(STAGE_MODULE[stage]) - EXEMPT if not covered(m, deps)
    )
    assert not missing, f"dvc.yaml stage {stage!r} imports but does not list: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGE_MODULE))
def test_declared_params_match_what_the_code_reads(stage):
    """dvc.yaml's params lists equal params.STAGE_PARAMS, which load_params() enforces."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    declared = [str(p).replace("${item.", "{").replace("}", "}") for p in spec["params"]]
    assert declared == list(STAGE_PARAMS[stage])
    axes = list(spec.get("matrix", {}))
    assert axes == list(STAGE_MATRIX.get(stage, ()))


def test_load_params_under_dvc_returns_only_declared_keys(monkeypatch):
    params = read_params_file(ROOT / "params.yaml")
    backbone, method = params["benchmark"]["backbones"][0], "knn_openood"
    monkeypatch.setenv("DVC_STAGE", f"score@{backbone}-{method}")
    seen = load_params(ROOT / "params.yaml")
    assert set(seen) == {"methods", "benchmark"}
    assert seen["methods"] == {method: params["methods"][method]}
    assert "backbones" not in seen and "methods" not in seen["benchmark"]
