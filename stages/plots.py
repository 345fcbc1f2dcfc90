"""Plot data for ``dvc plots``: ROC points and score histograms per method and dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from stages.atomic import atomic_dir

ROC_GRID = np.linspace(0.0, 1.0, 201)
HIST_BINS = 40


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> pd.DataFrame:
    """TPR (ID kept) against FPR (OOD accepted) on a fixed FPR grid: small, diffable files."""
    labels = np.r_[np.ones(id_scores.size), np.zeros(ood_scores.size)]
    fpr, tpr, _ = roc_curve(labels, np.r_[id_scores, ood_scores])
    return pd.DataFrame({"fpr": ROC_GRID, "tpr": np.interp(ROC_GRID, fpr, tpr)})


def histogram(id_scores: np.ndarray, ood_scores: np.ndarray) -> pd.DataFrame:
    """Densities of ID and OOD scores over shared bins (robust 0.5%-99.5% range)."""
    both = np.r_[id_scores, ood_scores]
    lo, hi = np.quantile(both, [0.005, 0.995])
    if not hi > lo:
        lo, hi = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    id_hist, _ = np.histogram(np.clip(id_scores, lo, hi), bins=edges, density=True)
    ood_hist, _ = np.histogram(np.clip(ood_scores, lo, hi), bins=edges, density=True)
    centers = (edges[:-1] + edges[1:]) / 2
    return pd.DataFrame({"score": centers, "id": id_hist, "ood": ood_hist})


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
