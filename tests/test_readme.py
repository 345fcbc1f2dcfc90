"""The README's promises: two quick-start commands, and demo tables equal to the metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from oodbench.results.report import load_all, render

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the quick start has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


@pytest.mark.parametrize("metric", ["auroc", "fpr95"])
def test_demo_tables_are_the_committed_metrics(metric):
    # `oodbench report` shows the backbones in params.yaml's benchmark.backbones order
    backbones = yaml.safe_load((ROOT / "params.yaml").read_text())["benchmark"]["backbones"]
    table = render(load_all(ROOT / "metrics", backbones), metric, "markdown")
    assert table.strip() in README, (
        f"README's {metric} table is stale: paste `oodbench report --metric {metric} --format markdown`"
    )
