"""Stage ``evaluate``: for every backbone, metrics per method and OOD set, their means,
ID accuracy and plots; then the leaderboard of them all (results/leaderboard.py).

With ``benchmark.one_class: K`` the ID val scores are split by label first (class K
is ID, every other class an OOD set ``class_<j>``, group near; see oodbench/data/oneclass.py).
Sets of group ``csid`` (covariate-shifted ID) are no OOD sets: they count as ID in the
full-spectrum metrics under ``fsood`` only (oodbench/results/fsood.py).

``metrics/<bb>.json`` keeps every leaf a scalar under stable keys
(``methods.<m>.<dataset>.<metric>``, ``methods.<m>.mean.<metric>``, ``.near``, ``.far``)
so that ``dvc metrics diff --targets metrics/<bb>.json`` compares two revisions method
by method. ``metrics/<bb>/<m>.json`` holds the summary of each method (near, far and
mean AUROC and FPR95): those are the files dvc.yaml declares as metrics, so that
``dvc metrics show`` prints one row per backbone and method, six columns wide, instead
of one row per backbone with every number a column. Values are raw fractions; rounding
is for display only.

ID accuracy compares predictions with the val labels mapped to the classifier's class
order (oodbench/heads/labels.py ``labels_in_head_order``) when the val list names its classes;
rows whose class the classifier lacks are left out, and ``id.accuracy_n`` says over how
many rows it was computed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core.errors import DataError
from oodbench.core.threads import limit_blas_threads
from oodbench.data.oneclass import split_id_val
from oodbench.formats.atomic import write_text_if_changed
from oodbench.formats.class_names import classes_sidecar, load_list_classes
from oodbench.formats.classifier import load_fc
from oodbench.formats.features import load_features
from oodbench.formats.manifest import count_not_ok
from oodbench.formats.paths import (
    fc_path,
    features_dir,
    manifest_path,
    metrics_path,
    plots_dir,
    scores_path,
    summary_dir,
    summary_path,
)
from oodbench.formats.scores import load_scores, skipped_reason
from oodbench.formats.specs import evaluate_spec, read_spec
from oodbench.heads.labels import accuracy, check_labels
from oodbench.results import evaluated, fsood
from oodbench.results.leaderboard import write_leaderboard
from oodbench.results.metrics import METRIC_NAMES, all_metrics
from oodbench.results.plots import write_plots

GROUPS = ("near", "far")
#: what a method's summary file holds: these metrics of these OOD-set means
SUMMARY_METRICS = ("auroc", "fpr95")
SUMMARY_SETS = ("near", "far", "mean")


def mean_metrics(per_set: list[dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over OOD sets, metric by metric."""
    return {m: float(np.mean([r[m] for r in per_set])) for m in METRIC_NAMES}


def method_metrics(
    scores: dict[str, np.ndarray], id_val: str, ood: list[str], groups: dict[str, str]
) -> dict[str, Any]:
    """Metrics of one method: per OOD set, the mean, and the near/far means."""
    if id_val not in scores:
        raise DataError(f"scores hold no rows for the ID val set {id_val!r}; rerun `dvc repro`")
    result: dict[str, Any] = {}
    for name in ood:
        if name not in scores:
            raise DataError(f"scores hold no rows for OOD set {name!r}; rerun `dvc repro`")
        result[name] = all_metrics(scores[id_val], scores[name])
    result["mean"] = mean_metrics([result[n] for n in ood])
    for group in GROUPS:
        members = [n for n in ood if groups.get(n) == group]
        if members:
            result[group] = mean_metrics([result[n] for n in members])
    return result


