"""The README summary figure: one heatmap of a metric (methods x OOD sets) per backbone.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no global
backend switch), so it runs headless in CI and inside other programs. Reads only the
metrics JSON, like the leaderboard, and writes the PNG atomically.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path
from oodbench.results.report import LOWER_IS_BETTER, metric_columns


def metric_matrix(
    report: dict, metric: str, methods: list[str] | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """(methods, columns, values), columns in the leaderboard's order (metric_columns);
    `methods` fixes the rows (NaN where this report lacks one), default its own."""
    if not report.get("methods"):
        raise DataError("the metrics file holds no methods; run `dvc repro` first")
    methods = list(report["methods"]) if methods is None else methods
    columns = metric_columns(report)
    values = np.full((len(methods), len(columns)), np.nan)
    for i, method in enumerate(methods):
        for j, column in enumerate(columns):
            value = report["methods"].get(method, {}).get(column, {}).get(metric)
            if value is not None:
                values[i, j] = value
    return methods, columns, values


def write_png(all_metrics: dict[str, dict], metric: str, path: Path, dpi: int = 120) -> None:
    """Heatmaps side by side, one per backbone, on a shared colour scale and shared rows
    (every method any backbone ran; grey where one did not); best per column boxed."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = list(dict.fromkeys(m for r in all_metrics.values() for m in r.get("methods", {})))
    panels = [(bb, *metric_matrix(r, metric, rows)) for bb, r in all_metrics.items()]
    lower = metric in LOWER_IS_BETTER
    cmap = colormaps["viridis_r" if lower else "viridis"].with_extremes(bad="#e6e6e6")
    width = sum(1.2 + 0.9 * len(p[2]) for p in panels) + 1.5
    height = 1.2 + 0.45 * max(len(p[1]) for p in panels)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (backbone, methods, columns, values) in zip(axes, panels, strict=True):
        image = ax.imshow(100 * values, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
        ax.set_yticks(range(len(methods)), methods)
        ax.set_title(backbone)
        with warnings.catch_warnings():  # a column no method filled is all NaN: no best
            warnings.simplefilter("ignore", RuntimeWarning)
            best = np.nanmin(values, axis=0) if lower else np.nanmax(values, axis=0)
        # a column with one method has no "best": box only where methods compete
        best[np.sum(~np.isnan(values), axis=0) < 2] = np.nan
        for (i, j), value in np.ndenumerate(values):
            if np.isnan(value):
                continue
            dark = (value < 0.5) != lower
            ax.text(
                j,
                i,
                f"{100 * value:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
        for i, j in zip(*np.nonzero(values == best), strict=True):  # every tie, as the table
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="red"))
    arrow = "lower is better" if lower else "higher is better"
    fig.colorbar(image, ax=list(axes), label=f"{metric} (%), {arrow}", shrink=0.9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
