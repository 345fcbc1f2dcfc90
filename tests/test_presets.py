"""Every seed preset: its architecture at a shrunk size, random weights, and the contract
features @ W^T + b == logits (the extract stage's head check) or no head at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from oodbench.core.errors import ParamsError
from oodbench.models import backbones as B
from oodbench.models import presets
from oodbench.models import transforms as T
from oodbench.models.extract import check_head

VIT = {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2}
#: the same timm constructor with fewer/smaller layers and a small input, so CPU tests are fast
SHRINK: dict[str, dict[str, Any]] = {
    "vit_b16": VIT,
    "bit_r101x1": {"layers": [1, 1, 1, 1], "num_classes": 10},
    "repvgg_b3": {},
    "resnet50d": {"layers": (1, 1, 1, 1)},
    "swin_b": {
        "img_size": 64,
        "embed_dim": 32,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 2, 4),
        "window_size": 2,
    },
    "deit_b": VIT,
    "beit_b": VIT,
    "beitv2_b": VIT,
    "vit_mae": VIT,
    "moco_v3": VIT,
    "dinov2_b": {**VIT, "img_size": 28, "patch_size": 14},
}
INPUT = {"swin_b": 64, "dinov2_b": 28, "repvgg_b3": 32}


def shrunk_model(name: str) -> torch.nn.Module:
    spec = presets.PRESETS[name].spec()
    kwargs = dict(SHRINK[name])
    if "num_classes" in spec:
        kwargs.setdefault("num_classes", spec["num_classes"])
    torch.manual_seed(0)
    if name == "bit_r101x1":  # the registered BiT constructor pins its layers: same builder
        from timm.models.resnetv2 import _create_resnetv2_bit

        model = _create_resnetv2_bit("resnetv2_101x1_bit", pretrained=False, **kwargs).eval()
    elif name == "repvgg_b3":  # ByobNet with RepVGG-B3's config, one block per stage
        from dataclasses import replace

        from timm.models.byobnet import ByobNet, model_cfgs

        cfg = model_cfgs["repvgg_b3"]
        cfg = replace(cfg, blocks=tuple(replace(b, d=1, c=b.c // 8) for b in cfg.blocks))
        model = ByobNet(cfg, num_classes=10).eval()
    else:
        model = timm.create_model(spec["timm"], pretrained=False, **kwargs).eval()
    with torch.no_grad():  # a zero-initialised head would make the check trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_preset_features_times_head_equal_logits(name: str) -> None:
    model = shrunk_model(name)
    size = INPUT.get(name, SHRINK[name].get("img_size", 64))
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(model, x)
        direct = model(x)
    head = B.model_head(model)
    preset = presets.PRESETS[name]
    assert feats.shape == (3, model.num_features)
    if preset.num_classes == 0:  # MAE, MoCo v3, DINOv2: features only, a probe as fc
        assert head is None and logits is None and preset.fc == "probe"
        torch.testing.assert_close(feats, direct)  # headless forward == the feature
        return
    assert head is not None and logits is not None
    torch.testing.assert_close(logits, direct)  # the full forward, not a re-derivation
    check_head(head, feats.numpy(), logits.numpy(), "fp32", name)
    np.testing.assert_allclose(head.logits(feats.numpy()), logits.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(logits.numpy()).max() > 1e-3  # a real, non-trivial head


def test_every_preset_is_tested_and_names_a_known_model() -> None:
    for name, preset in presets.PRESETS.items():
        if preset.kind == "timm":
            assert name in SHRINK and timm.is_model(preset.model), name
    # OpenOOD's networks: tests/test_own_model.py loads each with the released tensor names
    openood = {"openood_cifar10", "openood_cifar100", "openood_imagenet200", "openood_imagenet"}
    assert set(SHRINK) | {"clip_b16", "clip_l14"} | openood == set(presets.PRESETS)


def test_full_size_vit_preset_keeps_its_reference_size_and_head() -> None:
    """The real ViT-B/16 architecture (random weights): 384 input, 768 features, 1000 classes."""
    spec = presets.expand("vit", {"preset": "vit_b16", "preprocess": "reference"})
    assert spec["timm"] == "vit_base_patch16_384.augreg_in21k_ft_in1k" and spec["fc"] == "head"
    model = timm.create_model(spec["timm"], pretrained=False)
    _, _, desc = T.build_transform(model, "reference")
    assert desc == {
        "input_size": [3, 384, 384],
        "interpolation": "bilinear",
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    assert model.num_features == 768 and B.model_head(model).weight.shape == (1000, 768)


def test_bit_reference_size_is_480_and_square() -> None:
    """ViM's BiT seed: Resize((480, 480)) bilinear, mean=std=0.5, whatever the aspect ratio."""
    spec = B.validate_spec("bit", {"preset": "bit_r101x1", "preprocess": "reference"})
    assert spec["reference_size"] == 480 and spec["timm"].startswith("resnetv2_101x1_bit")
    model = shrunk_model("bit_r101x1")
    pixels, normalize, desc = T.build_transform(model, "reference", spec["reference_size"])
    assert desc["input_size"] == [3, 480, 480] and desc["interpolation"] == "bilinear"
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    x = normalize(pixels(image))
    expected = np.asarray(image.resize((480, 480), Image.BILINEAR), np.float32)
    expected = (expected / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    # timm mode keeps timm's own BiT data config (448), the reference size does not leak in
    full = timm.create_model(spec["timm"], pretrained=False)
    assert T.build_transform(full, "timm", 480)[2]["input_size"] == [3, 448, 448]


def test_preset_keys_are_overridable_and_validated() -> None:
    spec = B.validate_spec("m", {"preset": "vit_mae", "fc": "plp"})
    assert spec["timm"] == "vit_base_patch16_224.mae" and spec["num_classes"] == 0
    assert spec["fc"] == "plp"
    assert B.validate_spec("m", {"preset": "vit_b16", "timm": "resnet10t"})["timm"] == "resnet10t"
    with pytest.raises(ParamsError, match=r"backbones\.m\.preset: unknown preset 'vit_x'"):
        B.validate_spec("m", {"preset": "vit_x"})
    with pytest.raises(ParamsError, match=r"backbones\.m\.converter"):
        B.validate_spec("m", {"preset": "vit_b16", "converter": "caffe"})
    with pytest.raises(ParamsError, match=r"backbones\.m\.groups: fc: mos"):
        B.validate_spec("m", {"preset": "vit_b16", "fc": "mos"})
    with pytest.raises(ParamsError, match=r"exactly one of timm:, clip:"):
        B.validate_spec("m", {"fc": "head"})
