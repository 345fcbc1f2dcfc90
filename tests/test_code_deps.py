"""A code edit reruns exactly the stages whose code it touches, proven with DVC itself.

In a built demo workspace, a comment line is appended to every project file in turn;
the check stage (which every code edit reruns) refreshes the code digests, and DVC's
own status must then list exactly the stages whose import closure holds that file,
as docs/code_deps.md (rendered from the same closures) says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oodbench.pipeline.check import check_benchmark
from oodbench.pipeline.codetable import kind, project_files, render_table, stages_of

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "code_deps.md"


def dvc_stale(workspace: Path) -> set[str]:
    """Stage names `dvc status` reports as changed (DVC's Python API: no process start)."""
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        return set(repo.status())


@pytest.mark.slow
def test_a_comment_in_any_file_stales_exactly_the_stages_that_run_it(demo_workspace, monkeypatch):
    ws = demo_workspace
    monkeypatch.chdir(ws)
    assert dvc_stale(ws) == set()
    expected = stages_of(ws)
    for file in project_files(ws):
        path = ws / file
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# an edit that changes no number\n")
            check_benchmark(ws)  # what `dvc repro` runs first: the check stage
            stale = dvc_stale(ws) - {"check"}  # every code edit reruns the check itself
        finally:
            path.write_bytes(original)
        assert stale == expected[file], file
    check_benchmark(ws)
    assert dvc_stale(ws) - {"check"} == set()
    # what the issue asked for in particular
    extract_fc_score = ("extract", "fc", "score")
    for file in (
        "oodbench/results/report.py",
        "oodbench/results/plots.py",
        "oodbench/results/predict.py",
        "oodbench/results/tune.py",
        "oodbench/data/fetch.py",
        "oodbench/data/registry.py",
    ):
        assert not {s for s in expected[file] if kind(s) in extract_fc_score}, file
    for file in ("oodbench/methods/energy.py", "oodbench/methods/react.py"):
        assert not {s for s in expected[file] if kind(s) in ("extract", "fc")}, file
        assert {s for s in expected[file] if kind(s) == "score"} == {
            f"pipelines/lite0/dvc.yaml:score-{Path(file).stem}"
        }


def test_docs_table_is_current():
    assert DOC.read_text().split("<!-- table -->\n", 1)[1] == render_table(ROOT), (
        "docs/code_deps.md is stale: run `python -m oodbench.pipeline.codetable`"
    )
