"""Plot data for ``dvc plots``: ROC points and score histograms per method and dataset.

Layout under ``plots/<bb>/`` (one file per method and OOD set, so DVC draws one plot
per pair and ``dvc plots diff`` compares revisions file by file):

- ``roc/<method>/<ds>.csv``: columns ``fpr, tpr`` (ID positive), drawn with DVC's
  ``simple`` template.
- ``hist/<method>/<ds>.csv``: long format, columns ``score, density, sample, x_scale``
  with ``sample`` = ``id`` or ``ood``. A stage-level DVC plot takes one ``y`` field, so
  the two distributions are rows of one file and the Vega-Lite template
  ``.dvc/plots/id_ood_histogram.json`` colours them by ``sample``. (The earlier wide
  layout ``score, id, ood`` could only ever show the OOD column.)

``x_scale`` says what the ``score`` axis holds. Scores spanning many orders of magnitude
(kNN distances of unnormalised features reach 1e21) would put every bin but one at the
edge of a linear axis, so the histogram is drawn over an order-preserving transform
instead (``histogram_scale``): ``log10`` of same-signed scores (``-log10(-score)`` for
negative ones, so higher still means more in-distribution), or, when the scores change
sign, the ``rank`` (the fraction of all plotted scores below each one). ROC points need
no transform: they depend on the order of the scores only.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from oodbench.formats.atomic import atomic_dir
from oodbench.results.metrics import roc_curve

ROC_GRID = np.linspace(0.0, 1.0, 201)
HIST_BINS = 40
HIST_TEMPLATE = ".dvc/plots/id_ood_histogram.json"
FLOAT_FORMAT = "%.6g"  # what the plot files hold: six significant digits
#: a table of plot data: column name -> values (numbers, or one string per row)
Columns = dict[str, np.ndarray | list[str]]
#: a linear axis stays readable while the bulk of the scores spans more than 1/1000 of it
MAX_DECADES = 3.0
ROBUST = (0.005, 0.995)  # the quantiles a histogram's axis spans (outliers are clipped)


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> Columns:
    """TPR (ID kept) against FPR (OOD accepted) on a fixed FPR grid: small, diffable files.

    The curve is sklearn's ``roc_curve`` (oodbench/results/metrics.py): a polyline whose vertical segments (several
    points at one fpr) are the steps of untied scores and whose slanted segments are
    ties. At each grid fpr the plotted tpr is the highest point of that polyline: the
    top of a step that lies on the grid (the max tpr among points with that fpr),
    otherwise the straight line between the neighbouring points. ``np.interp`` is not
    used: it requires strictly increasing x, and fpr repeats at every step.
    """
    labels = np.r_[np.ones(id_scores.size), np.zeros(ood_scores.size)]
    fpr, tpr = roc_curve(labels, np.r_[id_scores, ood_scores])
    return {"fpr": ROC_GRID, "tpr": polyline_max(fpr, tpr, ROC_GRID)}


def polyline_max(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Highest tpr of the ROC polyline (fpr non-decreasing, starting at 0) at each grid x."""
    # last point with fpr <= x: since tpr never decreases along the curve, it holds the
    # max tpr of its fpr, i.e. the top of a step there
    left = np.searchsorted(fpr, grid, side="right") - 1
    right = np.minimum(left + 1, fpr.size - 1)  # the first point with fpr > x (its step bottom)
    x0, x1, y0, y1 = fpr[left], fpr[right], tpr[left], tpr[right]
    span = np.where(x1 > x0, x1 - x0, 1.0)  # x1 == x0 only at the last point: x == fpr[-1]
    slope = np.where(x1 > x0, (y1 - y0) / span, 0.0)
    return np.where(x0 == grid, y0, y0 + slope * (grid - x0))


