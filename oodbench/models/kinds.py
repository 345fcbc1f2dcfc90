"""Backbone kinds beyond timm and open_clip, validated without importing torch.

A ``backbones.<bb>`` block names its model with exactly one kind key:

- ``timm: <name>`` / ``clip: <name>``: timm and open_clip models (oodbench/models/backbones.py);
- ``model: path/file.py:factory``: the user's own nn.Module, built by a class or function
  in a file of the project (called with ``num_classes`` when that key is set). Its
  feature and classifier follow OpenOOD's protocol, timm's, or, with ``head: <attribute>``,
  are the input and the weights of its final nn.Linear (oodbench/models/usermodel.py);
- ``torchvision: <name>``: a torchvision classification model with a local torchvision
  state dict (``checkpoint:``); its final nn.Linear is the head (or ``head:``);
- ``openood: resnet18_32x32 | resnet18_224x224``: OpenOOD v1.5's networks, whose released
  checkpoints load unchanged (oodbench/models/openood_nets.py);
- ``imported: <folder>``: no model at all: features extracted elsewhere, one file per
  dataset plus the classifier, brought in by the ``import`` stages (oodbench/data/imported.py).

The check stage runs this (it must stay light: no torch, no user code imported); the
file a ``model:`` names must exist, but it is imported only where the model is built
(the extract and fc stages), so its errors surface there, naming the key and the file.
"""

from __future__ import annotations

import re
from typing import Any

from oodbench.core.errors import ParamsError
from oodbench.core.usercode import CodeRef

#: the keys that name a backbone's model, one per kind
KIND_KEYS = ("timm", "clip", "model", "torchvision", "openood", "imported")
#: kinds whose model is built here (not by timm or open_clip) and needs a preprocess mapping
BUILT_KINDS = ("model", "torchvision", "openood")
#: oodbench/models/openood_nets.py NETWORKS (tests/test_own_model.py checks they agree)
OPENOOD_NETWORKS = ("resnet18_32x32", "resnet18_224x224")
#: torchvision 0.29's classification models (``torchvision.models.list_models(module=
#: torchvision.models)``), kept as a list so that the check stage needs no torchvision;
#: tests/test_own_model.py checks it against the installed torchvision
TORCHVISION_MODELS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny",
    "densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_b0",
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf",
    "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18",
    "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s",
    "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
    "wide_resnet50_2",
)  # fmt: skip
_ATTRIBUTE_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
#: keys that describe a model run on images: meaningless for imported features
IMAGE_KEYS = ("checkpoint", "converter", "preprocess", "reference_size", "num_classes", "head")


def kind_of(cfg: dict[str, Any]) -> str | None:
    """The kind key a validated block sets (None: none, or an error for check_kind)."""
    found = [key for key in KIND_KEYS if cfg.get(key) is not None]
    return found[0] if len(found) == 1 else None


def check_kind(where: str, cfg: dict[str, Any]) -> str:
    """Exactly one kind key; the new kinds' own rules. Returns the kind."""
    found = [key for key in KIND_KEYS if cfg.get(key) is not None]
    if len(found) != 1:
        keys = ", ".join(f"{k}:" for k in KIND_KEYS)
        extra = f" (found {', '.join(found)})" if found else ""
        raise ParamsError(f"params.yaml: {where}: set exactly one of {keys} or preset:{extra}")
    kind = found[0]
    if cfg.get("head") is not None and kind not in ("model", "torchvision"):
        raise ParamsError(
            f"params.yaml: {where}.head: names the final nn.Linear of a model: or "
            f"torchvision: backbone; this one is {kind}:"
        )
    if kind in BUILT_KINDS:
        check_built(where, kind, cfg)
    elif kind == "imported":
        check_imported(where, cfg)
    return kind


def check_built(where: str, kind: str, cfg: dict[str, Any]) -> None:
    """A model: / torchvision: / openood: block: its name, a preprocess mapping, its head."""
    value = cfg[kind]
    if kind == "model":
        CodeRef.parse(value, f"{where}.model")
    elif kind == "torchvision" and value not in TORCHVISION_MODELS:
        raise ParamsError(
            f"params.yaml: {where}.torchvision: unknown torchvision classification model "
            f"{value!r} (see `python -c 'import torchvision.models as m; "
            "print(m.list_models(module=m))'`)"
        )
    elif kind == "openood" and value not in OPENOOD_NETWORKS:
        raise ParamsError(
            f"params.yaml: {where}.openood: unknown OpenOOD network {value!r}; known: "
            f"{', '.join(OPENOOD_NETWORKS)} (or write it yourself: model: path/file.py:Class)"
        )
    if not isinstance(cfg.get("preprocess"), dict):
        raise ParamsError(
            f"params.yaml: {where}.preprocess: a {kind}: backbone states its test transform, "
            "e.g. {resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, "
            "0.225]} (docs/backbones.md); timm's config and the reference mode apply to timm "
            "and open_clip models"
        )
    head = cfg.get("head")
    if head is not None and not (isinstance(head, str) and _ATTRIBUTE_RE.fullmatch(head)):
        raise ParamsError(
            f"params.yaml: {where}.head must be the attribute name of the model's final "
            f"nn.Linear (e.g. fc or classifier.1), got {head!r}"
        )
    if kind != "model" and cfg.get("checkpoint") is None:
        raise ParamsError(
            f"params.yaml: {where}.checkpoint: a {kind}: backbone loads a local state dict; "
            "name the file (docs/backbones.md)"
        )
    for key, unused in (("converter", "auto"), ("reference_size", None), ("clip_config", None)):
        if cfg.get(key) != unused:
            raise ParamsError(
                f"params.yaml: {where}.{key}: applies to timm and open_clip models, not to "
                f"{kind}: (its checkpoint is matched by tensor name as it is)"
            )


def check_imported(where: str, cfg: dict[str, Any]) -> None:
    """An ``imported: <folder>`` block names the folder and nothing about images."""
    folder = cfg["imported"]
    if not isinstance(folder, str) or not folder:
        raise ParamsError(
            f"params.yaml: {where}.imported must be a folder holding the imported features "
            f"and the classifier, got {folder!r}"
        )
    for key in (*IMAGE_KEYS, "clip_config"):
        if cfg.get(key) not in (None, "auto"):
            raise ParamsError(
                f"params.yaml: {where}.{key}: an imported backbone runs no model on images; "
                "remove the key"
            )
