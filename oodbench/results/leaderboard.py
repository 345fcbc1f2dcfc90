"""``metrics/leaderboard.md``, every backbone's AUROC and FPR95, which the ``evaluate``
stage writes after the backbones' metrics.

The same tables as ``oodbench report --format markdown`` (AUROC, then FPR95 by the
ViM rule), so a reader of the repository sees the benchmark's results without running
anything, and a change to them shows in the diff of one file.
"""

from __future__ import annotations

from oodbench.formats.atomic import write_text_if_changed
from oodbench.formats.paths import LEADERBOARD, METRICS
from oodbench.results.report import counts_note, load_all, render

SECTIONS = (
    ("auroc", "AUROC (%), ID positive, higher is better"),
    ("fpr95", "FPR95 (%, ViM rule: threshold at the 95% ID recall), lower is better"),
)


def leaderboard_text(backbones: list[str]) -> str:
    all_metrics = load_all(METRICS, backbones)
    parts = [
        "# Leaderboard\n",
        "Written by the `evaluate` stage (`oodbench report`); best per column in bold.\n",
    ]
    for metric, title in SECTIONS:
        parts.append(f"\n## {title}\n\n" + render(all_metrics, metric, "markdown"))
    parts.append("\n" + counts_note(all_metrics).replace("\n", "  \n"))
    skipped = [
        f"- {backbone}: {method} skipped: {reason}"
        for backbone, report in all_metrics.items()
        for method, reason in report.get("skipped", {}).items()
    ]
    if skipped:
        parts.append("\nSkipped methods:\n\n" + "\n".join(skipped) + "\n")
    return "".join(parts)


def write_leaderboard(backbones: list[str]) -> None:
    write_text_if_changed(LEADERBOARD, leaderboard_text(backbones))
