"""``oodbench compare A B``: two backbones' metrics on one row per metric, with the change.

``A`` and ``B`` are ``[REV:]BACKBONE``: a backbone's ``metrics/<bb>.json`` in the workspace,
or at REV, a git commit, branch or tag or a DVC experiment name, read through DVC's API
(``dvc.api.open``), never by checking the revision out. ``dvc metrics diff`` lines values
up by file and key, so it compares two revisions of the *same* backbone key; this lines
up two different backbones (or one backbone across experiments) method by method, OOD
set by OOD set, metric by metric, in the leaderboard's formats.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from oodbench.core.errors import DataError
from oodbench.formats.paths import metrics_path
from oodbench.results.metrics import METRIC_NAMES
from oodbench.results.report import LOWER_IS_BETTER, metric_columns


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a backbone, in the workspace (rev None) or at a revision."""

    backbone: str
    rev: str | None = None

    @classmethod
    def parse(cls, text: str) -> Side:
        rev, _, backbone = text.rpartition(":")
        if not backbone:
            raise DataError(f"{text!r}: expected BACKBONE or REV:BACKBONE")
        return cls(backbone=backbone, rev=rev or None)

    @property
    def label(self) -> str:
        return f"{self.rev}:{self.backbone}" if self.rev else self.backbone


def load_side(side: Side, repo: str | None = None) -> dict[str, Any]:
    """The metrics file of `side` (from the workspace, or DVC's view of a revision)."""
    path = metrics_path(side.backbone).as_posix()
    try:
        if side.rev is None:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        import dvc.api

        with dvc.api.open(path, repo=repo, rev=side.rev, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as err:
        where = f"revision {side.rev!r}" if side.rev else "the workspace"
        raise DataError(
            f"{path}: not found in {where}; run `dvc repro` for backbone {side.backbone!r} "
            "there (or check the name: `dvc exp show`, `git log`)"
        ) from err
    except json.JSONDecodeError as err:
        raise DataError(f"{side.label}: {path} is not valid JSON ({err})") from err
    except Exception as err:  # DVC and git raise their own types for unknown revisions
        if type(err).__name__ in ("RevError", "UnknownRevError", "SCMError"):
            raise DataError(f"{side.rev!r}: unknown revision or experiment ({err})") from err
        raise


def rows(a: dict[str, Any], b: dict[str, Any], metrics: list[str]) -> list[list[Any]]:
    """[method, column, metric, value A, value B, B - A] for every method and column either
    side has (a value only one side has is paired with None)."""
    methods = list(dict.fromkeys([*a.get("methods", {}), *b.get("methods", {})]))
    columns = list(dict.fromkeys([*metric_columns(a), *metric_columns(b)]))
    out = []
    for method in methods:
        for column in columns:
            for metric in metrics:
                va = a.get("methods", {}).get(method, {}).get(column, {}).get(metric)
                vb = b.get("methods", {}).get(method, {}).get(column, {}).get(metric)
                if va is None and vb is None:
                    continue
                delta = vb - va if va is not None and vb is not None else None
                out.append([method, column, metric, va, vb, delta])
    return out


def render(table: list[list[Any]], a: Side, b: Side, fmt: str) -> str:
    """Percentages in the table and Markdown formats; fractions in CSV (said in its header)."""
    header = ["method", "ood set", "metric", a.label, b.label, "change"]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*header[:3], f"{a.label} (fraction)", f"{b.label} (fraction)", "change"])
        for row in table:
            writer.writerow([*row[:3], *("" if v is None else f"{v:.6f}" for v in row[3:])])
        return buf.getvalue()

    def pct(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"

    def better(row: list[Any]) -> str:
        if row[5] is None or row[5] == 0:
            return ""
        lower = row[2] in LOWER_IS_BETTER
        return f" ({b.label if (row[5] < 0) == lower else a.label} better)"

    lines = [[*r[:3], pct(r[3]), pct(r[4]), pct(r[5], signed=True) + better(r)] for r in table]
    if fmt == "markdown":
        text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        text += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(text) + "\n"
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    body = [fmt_row.format(*header), *(fmt_row.format(*cells) for cells in lines)]
    return "\n".join(line.rstrip() for line in body) + "\n"


def compare(
    a: str, b: str, metrics: list[str] | None = None, fmt: str = "table", repo: str | None = None
) -> str:
    """The comparison of `a` and `b` (``[REV:]BACKBONE``) as text."""
    metrics = metrics or list(METRIC_NAMES)
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise DataError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}")
    side_a, side_b = Side.parse(a), Side.parse(b)
    table = rows(load_side(side_a, repo), load_side(side_b, repo), metrics)
    if not table:
        raise DataError(f"{side_a.label} and {side_b.label} share no method and OOD set")
    return render(table, side_a, side_b, fmt)