def method_summary(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{metric: {near, far, mean}}`` of one method's metrics (a group without OOD sets
    has no entry), for ``metrics/<bb>/<m>.json``."""
    return {
        metric: {s: metrics[s][metric] for s in SUMMARY_SETS if s in metrics}
        for metric in SUMMARY_METRICS
    }


def write_summaries(backbone: str, methods: list[str], report: dict[str, Any]) -> None:
    """One summary file per method of the backbone; a skipped method's is empty (`dvc
    metrics show` prints its row as dashes). Files of methods no longer evaluated are
    removed: the folder, which dvc.yaml declares as metrics, holds what this run wrote."""
    for method in methods:
        block = report["methods"].get(method)
        summary = method_summary(block) if block is not None else {}
        write_text_if_changed(summary_path(backbone, method), json.dumps(summary, indent=2) + "\n")
    for stale in summary_dir(backbone).glob("*.json"):
        if stale.stem not in methods:
            stale.unlink()


def id_accuracy(backbone: str, id_val: str, source: str | None = None) -> dict[str, Any]:
    """The ``id`` block's size and top-1 entries: ``n``, and when labels are known
    (-1 = unknown) ``accuracy`` (argmax z, or for a MOS group head the best within-group
    class: oodbench.heads.labels.predict_classes); with named classes also ``accuracy_n``."""
    source = source or backbone
    val = load_features(features_dir(source, id_val), backbone=source, logits=False)
    classes = load_list_classes(classes_sidecar(manifest_path(id_val)))
    val = dataclasses.replace(val, classes=classes)
    entry: dict[str, Any] = {"n": len(val)}
    labelled = int((val.labels >= 0).sum())
    if not labelled:
        return entry
    fc = load_fc(fc_path(backbone))
    check_labels(val, fc)
    top1, rows = accuracy(fc, val)
    entry["accuracy"] = top1
    if classes is not None:
        entry["accuracy_n"] = rows
        if rows < labelled:
            print(
                f"evaluate {backbone}: {labelled - rows} of {labelled} labelled {id_val} rows "
                f"have a class ({classes.source}) the classifier lacks; accuracy is over the "
                f"other {rows}",
                file=sys.stderr,
            )
    return entry


def one_class_scores(
    backbone: str, id_val: str, methods: list[str], one_class: int, source: str | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Scores with ID val split by label (class K = ID, ``class_<j>`` = OOD); the new sets."""
    import pandas as pd

    source = source or backbone
    val = load_features(features_dir(source, id_val), backbone=source, logits=False)
    out = {}
    for method in methods:
        path = scores_path(backbone, method)
        rest = load_scores(path)  # a DataError naming the file if it is missing
        split = split_id_val(pd.read_parquet(path), id_val, val.index, val.labels, one_class)
        out[method] = {**split, **{k: v for k, v in rest.items() if k != id_val}}
    extra = [k for k in out[methods[0]] if k.startswith("class_")] if methods else []
    return out, extra


def n_skipped(dataset: str) -> int | None:
    """Images of `dataset` that materialize recorded as unreadable (``skip_bad``) and
    extraction therefore left out: a metric computed on fewer images says so. None when
    there is no manifest (features imported with ``oodbench import-pkl``)."""
    path = Path("data/manifests") / f"{dataset}.parquet"
    if not path.is_file():
        return None
    return count_not_ok(path)


def evaluate_benchmark(backbones: list[str]) -> None:
    """Stage ``evaluate``: every backbone's metrics and plots, then the leaderboard.

    One stage for all backbones, not one each: an experiment on one method reruns the
    score stage of each backbone that runs it and then this stage once, where a stage
    per backbone and a leaderboard after them cost DVC its per-stage bookkeeping (an
    index rebuild and a lock-file rewrite, about 0.5 s) for each (README, iteration). A
    backbone whose inputs and outputs are as after its last evaluation is left as it is
    (results/evaluated.py), so one backbone's change re-evaluates that backbone only."""
    limit_blas_threads()  # the ID accuracy's logits: the same bits for any thread count
    for backbone in backbones:
        spec = read_spec(evaluate_spec(backbone), f"backbones.{backbone}")
        inputs = evaluated.inputs_digest(backbone, spec)
        if evaluated.unchanged(backbone, inputs):
            print(f"evaluate {backbone}: inputs and outputs as after its last evaluation, kept")
            continue
        evaluate_backbone(backbone, spec)
        evaluated.record(backbone, inputs)
    write_leaderboard(backbones)


def evaluate_backbone(backbone: str, spec: dict[str, Any]) -> None:
    """``metrics/<bb>.json``, ``metrics/<bb>/`` and ``plots/<bb>/`` from the scores, the
    ID accuracy from the ID val features of the backbone its evaluate spec (`spec`) names
    (``features:``)."""
    source = spec["features"]
    id_val, ood, groups = spec["id_val"], list(spec["ood"]), dict(spec["groups"])
    csid = [name for name in ood if groups.get(name) == "csid"]
    ood = [name for name in ood if name not in csid]
    reasons = {m: skipped_reason(scores_path(backbone, m)) for m in spec["methods"]}
    methods = [m for m in spec["methods"] if reasons[m] is None]
    report: dict[str, Any] = {
        "id": id_accuracy(backbone, id_val, source),
        "ood": {},
        "methods": {},
    }
    one_class = spec["one_class"]
    all_scores = {m: load_scores(scores_path(backbone, m)) for m in methods}
    if one_class is not None:
        all_scores, extra = one_class_scores(backbone, id_val, methods, one_class, source)
        ood, groups = extra + ood, {**dict.fromkeys(extra, "near"), **groups}
        report["id"].update(one_class=one_class, n=int(all_scores[methods[0]][id_val].size))
    for method in methods:
        report["methods"][method] = method_metrics(all_scores[method], id_val, ood, groups)
    first = all_scores[methods[0]] if methods else {}
    report["ood"] = {name: {"n": int(first[name].size)} for name in ood if name in first}
    if csid and one_class is None:
        report["fsood"] = {
            "id": fsood.id_accuracy(backbone, source, [id_val, *csid]),
            "csid": {name: {"n": int(first[name].size)} for name in csid if name in first},
            "methods": {
                m: method_metrics(fsood.as_id(all_scores[m], id_val, csid), id_val, ood, groups)
                for m in methods
            },
        }
    for name, entry in [(id_val, report["id"]), *report["ood"].items()]:
        skipped = n_skipped(name) if not name.startswith("class_") else None
        if skipped is not None:
            entry["n_skipped"] = skipped
    # strings, kept apart from the scalar metric leaves that `dvc metrics` compares
    report["skipped"] = {m: reason for m, reason in reasons.items() if reason is not None}
    write_text_if_changed(metrics_path(backbone), json.dumps(report, indent=2) + "\n")
    write_summaries(backbone, list(spec["methods"]), report)
    write_plots(plots_dir(backbone), all_scores, id_val, ood)
    print(
        f"evaluate {backbone}: {len(methods)} methods x {len(ood)} OOD sets -> "
        f"{metrics_path(backbone)}"
        + (f" ({len(report['skipped'])} skipped)" if report["skipped"] else "")
    )
