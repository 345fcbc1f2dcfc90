"""A code edit reruns exactly the stages whose code it touches, proven with DVC itself.

In a built demo workspace, a comment line is appended to project files in turn; the
check stage (which every code edit reruns) refreshes the code digests, and DVC's own
status must then list exactly the stages whose import closure holds that file, as
docs/code_deps.md (rendered from the same closures) says. `make test` proves one file
per distinct set of stages (files with the same set differ only in their path, which
the closures already cover); `make test-all` proves every file.
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


def representatives(expected: dict[str, set[str]]) -> list[str]:
    """One file per distinct set of stages an edit reruns (the first in path order): the
    files whose edit must rerun the same stages are proven by one of them."""
    chosen: dict[frozenset[str], str] = {}
    for file in sorted(expected):
        chosen.setdefault(frozenset(expected[file]), file)
    return sorted(chosen.values())


def assert_edits_stale_their_stages(ws: Path, files: list[str], expected: dict) -> None:
    """Append a comment to each file in turn: after the check stage refreshes the code
    digests, DVC's own status lists exactly the stages whose code holds the file."""
    assert dvc_stale(ws) == set()
    for file in files:
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


@pytest.mark.slow
def test_a_comment_in_a_file_stales_exactly_the_stages_that_run_it(demo_copy, monkeypatch):
    """One file per distinct stage set (make test); every file: test-all."""
    monkeypatch.chdir(demo_copy)
    expected = stages_of(demo_copy)
    files = representatives(expected)
    # each method of the benchmark reruns a stage set of its own: its file is proven itself
    for method in ("msp", "energy", "react", "maxlogit"):
        assert f"oodbench/methods/{method}.py" in files, method
    assert_edits_stale_their_stages(demo_copy, files, expected)
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
            f"pipelines/score-{Path(file).stem}/dvc.yaml:score"
        }


@pytest.mark.slow
@pytest.mark.exhaustive
def test_a_comment_in_any_file_stales_exactly_the_stages_that_run_it(demo_copy, monkeypatch):
    monkeypatch.chdir(demo_copy)
    expected = stages_of(demo_copy)
    assert_edits_stale_their_stages(demo_copy, project_files(demo_copy), expected)


def test_docs_table_is_current():
    assert DOC.read_text().split("<!-- table -->\n", 1)[1] == render_table(ROOT), (
        "docs/code_deps.md is stale: run `python -m oodbench.pipeline.codetable`"
    )
