"""Stage ``fc``: export the classifier (W, b) every score function works from.

``backbones.<bb>.fc`` (or the preset's default) picks it:
- ``head``: the model's own head (checked at extraction: features @ W^T + b == logits);
- ``probe``: a linear probe on the frozen, labelled ID train features (supervised probing);
- ``plp``: pseudo-label probing, the same probe trained against CLIP's zero-shot argmax
  (x100 logit scale) on every ID train row, labelled or not (CLIP backbones only);
- ``mos``: a MOS group-softmax head (C + G logits) trained on the frozen features, its
  class -> group file named by ``backbones.<bb>.groups``; ID accuracy then maps the
  group logits to classes with ``oodbench.heads.labels.predict_classes``.
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
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.core.threads import limit_blas_threads, reproducible_mkl, size_torch_threads
from oodbench.formats.class_names import classes_sidecar, load_list_classes
from oodbench.formats.classifier import Linear, save_fc
from oodbench.formats.features import FeatureSet, load_features
from oodbench.formats.paths import fc_path, features_dir, manifest_path
from oodbench.formats.specs import fc_spec, read_spec
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT, prompt_ensemble, zero_shot_logits
from oodbench.heads.groups import GROUP_OF_CLASS, group_layout, load_group_config
from oodbench.heads.labels import labels_in_order
from oodbench.heads.probe import ProbeConfig, train_linear_probe

FC_KINDS = ("head", "probe", "plp", "mos")
TRAINED = ("probe", "plp", "mos")
#: CLIP's logit scale for the zero-shot pseudo-labels of PLP (argmax is scale-free; kept
#: for fidelity with the reference and for ties at float32 precision)
PLP_SCALE = 100.0


def export_classifier(backbone: str, features: str | None = None) -> None:
    """Stage ``fc-<bb>``: build ``features/<bb>/fc.safetensors`` from its resolved spec;
    `features`: the backbone whose features a trained head reads (default: `backbone`).

    One BLAS thread, and torch's threads sized to the cores the process may use
    (``OODBENCH_THREADS``; its products run oneMKL in strict CNR mode): the trained
    head is the same bits whatever the thread count (oodbench/core/threads.py)."""
    reproducible_mkl()  # before any torch product of this process (CLIP's text tower too)
    limit_blas_threads()
    spec = read_spec(fc_spec(backbone), f"backbones.{backbone}")
    if spec["fc"] in TRAINED:
        size_torch_threads()
    fc, meta = build_classifier(backbone, spec, features or backbone)
    save_fc(fc_path(backbone), fc, meta)
    print(f"fc {backbone}: {spec['fc']}, {fc.num_classes} outputs x {fc.weight.shape[1]} features")


def build_classifier(
    backbone: str, spec: dict[str, Any], source: str | None = None
) -> tuple[Linear, dict[str, str]]:
    """The classifier and its file metadata for a resolved fc spec (pipeline/resolve.py);
    trained heads read the features of `source` (default: `backbone`)."""
    kind, model, classes = spec["fc"], spec["model"], spec["classes"]
    meta: dict[str, str] = {"source": kind}
    if kind == "head" and model.get("imported") is not None:  # came with the features
        fc, meta["source"] = imported_head(model["imported"]), "imported"
        return name_head(fc, classes, spec["id_train"], backbone), meta
    if kind == "head":
        from oodbench.models.backbones import head_linear

        return name_head(head_linear(backbone, model), classes, spec["id_train"], backbone), meta
    train_name = spec["id_train"]
    train = load_id_train(source or backbone, train_name)
    config = ProbeConfig(**spec["probe"])
    meta |= {"train": train_name, "probe": repr(config)}
    is_clip = model is not None and "clip" in model
    extras, names, ids = (
        clip_extras(backbone, model, classes, train) if is_clip else ({}, None, None)
    )
    if kind == "probe":
        list_names = train.classes.names if train.classes is not None else None
        fc = fit_probe(train.features, train.labels, config, train_name, list_names)
    elif kind == "plp":
        fc = fit_plp(train.features, extras, names, config, backbone)
        fc.class_ids = ids
    else:
        fc = fit_mos(train, classes, spec["groups"], config, backbone)
        meta["group_sizes"] = str(np.bincount(fc.extras[GROUP_OF_CLASS]).tolist())
    fc.extras |= extras
    return fc, meta


def imported_head(folder: str) -> Linear:
    """The classifier in an imported backbone's folder (oodbench/data/imported.py)."""
    from oodbench.data.imported import fc_source, read_fc

    found = fc_source(folder)
    if found is None:
        raise DataError(
            f"{folder}: no classifier file (fc.safetensors, fc.pkl, ...); rerun `dvc repro`"
        )
    return read_fc(Path(found))