def histogram_scale(scores: np.ndarray) -> str:
    """The x axis a histogram of `scores` is readable on: ``linear``, ``log10`` (every
    score > 0), ``-log10(-score)`` (every score < 0) or ``rank`` (mixed signs).

    A transform is used when the robust range (``ROBUST`` quantiles) spans more than
    ``MAX_DECADES`` orders of magnitude: same-signed scores whose largest magnitude is
    over 1000 times the smallest, or mixed-sign scores whose range is over 1000 times
    their interquartile range (the middle half of the data would fill < 0.1% of a linear
    axis). Each transform keeps the order, so higher still means more in-distribution."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return "linear"
    lo, q25, q75, hi = np.quantile(finite, [ROBUST[0], 0.25, 0.75, ROBUST[1]])
    limit = 10.0**MAX_DECADES
    if lo > 0 or hi < 0:
        small, large = sorted((abs(lo), abs(hi)))
        if large > limit * small:
            return "log10" if lo > 0 else "-log10(-score)"
        return "linear"
    if q75 > q25 and hi - lo > limit * (q75 - q25):
        return "rank"
    return "linear"


def transform_scores(values: np.ndarray, pooled: np.ndarray, scale: str) -> np.ndarray:
    """`values` on the axis `scale` names (``histogram_scale``); `pooled` holds every
    plotted score (ID and OOD), the reference of ``rank``. Before a log, outliers are
    clipped to the robust range (whose ends have the sign the log needs), as the
    histogram clips them anyway."""
    if scale in ("log10", "-log10(-score)"):
        values = np.clip(values, *np.quantile(pooled, ROBUST))
    if scale == "log10":
        return np.log10(values)
    if scale == "-log10(-score)":
        return -np.log10(-values)
    if scale == "rank":  # fraction of pooled scores strictly below, plus half the ties
        ordered = np.sort(pooled)
        below = np.searchsorted(ordered, values, side="left")
        upto = np.searchsorted(ordered, values, side="right")
        return (below + upto) / (2.0 * ordered.size)
    return values


def histogram(id_scores: np.ndarray, ood_scores: np.ndarray) -> Columns:
    """Densities of ID and OOD scores over shared bins (robust 0.5%-99.5% range), long format.

    Each bin is given by its left edge plus a closing row at the right edge, so a
    step-after line draws the histogram exactly. The ``x_scale`` column names the axis
    (``histogram_scale``): ``score`` holds the transformed values when it is not linear.
    """
    both = np.r_[id_scores, ood_scores].astype(np.float64)
    scale = histogram_scale(both)
    axis = {"id": transform_scores(np.asarray(id_scores, np.float64), both, scale)}
    axis["ood"] = transform_scores(np.asarray(ood_scores, np.float64), both, scale)
    pooled = np.r_[axis["id"], axis["ood"]]
    lo, hi = np.quantile(pooled, ROBUST)
    if not hi > lo:
        lo, hi = float(pooled.min()) - 0.5, float(pooled.max()) + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    densities = []
    for sample in ("id", "ood"):
        density, _ = np.histogram(np.clip(axis[sample], lo, hi), bins=edges, density=True)
        densities.append(np.r_[density, density[-1]])
    rows = edges.size
    return {
        "score": np.r_[edges, edges],
        "density": np.concatenate(densities),
        "sample": ["id"] * rows + ["ood"] * rows,
        "x_scale": [scale] * (2 * rows),
    }


def csv_bytes(columns: Columns) -> bytes:
    """The columns as CSV: a header row, floats as ``FLOAT_FORMAT``, NaN as an empty
    field (the file pandas' ``to_csv(index=False, float_format=...)`` writes, without
    importing pandas at every evaluate start)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(column_text(c) for c in columns.values()), strict=True))
    return text.getvalue().encode("utf-8")


def kept_file(previous: Path, path: Path, data: bytes) -> bool:
    """Hard-link `previous` to `path` when it holds exactly `data`: the new folder then
    keeps the file (its inode and mtime), so DVC, which knows it by those, need not hash
    it again, nor store it in its cache (an experiment on one method of the demo changes
    6 of a backbone's 150 plot files). `previous` a symlink (DVC's symlink cache type)
    or a disk without hard links: False, and the caller writes the file."""
    if previous.is_symlink() or not previous.is_file() or previous.read_bytes() != data:
        return False
    try:
        os.link(previous, path)
    except OSError:
        return False
    return True


def column_text(values: np.ndarray | list[str]) -> list[str]:
    """A column's fields: strings as they are, numbers as ``FLOAT_FORMAT``, NaN empty.
    Formatted from Python floats (``tolist``), the same digits as from numpy scalars at
    a fraction of the cost: evaluate writes some 100,000 fields on the demo."""
    if isinstance(values, list):
        return values
    floats = np.asarray(values, dtype=np.float64).tolist()
    return ["" if v != v else FLOAT_FORMAT % v for v in floats]  # v != v: NaN


def write_plots(
    out: Path, all_scores: dict[str, dict[str, np.ndarray]], id_val: str, ood: list[str]
) -> None:
    """Write ``roc/<method>/<ds>.csv`` and ``hist/<method>/<ds>.csv`` atomically (a new
    folder swapped in for the old one), keeping the files whose bytes are unchanged."""
    with atomic_dir(out) as tmp:
        for method, scores in all_scores.items():
            for name in ood:
                for kind, columns in (
                    ("roc", roc_points(scores[id_val], scores[name])),
                    ("hist", histogram(scores[id_val], scores[name])),
                ):
                    relative = Path(kind, method, f"{name}.csv")
                    path, data = tmp / relative, csv_bytes(columns)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not kept_file(out / relative, path, data):
                        path.write_bytes(data)
