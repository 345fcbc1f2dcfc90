"""Where each artifact lives: one place, so stages, the dvc.yaml generator and tests agree."""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PIPELINE = Path("dvc.yaml")
#: one dvc.yaml (and dvc.lock) per backbone: DVC rewrites a stage's lock file after every
#: stage, so small per-backbone files keep that cost flat in the number of backbones
BACKBONE_PIPELINES = Path("pipelines")
DEMO_DATA = Path("data/demo")
DATALISTS = Path("datalists")
MANIFESTS = Path("data/manifests")
FEATURES = Path("features")
SCORES = Path("scores")
METRICS = Path("metrics")
LEADERBOARD = METRICS / "leaderboard.md"
PLOTS = Path("plots")


def backbone_pipeline(backbone: str) -> Path:
    return BACKBONE_PIPELINES / backbone / "dvc.yaml"


def datalist_path(dataset: str) -> Path:
    return DATALISTS / f"{dataset}.txt"


def classes_list_path(dataset: str) -> Path:
    """The optional class names of a datalist's labels (line i = label i)."""
    return DATALISTS / f"{dataset}.classes.txt"


def manifest_path(dataset: str) -> Path:
    return MANIFESTS / f"{dataset}.parquet"


def classes_record_path(dataset: str) -> Path:
    """The class names materialize recorded for the dataset (null without a classes file)."""
    return MANIFESTS / f"{dataset}.classes.json"


def backbone_features(backbone: str) -> Path:
    """Every feature folder of the backbone, its classifier and ViM subspace: what a score
    stage depends on, as one folder (dvc.yaml)."""
    return FEATURES / backbone


def features_dir(backbone: str, dataset: str) -> Path:
    return backbone_features(backbone) / dataset


def fc_path(backbone: str) -> Path:
    return backbone_features(backbone) / "fc.safetensors"


def subspace_path(backbone: str) -> Path:
    """The ViM subspace of the backbone's classifier on ID train (the subspace stage)."""
    return backbone_features(backbone) / "vim_subspace.npz"


def scores_dir(backbone: str) -> Path:
    return SCORES / backbone


def scores_path(backbone: str, method: str) -> Path:
    return scores_dir(backbone) / f"{method}.parquet"


def metrics_path(backbone: str) -> Path:
    """Every metric of the backbone: per method, OOD set and metric (the detail)."""
    return METRICS / f"{backbone}.json"


def summary_dir(backbone: str) -> Path:
    return METRICS / backbone


def summary_path(backbone: str, method: str) -> Path:
    """One method's near/far/mean AUROC and FPR95: what `dvc metrics show` lists, one
    row per file (DVC draws a column per key, so one small file per row keeps it narrow)."""
    return summary_dir(backbone) / f"{method}.json"


def plots_dir(backbone: str) -> Path:
    return PLOTS / backbone
