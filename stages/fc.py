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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stages import params as P
from stages.backbones import validate_spec
from stages.errors import DataError
from stages.heads import CLIP_PROJECTION, CLIP_TEXT, GROUP_OF_CLASS, zero_shot_logits
from stages.layout import fc_path, features_dir
from stages.probe import ProbeConfig, train_linear_probe
from stages.store import FeatureSet, Linear, load_features, save_fc

FC_KINDS = ("head", "probe", "plp", "mos")
#: CLIP's logit scale for the zero-shot pseudo-labels of PLP (argmax is scale-free; kept
#: for fidelity with the reference and for ties at float32 precision)
PLP_SCALE = 100.0


def main(backbone: str) -> None:
    params = P.load_params()
    spec = P.get(params, f"backbones.{backbone}", dict)
    cfg = validate_spec(backbone, spec)
    kind = cfg["fc"]
    train_name = P.get(params, "benchmark.id_train", str)
    config = ProbeConfig.from_params(P.get(params, "probe", dict))
    meta: dict[str, str] = {"source": kind}
    if kind == "head":
        from stages.backbones import head_linear

        fc = head_linear(backbone, spec)
    else:
        train = load_features(features_dir(backbone, train_name), backbone=backbone)
        meta |= {"train": train_name, "probe": repr(config)}
        extras, names = clip_extras(backbone, spec, cfg, train) if cfg["clip"] else ({}, None)
        if kind == "probe":
            fc = fit_probe(train.features, train.labels, config, train_name)
        elif kind == "plp":
            fc = fit_plp(train.features, extras, names, config, backbone)
        else:
            fc = fit_mos(train, cfg, config, backbone)
            meta["group_sizes"] = str(np.bincount(fc.extras[GROUP_OF_CLASS]).tolist())
        fc.extras |= extras
    save_fc(fc_path(backbone), fc, meta)
    print(f"fc {backbone}: {kind}, {fc.num_classes} outputs x {fc.weight.shape[1]} features")


def fit_probe(
    features: np.ndarray, labels: np.ndarray, config: ProbeConfig, dataset: str
) -> Linear:
    """Train the probe on labelled rows; classes are 0..C-1 and must all be present."""
    known = labels >= 0
    if not known.any():
        raise DataError(f"dataset {dataset!r} has no labels; a probe needs labelled ID train data")
    classes = np.unique(labels[known])
    if not np.array_equal(classes, np.arange(classes.size)):
        raise DataError(
            f"dataset {dataset!r}: probe labels must be 0..C-1 with every class present, got {classes.tolist()}"
        )
    weight, bias = train_linear_probe(features[known], labels[known], classes.size, config)
    return Linear(weight=weight, bias=bias, class_names=[str(c) for c in classes])


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
    """MOS group head on the labelled ID train rows; class names come from ``classes``."""
    from stages.clip import clip_class_names
    from stages.heads import group_layout
    from stages.methods.mos import load_group_config, train_group_head

    known = train.labels >= 0
    if not known.any():
        raise DataError(f"dataset {train.dataset!r} has no labels; fc: mos needs labelled data")
    num_classes = int(train.labels[known].max()) + 1
    names = clip_class_names(cfg["classes"], num_classes, f"backbones.{backbone}")
    groups = load_group_config(cfg["groups"], names)
    weight, bias = train_group_head(
        train.features[known],
        train.labels[known],
        groups,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
    )
    columns, starts = group_layout(groups)
    out_names = [""] * len(bias)
    for g, s in enumerate(starts):
        out_names[s] = f"others_{g}"
    for c, col in enumerate(columns):
        out_names[col] = names[c]
    return Linear(weight, bias, out_names, extras={GROUP_OF_CLASS: groups.astype(np.int64)})


def clip_extras(
    backbone: str, spec: dict[str, Any], cfg: dict[str, Any], train: FeatureSet
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The CLIP projection and the prompt-ensemble text embeddings of the ID class names
    (``classes``: a file or ``imagenet``; by default the label indices of ID train)."""
    from stages.backbones import load_backbone
    from stages.clip import clip_class_names

    known = train.labels[train.labels >= 0]
    count = int(known.max()) + 1 if known.size else None
    names = clip_class_names(cfg["classes"], count, f"backbones.{backbone}")
    tower = load_backbone(backbone, spec).model
    extras = {
        CLIP_PROJECTION: tower.projection.float().numpy().astype(np.float32),
        CLIP_TEXT: tower.text_embeddings(names),
    }
    return extras, names
