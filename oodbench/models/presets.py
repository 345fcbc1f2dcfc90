"""Short names for the seed backbones: ``backbones.<bb>: {preset: vit_b16}``.

A preset is nothing but defaults for the explicit ``backbones.<bb>`` form, so every
preset can be written out by hand (``timm:``, ``num_classes:``, ``fc:``, ...) and any
key given next to ``preset:`` overrides the preset's. Why presets at all: the seeds'
backbones differ in details that silently change the numbers (which weights tag,
head or no head, the reference input size, the checkpoint layout), and one tested
table keeps them in one place.

``kind: timm`` backbones are timm models (feature = ``forward_head(..., pre_logits=True)``,
the classifier's input); ``kind: open_clip`` backbones are CLIP image towers whose feature
is the pooled image embedding *before* the projection (oodbench/models/clip.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodbench.core.errors import ParamsError


@dataclass(frozen=True)
class Preset:
    """Defaults of one seed backbone; see docs/backbones.md for the provenance of each."""

    model: str  # timm ``name.tag`` or open_clip model name
    kind: str = "timm"  # timm | open_clip
    fc: str = "head"  # the default classifier (head when the weights have one)
    num_classes: int | None = None  # 0: a headless model (features only)
    reference_size: int | None = None  # preprocess: reference square size, if not the model's
    converter: str = (
        "auto"  # checkpoint layout: auto | timm | mmpretrain | bit | moco_v3 | efficientnet_pytorch
    )
    note: str = ""

    def spec(self) -> dict[str, Any]:
        """The explicit ``backbones.<bb>`` block this preset stands for."""
        out: dict[str, Any] = {"fc": self.fc, "converter": self.converter}
        out["clip" if self.kind == "open_clip" else "timm"] = self.model
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        if self.reference_size is not None:
            out["reference_size"] = self.reference_size
        return out


PRESETS: dict[str, Preset] = {
    "vit_b16": Preset(
        "vit_base_patch16_384.augreg_in21k_ft_in1k",
        note="ViM/GEN ViT-B/16: ImageNet-21k pretrained, fine-tuned on 1k at 384",
    ),
    "bit_r101x1": Preset(
        "resnetv2_101x1_bit.goog_in21k_ft_in1k",
        reference_size=480,
        note="BiT-R101x1 (BiT-M, 21k -> 1k); the ViM seed ran BiT at 480x480. For the BiT-S "
        "ImageNet-1k weights load Google's BiT-S-R101x1.npz with checkpoint: (converter bit)",
    ),
    "repvgg_b3": Preset("repvgg_b3.rvgg_in1k", note="RepVGG-B3 (train-time branches)"),
    "resnet50d": Preset("resnet50d.gluon_in1k", note="ResNet50-D (mmcls weights: converter)"),
    "swin_b": Preset("swin_base_patch4_window7_224.ms_in22k_ft_in1k", note="Swin-B 22k -> 1k"),
    "deit_b": Preset("deit_base_patch16_224.fb_in1k", note="DeiT-B (no distillation token)"),
    "beit_b": Preset("beit_base_patch16_224.in22k_ft_in22k_in1k", note="BEiT-B 22k -> 1k"),
    "beitv2_b": Preset("beitv2_base_patch16_224.in1k_ft_in22k_in1k", note="BEiTv2-B"),
    "vit_mae": Preset(
        "vit_base_patch16_224.mae",
        fc="probe",
        num_classes=0,
        note="MAE ViT-B/16 encoder: no head; the class token after the final norm + a probe",
    ),
    "moco_v3": Preset(
        "vit_base_patch16_224",
        fc="probe",
        num_classes=0,
        converter="moco_v3",
        note="MoCo v3 ViT-B/16: checkpoint: the .pth.tar (module.base_encoder.*) into timm",
    ),
    "dinov2_b": Preset(
        "vit_base_patch14_dinov2.lvd142m",
        fc="probe",
        num_classes=0,
        note="DINOv2 ViT-B/14: no head; the class token after the final norm + a probe",
    ),
    "clip_b16": Preset(
        "ViT-B-16.openai", kind="open_clip", fc="plp", note="OpenAI CLIP ViT-B/16 via open_clip"
    ),
    "clip_l14": Preset(
        "ViT-L-14.openai", kind="open_clip", fc="plp", note="OpenAI CLIP ViT-L/14 via open_clip"
    ),
}


def expand(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``{preset: name, **overrides}`` -> the explicit block; other blocks pass through,
    except that a ``clip_config:`` without a model name is ``clip: <the file's stem>``
    (the name open_clip then registers it under, oodbench/models/clip.py)."""
    if not isinstance(spec, dict):
        return spec
    if "preset" in spec:
        name = spec["preset"]
        if name not in PRESETS:
            raise ParamsError(
                f"params.yaml: backbones.{key}.preset: unknown preset {name!r}; "
                f"known: {', '.join(PRESETS)}"
            )
        rest = {k: v for k, v in spec.items() if k != "preset"}
        base = PRESETS[name].spec()
        # an explicit model (a CLIP architecture file included) replaces the preset's model
        if {"timm", "clip", "clip_config"} & set(rest):
            base.pop("timm", None)
            base.pop("clip", None)
        spec = {**base, **rest}
    return _clip_named_after_config(spec)


def _clip_named_after_config(spec: dict[str, Any]) -> dict[str, Any]:
    config = spec.get("clip_config")
    if not isinstance(config, str) or {"clip", "timm", "features"} & set(spec):
        return spec  # a model named already, or an error validate_spec reports
    return {**spec, "clip": Path(config).stem}
