"""``oodbench report --layout openood``: OpenOOD v1.5's results table, per backbone.

One row per method: near-OOD and far-OOD AUROC (the unweighted means over each group's
sets), FPR@95 near / far and the ID accuracy, in percent, as OpenOOD v1.5's
``Evaluator.eval_ood`` reports them (its ``nearood`` / ``farood`` rows). FPR@95 is
OpenOOD's rule, OOD as the positive class (``fpr95_ood_positive`` in the metrics files;
the default ``fpr95`` is ViM's rule). When the benchmark has covariate-shifted ID sets
(``group: csid``), a second table gives the full-spectrum values (``eval_ood(fsood=True)``:
those sets counted as ID; oodbench/results/fsood.py).
"""

from __future__ import annotations

import csv
import io
from typing import Any

#: (column, group in the metrics file, metric) of OpenOOD v1.5's table
COLUMNS = (
    ("near AUROC", "near", "auroc"),
    ("far AUROC", "far", "auroc"),
    ("near FPR@95", "near", "fpr95_ood_positive"),
    ("far FPR@95", "far", "fpr95_ood_positive"),
)
LOWER_IS_BETTER = {"fpr95_ood_positive"}


def tables(all_metrics: dict[str, dict]) -> list[tuple[str, list[list[Any]]]]:
    """(title, rows) per backbone and setting; a row is method, the four values, ID ACC
    (fractions; None where a group has no set)."""
    out = []
    for backbone, report in all_metrics.items():
        settings = [("OOD", report.get("methods", {}), report.get("id", {}))]
        if "fsood" in report:
            fs = report["fsood"]
            names = ", ".join(fs.get("csid", {}))
            settings.append((f"full-spectrum OOD (ID + {names})", fs["methods"], fs["id"]))
        for setting, methods, ident in settings:
            rows = [
                [method, *(values.get(g, {}).get(m) for _, g, m in COLUMNS), ident.get("accuracy")]
                for method, values in methods.items()
            ]
            out.append((f"{backbone}: {setting}", rows))
    return out


def render(all_metrics: dict[str, dict], fmt: str) -> str:
    """The tables as text (``table``), Markdown or CSV (fractions 0-1, like report's CSV)."""
    header = ["method", *(name for name, _, _ in COLUMNS), "ID ACC"]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["table", *header[:1], *(f"{h} (fraction 0-1)" for h in header[1:])])
        for title, rows in tables(all_metrics):
            for row in rows:
                writer.writerow(
                    [title, row[0], *("" if v is None else f"{v:.6f}" for v in row[1:])]
                )
        return buf.getvalue()
    blocks = []
    for title, rows in tables(all_metrics):
        best = _best(rows)
        lines = [[row[0], *(_cell(v, best[i], fmt) for i, v in enumerate(row[1:]))] for row in rows]
        if fmt == "markdown":
            text = [
                f"**{title}**",
                "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header),
            ]
            text += ["| " + " | ".join(line) + " |" for line in lines]
        else:
            widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
            text = [title, *(_aligned(r, widths) for r in (header, ["-" * w for w in widths]))]
            text += [_aligned(line, widths) for line in lines]
        blocks.append("\n".join(text))
    note = (
        "Percent. AUROC: mean over the group's OOD sets; FPR@95: OpenOOD's rule (OOD "
        "positive, fpr95_ood_positive); ID ACC: top-1 on ID val"
    )
    return "\n\n".join(blocks) + "\n\n" + note + "\n"


def _aligned(row: list[str], widths: list[int]) -> str:
    """A text-table row: the method left-aligned, the numbers right-aligned."""
    cells = [
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(row, widths, strict=True))
    ]
    return "  ".join(cells).rstrip()


def _best(rows: list[list[Any]]) -> list[float | None]:
    """The best value per numeric column (max AUROC and accuracy, min FPR)."""
    kinds = [m for _, _, m in COLUMNS] + ["accuracy"]
    best = []
    for i, kind in enumerate(kinds, start=1):
        values = [r[i] for r in rows if r[i] is not None]
        pick = min if kind in LOWER_IS_BETTER else max
        best.append(pick(values) if values and kind != "accuracy" else None)
    return best


def _cell(value: float | None, best: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    return f"**{text}**" if fmt == "markdown" and value == best else text
