"""Short names for the seed backbones: ``backbones.<bb>: {preset: vit_b16}``.

A preset is nothing but defaults for the explicit ``backbones.<bb>`` form, so every
preset can be written out by hand (``timm:``, ``num_classes:``, ``fc:``, ...) and any
key given next to ``preset:`` overrides the preset's. Why presets at all: the seeds'
backbones differ in details that silently change the numbers (which weights tag,
head or no head, the reference input size, the checkpoint layout), and one tested
table keeps them in one place.

``kind: timm`` backbones are timm models (feature = ``forward_head(..., pre_logits=True)``,
the classifier's input); ``kind: open_clip`` backbones are CLIP image towers whose feature
is the pooled image embedding *before* the projection (oodbench/models/clip.py);
``kind: openood`` / ``torchvision`` are OpenOOD v1.5's benchmark networks, which load
OpenOOD's released checkpoints (and torchvision's ResNet-50 weights) unchanged, with
OpenOOD's test preprocessing (openood/evaluation_api/preprocessor.py of OpenOOD v1.5:
``Resize(pre_size)`` + ``CenterCrop(img_size)``, bilinear, the benchmark's mean/std).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodbench.core.errors import ParamsError


@dataclass(frozen=True)
class Preset:
    """Defaults of one seed backbone; see docs/backbones.md for the provenance of each."""

    model: str  # timm ``name.tag``, open_clip model name, OpenOOD network or torchvision name
    kind: str = "timm"  # timm | open_clip | openood | torchvision
    fc: str = "head"  # the default classifier (head when the weights have one)
    num_classes: int | None = None  # 0: a headless model (features only)
    reference_size: int | None = None  # preprocess: reference square size, if not the model's
    converter: str = (
        "auto"  # checkpoint layout: auto | timm | mmpretrain | bit | moco_v3 | efficientnet_pytorch
    )
    preprocess: dict[str, Any] | None = None  # an explicit test transform (preprocess.py)
    note: str = ""

    def spec(self) -> dict[str, Any]:
        """The explicit ``backbones.<bb>`` block this preset stands for."""
        out: dict[str, Any] = {"fc": self.fc, "converter": self.converter}
        out[KIND_KEY[self.kind]] = self.model
        if self.preprocess is not None:
            out["preprocess"] = dict(self.preprocess)
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        if self.reference_size is not None:
            out["reference_size"] = self.reference_size
        return out


#: Preset.kind -> the backbones.<bb> key naming the model
KIND_KEY = {"timm": "timm", "open_clip": "clip", "openood": "openood", "torchvision": "torchvision"}
#: keys that name a model: given next to preset:, they replace the preset's model
MODEL_NAMES = {"timm", "clip", "clip_config", "model", "torchvision", "openood", "imported"}


def openood_preprocess(pre_size: int, img_size: int, mean: list[float], std: list[float]) -> dict:
    """OpenOOD v1.5's TestStandardPreProcessor: Resize(pre_size), CenterCrop(img_size),
    bilinear, Normalize(mean, std)."""
    return {
        "resize": pre_size,
        "crop": img_size,
        "mean": mean,
        "std": std,
        "interpolation": "bilinear",
    }


#: OpenOOD v1.5's default_preprocessing_dict (its evaluation_api/preprocessor.py)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPENOOD_CIFAR10 = openood_preprocess(32, 32, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
OPENOOD_CIFAR100 = openood_preprocess(32, 32, [0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761])
OPENOOD_IMAGENET = openood_preprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)

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
    "openood_cifar10": Preset(
        "resnet18_32x32",
        kind="openood",
        num_classes=10,
        preprocess=OPENOOD_CIFAR10,
        note="OpenOOD v1.5 CIFAR-10 ResNet18_32x32: checkpoint: its released best.ckpt",
    ),
    "openood_cifar100": Preset(
        "resnet18_32x32",
        kind="openood",
        num_classes=100,
        preprocess=OPENOOD_CIFAR100,
        note="OpenOOD v1.5 CIFAR-100 ResNet18_32x32: checkpoint: its released best.ckpt",
    ),
    "openood_imagenet200": Preset(
        "resnet18_224x224",
        kind="openood",
        num_classes=200,
        preprocess=OPENOOD_IMAGENET,
        note="OpenOOD v1.5 ImageNet-200 ResNet18_224x224: checkpoint: its released best.ckpt",
    ),
    "openood_imagenet": Preset(
        "resnet50",
        kind="torchvision",
        num_classes=1000,
        preprocess=OPENOOD_IMAGENET,
        note="OpenOOD v1.5 ImageNet-1k: torchvision's ResNet-50 with its IMAGENET1K_V1 weights "
        "(checkpoint: resnet50-0676ba61.pth)",
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
        if MODEL_NAMES & set(rest):
            for key in KIND_KEY.values():
                base.pop(key, None)
        spec = {**base, **rest}
    return _clip_named_after_config(spec)


def _clip_named_after_config(spec: dict[str, Any]) -> dict[str, Any]:
    config = spec.get("clip_config")
    if not isinstance(config, str) or (MODEL_NAMES - {"clip_config"} | {"features"}) & set(spec):
        return spec  # a model named already, or an error validate_spec reports
    return {**spec, "clip": Path(config).stem}
