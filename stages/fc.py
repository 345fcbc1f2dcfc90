"""Stage ``fc``: export the classifier (W, b) every score function works from.

``backbones.<bb>.fc`` (or the preset's default) picks it:
- ``head``: the model's own head (checked at extraction: features @ W^T + b == logits);
- ``probe``: a linear probe on the frozen, labelled ID train features (supervised probing);
- ``plp``: pseudo-label probing, the same probe trained against CLIP's zero-shot argmax
  (x100 logit scale) on every ID train row, labelled or not (CLIP backbones only);
- ``mos``: a MOS group-softmax head (C + G logits) trained on the frozen features, its
  class -> group file named by ``backbones.<bb>.groups``; ID accuracy then maps the
  group logits to classes with ``stages.heads.predict_classes``.
For CLIP backbones the file also keeps the image projection and the class-name text
embeddings (``Linear.extras``), so ``mcm`` scores from the same artifact; they depend
on the model and the class names only, hence one per backbone here, not per dataset.

Class names: when the ID train list names its classes (``<ds>.classes.txt``, carried
by ``<manifest>.classes.json``), a probe's outputs take those names, and so do the CLIP
prompts and MOS classes unless ``classes:`` is set; with ``classes:`` set, MOS maps the
train labels to its order by name. ``classes: imagenet`` also records the wnids
(``Linear.class_ids``), as an ImageNet model head does, so lists naming wnids map to it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from stages import params as P
from stages.backbones import check_backbone_files, validate_spec
from stages.errors import DataError
from stages.heads import (
    CLIP_PROJECTION,
    CLIP_TEXT,
    GROUP_OF_CLASS,
    labels_in_order,
    zero_shot_logits,
)
from stages.layout import fc_path, features_dir, manifest_path
from stages.probe import ProbeConfig, train_linear_probe
from stages.store import (
    FeatureSet,
    Linear,
    classes_sidecar,
    load_features,
    load_list_classes,
    save_fc,
)

FC_KINDS = ("head", "probe", "plp", "mos")
#: CLIP's logit scale for the zero-shot pseudo-labels of PLP (argmax is scale-free; kept
#: for fidelity with the reference and for ties at float32 precision)
PLP_SCALE = 100.0


def main(backbone: str) -> None:
    params = P.load_params()
    spec = P.get(params, f"backbones.{backbone}", dict)
    cfg = validate_spec(backbone, spec)
    check_backbone_files(backbone, cfg, configs=True)
    kind = cfg["fc"]
    train_name = P.get(params, "benchmark.id_train", str)
    config = ProbeConfig.from_params(P.get(params, "probe", dict))
    meta: dict[str, str] = {"source": kind}
    if kind == "head":
        from stages.backbones import head_linear

        fc = head_linear(backbone, spec)
    else:
        train = load_id_train(backbone, train_name)
        meta |= {"train": train_name, "probe": repr(config)}
        extras, names, ids = (
            clip_extras(backbone, spec, cfg, train) if cfg["clip"] else ({}, None, None)
        )
        if kind == "probe":
            list_names = train.classes.names if train.classes is not None else None
            fc = fit_probe(train.features, train.labels, config, train_name, list_names)
        elif kind == "plp":
            fc = fit_plp(train.features, extras, names, config, backbone)
            fc.class_ids = ids
        else:
            fc = fit_mos(train, cfg, config, backbone)
            meta["group_sizes"] = str(np.bincount(fc.extras[GROUP_OF_CLASS]).tolist())
        fc.extras |= extras
    save_fc(fc_path(backbone), fc, meta)
    print(f"fc {backbone}: {kind}, {fc.num_classes} outputs x {fc.weight.shape[1]} features")


def load_id_train(backbone: str, dataset: str) -> FeatureSet:
    """ID train features with the class names of their datalist (None: it names none)."""
    train = load_features(features_dir(backbone, dataset), backbone=backbone)
    classes = load_list_classes(classes_sidecar(manifest_path(dataset)))
    return dataclasses.replace(train, classes=classes)


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    config: ProbeConfig,
    dataset: str,
    list_names: list[str] | None = None,
) -> Linear:
    """Train the probe on labelled rows; classes are 0..C-1 and must all be present.

    The outputs are the list's classes, named by its classes file when it has one."""
    known = labels >= 0
    if not known.any():
        raise DataError(f"dataset {dataset!r} has no labels; a probe needs labelled ID train data")
    classes = np.unique(labels[known])
    if not np.array_equal(classes, np.arange(classes.size)):
        raise DataError(
            f"dataset {dataset!r}: probe labels must be 0..C-1 with every class present, got {classes.tolist()}"
        )
    weight, bias = train_linear_probe(features[known], labels[known], classes.size, config)
    names = list_names[: classes.size] if list_names else [str(c) for c in classes]
    return Linear(weight=weight, bias=bias, class_names=names)


