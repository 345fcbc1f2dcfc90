"""Plot data for ``dvc plots``: ROC points and score histograms per method and dataset.

Layout under ``plots/<bb>/`` (one file per method and OOD set, so DVC draws one plot
per pair and ``dvc plots diff`` compares revisions file by file):

- ``roc/<method>/<ds>.csv``: columns ``fpr, tpr`` (ID positive), drawn with DVC's
  ``simple`` template.
- ``hist/<method>/<ds>.csv``: long format, columns ``score, density, sample`` with
  ``sample`` = ``id`` or ``ood``. A stage-level DVC plot takes one ``y`` field, so the
  two distributions are rows of one file and the Vega-Lite template
  ``stages/plot_templates/id_ood_histogram.json`` colours them by ``sample``. (The
  earlier wide layout ``score, id, ood`` could only ever show the OOD column.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from oodbench.formats.atomic import atomic_dir

ROC_GRID = np.linspace(0.0, 1.0, 201)
HIST_BINS = 40
HIST_TEMPLATE = "stages/plot_templates/id_ood_histogram.json"


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> pd.DataFrame:
    """TPR (ID kept) against FPR (OOD accepted) on a fixed FPR grid: small, diffable files.

    The curve is sklearn's ``roc_curve``: a polyline whose vertical segments (several
    points at one fpr) are the steps of untied scores and whose slanted segments are
    ties. At each grid fpr the plotted tpr is the highest point of that polyline: the
    top of a step that lies on the grid (the max tpr among points with that fpr),
    otherwise the straight line between the neighbouring points. ``np.interp`` is not
    used: it requires strictly increasing x, and fpr repeats at every step.
    """
    labels = np.r_[np.ones(id_scores.size), np.zeros(ood_scores.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[id_scores, ood_scores])
    return pd.DataFrame({"fpr": ROC_GRID, "tpr": polyline_max(fpr, tpr, ROC_GRID)})


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


def histogram(id_scores: np.ndarray, ood_scores: np.ndarray) -> pd.DataFrame:
    """Densities of ID and OOD scores over shared bins (robust 0.5%-99.5% range), long format.

    Each bin is given by its left edge plus a closing row at the right edge, so a
    step-after line draws the histogram exactly.
    """
    both = np.r_[id_scores, ood_scores]
    lo, hi = np.quantile(both, [0.005, 0.995])
    if not hi > lo:
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    frames = []
    for sample, values in (("id", id_scores), ("ood", ood_scores)):
        density, _ = np.histogram(np.clip(values, lo, hi), bins=edges, density=True)
        frames.append(
            pd.DataFrame({"score": edges, "density": np.r_[density, density[-1]], "sample": sample})
        )
    return pd.concat(frames, ignore_index=True)


def write_plots(
    out: Path, all_scores: dict[str, dict[str, np.ndarray]], id_val: str, ood: list[str]
) -> None:
    """Write ``roc/<method>/<ds>.csv`` and ``hist/<method>/<ds>.csv`` atomically."""
    with atomic_dir(out) as tmp:
        for method, scores in all_scores.items():
            for name in ood:
                for kind, frame in (
                    ("roc", roc_points(scores[id_val], scores[name])),
                    ("hist", histogram(scores[id_val], scores[name])),
                ):
                    path = tmp / kind / method / f"{name}.csv"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    frame.to_csv(path, index=False, float_format="%.6g")
