"""Bad names on the command line or in params.yaml: one line on stderr, exit 2, no output."""

from __future__ import annotations

import pytest

from tests.conftest import run, stage_command
from tests.faults_catalogue import catalogue

pytestmark = pytest.mark.slow


def snapshot(workspace) -> dict[str, float]:
    return {
        str(p.relative_to(workspace)): p.stat().st_mtime_ns
        for p in workspace.rglob("*")
        if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts
    }


@catalogue(
    "params",
    "the command line or params.yaml names an unknown backbone, method or dataset",
    "one `error:` line naming the key (`backbones.nosuch`, ...), exit 2, no file touched",
)
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["extract", "--backbone", "nosuch", "--dataset", "textures"], "backbones.nosuch"),
        (["score", "--method", "nosuch", "--backbones", "lite0"], "methods.nosuch"),
        (["materialize", "--dataset", "nosuch"], "datasets.nosuch"),
        (["fc", "--backbone", "nosuch"], "backbones.nosuch"),
    ],
)
def test_unknown_names(demo_workspace, args, expected):
    before = snapshot(demo_workspace)
    result = run(stage_command(*args), demo_workspace, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (
        result.stderr
    )
    assert snapshot(demo_workspace) == before


@catalogue(
    "params",
    "a method block has an unknown (misspelt) hyperparameter",
    "the check stage stops with one `error:` line `methods.energy.temprature: unknown hyperparameter`, exit 2, no file touched",
)
def test_unknown_hyperparameter_names_the_key(demo_copy):
    params = demo_copy / "params.yaml"
    params.write_text(
        params.read_text().replace(
            "  energy:\n    temperature: 1.0", "  energy:\n    temprature: 1.0"
        )
    )
    before = snapshot(demo_copy)
    result = run(stage_command("check"), demo_copy, check=False)
    assert result.returncode == 2
    assert "methods.energy.temprature: unknown hyperparameter" in result.stderr
    assert snapshot(demo_copy) == before