def fit_plp(
    features: np.ndarray,
    extras: dict[str, np.ndarray],
    names: list[str] | None,
    config: ProbeConfig,
    backbone: str,
) -> Linear:
    """PLP: the probe recipe against CLIP zero-shot pseudo-labels (labels never used)."""
    if CLIP_TEXT not in extras:
        raise DataError(
            f"backbones.{backbone}.fc: plp needs CLIP zero-shot labels; the backbone is not "
            "a CLIP model (use fc: probe, or a clip: / preset: clip_b16 backbone)"
        )
    text = extras[CLIP_TEXT]
    pseudo = zero_shot_logits(features, extras[CLIP_PROJECTION], text, PLP_SCALE).argmax(axis=1)
    weight, bias = train_linear_probe(features, pseudo, text.shape[0], config)
    names = names or [str(c) for c in range(text.shape[0])]
    return Linear(weight=weight, bias=bias, class_names=list(names))


def fit_mos(train: FeatureSet, cfg: dict[str, Any], config: ProbeConfig, backbone: str) -> Linear:
    """MOS group head on the labelled ID train rows; classes named by ``id_class_names``."""
    from stages.heads import group_layout
    from stages.methods.mos import load_group_config, train_group_head

    if not (train.labels >= 0).any():
        raise DataError(f"dataset {train.dataset!r} has no labels; fc: mos needs labelled data")
    where = f"backbones.{backbone}"
    names, ids = id_class_names(cfg["classes"], train, where)
    labels = mos_train_labels(train, ids or names, where)
    known = labels >= 0
    groups = load_group_config(cfg["groups"], names)
    weight, bias = train_group_head(
        train.features[known],
        labels[known],
        groups,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
    )
    columns, starts = group_layout(groups)

    def by_column(per_class: list[str]) -> list[str]:
        out = [""] * len(bias)
        for g, s in enumerate(starts):
            out[s] = f"others_{g}"
        for c, col in enumerate(columns):
            out[col] = per_class[c]
        return out

    return Linear(
        weight,
        bias,
        by_column(names),
        extras={GROUP_OF_CLASS: groups.astype(np.int64)},
        class_ids=by_column(ids) if ids is not None else None,
    )


def id_class_names(
    classes: str | None, train: FeatureSet, where: str
) -> tuple[list[str], list[str] | None]:
    """(names, ids) of the ID classes, for CLIP prompts and MOS group files: ``classes:``
    when set (``imagenet``: timm's names, the sorted wnids as ids), else the names of the
    ID train list's classes file, else the label indices. ids None: names are the ids."""
    from stages.clip import clip_class_names

    if classes is None and train.classes is not None:
        return list(train.classes.names), None
    known = train.labels[train.labels >= 0]
    # list labels only count `classes:` names when they are indices into them
    count = int(known.max()) + 1 if known.size and train.classes is None else None
    names = clip_class_names(classes, count, where)
    if classes != "imagenet":
        return names, None
    from stages.datasets import imagenet_sorted_wnids

    return names, imagenet_sorted_wnids()


def mos_train_labels(train: FeatureSet, classes: list[str], where: str) -> np.ndarray:
    """ID train labels as indices into the head's `classes`; every labelled row needs one."""
    labels = labels_in_order(train, classes, f"{where}.classes")
    lost = (train.labels >= 0) & (labels < 0)
    if lost.any():
        assert train.classes is not None  # without names the labels are kept as they are
        name = train.classes.names[int(train.labels[np.flatnonzero(lost)[0]])]
        raise DataError(
            f"{train.classes.source}: class {name!r} ({int(lost.sum())} ID train rows) is not "
            f"among the names of {where}.classes; the MOS head must have every class it is "
            "trained on: add it there, or drop its rows from the list"
        )
    return labels


def clip_extras(
    backbone: str, spec: dict[str, Any], cfg: dict[str, Any], train: FeatureSet
) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
    """The CLIP projection and the prompt-ensemble text embeddings of the ID class names
    (``id_class_names``), with the names and their ids."""
    from stages.backbones import load_backbone

    names, ids = id_class_names(cfg["classes"], train, f"backbones.{backbone}")
    tower = load_backbone(backbone, spec).model
    extras = {
        CLIP_PROJECTION: tower.projection.float().numpy().astype(np.float32),
        CLIP_TEXT: tower.text_embeddings(names),
    }
    return extras, names, ids