def load_id_train(backbone: str, dataset: str) -> FeatureSet:
    """ID train features with the class names of their datalist (None: it names none)."""
    train = load_features(features_dir(backbone, dataset), backbone=backbone, logits=False)
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


def fit_mos(
    train: FeatureSet, classes: str | None, groups_file: str, config: ProbeConfig, backbone: str
) -> Linear:
    """MOS group head on the labelled ID train rows; classes named by ``id_class_names``."""
    from oodbench.heads.mos_head import train_group_head

    if not (train.labels >= 0).any():
        raise DataError(f"dataset {train.dataset!r} has no labels; fc: mos needs labelled data")
    where = f"backbones.{backbone}"
    names, ids = id_class_names(classes, train, where)
    labels = mos_train_labels(train, ids or names, where)
    known = labels >= 0
    groups = load_group_config(groups_file, names)
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
    if classes is None and train.classes is not None:
        return list(train.classes.names), None
    known = train.labels[train.labels >= 0]
    # list labels only count `classes:` names when they are indices into them
    count = int(known.max()) + 1 if known.size and train.classes is None else None
    names = read_class_names(classes, count, where)
    return names, (imagenet_ids() if classes == "imagenet" else None)


def read_class_names(classes: str | None, num_classes: int | None, where: str) -> list[str]:
    """Class names from ``classes:``: a text file (one per line, line i = label i),
    ``imagenet`` (timm's ImageNet-1k names, first synonym), or by default the label
    indices. ``num_classes`` (the ID labels seen, when known) must then be covered."""
    if classes is None:
        if not num_classes:
            raise ParamsError(f"params.yaml: {where}.classes: no ID labels to name; give a file")
        return [str(c) for c in range(num_classes)]
    if classes == "imagenet":
        import timm.data

        info = timm.data.ImageNetInfo()
        names = [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
    else:
        path = Path(classes)
        if not path.is_file():
            raise ParamsError(f"params.yaml: {where}.classes: file {path} not found")
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if num_classes is not None and len(names) < num_classes:
        raise ParamsError(
            f"params.yaml: {where}.classes: {len(names)} names but ID labels reach {num_classes - 1}"
        )
    return names


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
    backbone: str, model: dict[str, Any], classes: str | None, train: FeatureSet
) -> tuple[dict[str, np.ndarray], list[str], list[str] | None]:
    """The CLIP projection and the prompt-ensemble text embeddings of the ID class names
    (``id_class_names``), with the names and their ids."""
    from oodbench.models.backbones import load_backbone

    names, ids = id_class_names(classes, train, f"backbones.{backbone}")
    tower = load_backbone(backbone, model).model
    extras = {
        CLIP_PROJECTION: tower.projection.float().numpy().astype(np.float32),
        CLIP_TEXT: prompt_ensemble(tower, names),
    }
    return extras, names, ids


def name_head(fc: Linear, classes: str | None, id_train: str | None, backbone: str) -> Linear:
    """A model head's class names: ``classes:`` when set (line i names output i), else the
    label set timm knows for the model (ImageNet names and wnids), else, for a head
    fine-tuned on the ID classes, the ID train list's class names when they are as many
    as the head's outputs (labels 0..C-1 = outputs 0..C-1), else the output indices."""
    where = f"backbones.{backbone}.classes"
    if classes is not None:
        names = read_class_names(classes, None, where)
        if len(names) != fc.num_classes:
            raise DataError(
                f"params.yaml: {where}: {len(names)} names for a head of {fc.num_classes} "
                "outputs; give one name per output, in the head's order"
            )
        ids = imagenet_ids() if classes == "imagenet" else None
        return dataclasses.replace(fc, class_names=names, class_ids=ids)
    if fc.class_ids is not None or id_train is None:
        return fc  # timm named it (an ImageNet head), or nothing else to go by
    listed = load_list_classes(classes_sidecar(manifest_path(id_train)))
    if listed is not None and len(listed.names) == fc.num_classes:
        return dataclasses.replace(fc, class_names=list(listed.names))
    return fc


def imagenet_ids() -> list[str]:
    from oodbench.data.classes import imagenet_sorted_wnids

    return imagenet_sorted_wnids()
