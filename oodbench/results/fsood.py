"""Full-spectrum OOD detection (OpenOOD v1.5's ``Evaluator.eval_ood(fsood=True)``).

Covariate-shifted ID sets (``datasets.<ds>.group: csid``: ImageNet-V2/C/R/ES, CIFAR-10-C)
hold the ID classes under another distribution. The standard metrics leave them out;
the full-spectrum ones count them as ID: the ID scores are ID val's followed by every
csid set's, against each OOD set as usual, and the ID accuracy is over all of those
rows. ``metrics/<bb>.json`` keeps them apart from the standard values, under
``fsood`` (``fsood.methods.<m>.<ood set>.<metric>``, ``.near``, ``.far``, ``.mean``,
``fsood.id`` with n and accuracy, ``fsood.csid.<ds>.n``), so nothing existing changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from oodbench.formats.class_names import classes_sidecar, load_list_classes
from oodbench.formats.classifier import Linear, load_fc
from oodbench.formats.features import load_features
from oodbench.formats.paths import fc_path, features_dir, manifest_path
from oodbench.heads.labels import accuracy, check_labels


def as_id(scores: dict[str, np.ndarray], id_val: str, csid: list[str]) -> dict[str, np.ndarray]:
    """One method's scores with the csid sets' rows appended to ID val's (in list order)."""
    merged = np.concatenate([scores[id_val], *(scores[name] for name in csid)])
    return {**{k: v for k, v in scores.items() if k not in csid}, id_val: merged}


def id_accuracy(backbone: str, source: str, sets: list[str]) -> dict[str, Any]:
    """``n`` (rows) and ``accuracy`` (top-1 over every labelled row) of ID val + csid sets,
    as OpenOOD's ``eval_acc('csid')``: correct predictions over all of them."""
    fc: Linear | None = None
    rows = correct = labelled_rows = 0
    for name in sets:
        val = load_features(features_dir(source, name), backbone=source, logits=False)
        val = dataclasses.replace(
            val, classes=load_list_classes(classes_sidecar(manifest_path(name)))
        )
        rows += len(val)
        if not (val.labels >= 0).any():
            continue
        fc = fc or load_fc(fc_path(backbone))
        check_labels(val, fc)
        top1, counted = accuracy(fc, val)
        if top1 is not None:
            correct += round(top1 * counted)
            labelled_rows += counted
    entry: dict[str, Any] = {"n": rows}
    if labelled_rows:
        entry["accuracy"] = correct / labelled_rows
        entry["accuracy_n"] = labelled_rows
    return entry
