"""docs/faults.md is the rendering of the @catalogue rows, so it cannot drift from the tests."""

from __future__ import annotations

from tests import faults_catalogue as fc


def test_docs_faults_md_is_current() -> None:
    expected = fc.render(fc.collect())
    actual = (fc.ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    assert actual == expected, "stale: run `python -m tests.faults_catalogue > docs/faults.md`"


def test_every_row_names_a_test_in_every_area() -> None:
    rows = fc.collect()
    assert {r.area for r in rows} == set(fc.AREAS)
    for row in rows:
        path, name = row.test.split("::")
        assert name.startswith("test_") and f"def {name}(" in (fc.ROOT / path).read_text()
