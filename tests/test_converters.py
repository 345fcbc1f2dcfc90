"""Checkpoint converters: random timm models exported in the foreign layouts (literal
mmpretrain / BiT / MoCo v3 key names) load back to bit-identical outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import timm
import torch

from oodbench.core.errors import ParamsError
from oodbench.models import backbones as B
from oodbench.models import converters as C
from oodbench.models import weights as W

VIT = {"img_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 2}


def _random(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _outputs(model: torch.nn.Module, size: int) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(x)


def _to_mm_vit(state: dict) -> dict:
    """timm ViT -> mmpretrain VisionTransformer + VisionTransformerClsHead names."""
    rules = [
        (r"^patch_embed\.proj\.", "backbone.patch_embed.projection."),
        (r"^blocks\.(\d+)\.norm1\.", r"backbone.layers.\1.ln1."),
        (r"^blocks\.(\d+)\.norm2\.", r"backbone.layers.\1.ln2."),
        (r"^blocks\.(\d+)\.attn\.", r"backbone.layers.\1.attn."),
        (r"^blocks\.(\d+)\.mlp\.fc1\.", r"backbone.layers.\1.ffn.layers.0.0."),
        (r"^blocks\.(\d+)\.mlp\.fc2\.", r"backbone.layers.\1.ffn.layers.1."),
        (r"^norm\.", "backbone.ln1."),
        (r"^head\.", "head.layers.head."),
        (r"^(cls_token|pos_embed)$", r"backbone.\1"),
    ]
    return {_sub(k, rules): v for k, v in state.items()}


def _to_mm_resnet_d(state: dict) -> dict:
    """timm resnet50d -> mmpretrain ResNetV1d + LinearClsHead names."""
    rules = [
        (r"^conv1\.0\.", "backbone.stem.0.conv."),
        (r"^conv1\.1\.", "backbone.stem.0.bn."),
        (r"^conv1\.3\.", "backbone.stem.1.conv."),
        (r"^conv1\.4\.", "backbone.stem.1.bn."),
        (r"^conv1\.6\.", "backbone.stem.2.conv."),
        (r"^bn1\.", "backbone.stem.2.bn."),
        (r"^fc\.", "head.fc."),
        (r"^(layer\d)", r"backbone.\1"),
    ]
    return {_sub(k, rules): v for k, v in state.items()}


def _sub(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise AssertionError(f"unmapped key {key}")


def _load(tmp_path, name: str, state: dict, **spec) -> B.Backbone:
    path = tmp_path / "ckpt.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": state}, path)  # mmpretrain nesting
    return B.load_backbone("bb", {"timm": name, "checkpoint": str(path), **spec})


def test_mmpretrain_vit_round_trip(tmp_path) -> None:
    model = _random("vit_base_patch16_224", num_classes=7, **VIT)
    mm = _to_mm_vit(model.state_dict())
    assert "backbone.layers.1.ffn.layers.0.0.weight" in mm and "head.layers.head.bias" in mm
    model_spec = {"num_classes": 7, "converter": "mmpretrain"}
    rebuilt = _load_vit(tmp_path, mm, model_spec)
    torch.testing.assert_close(_outputs(rebuilt, 32), _outputs(model, 32), rtol=0, atol=0)


def _load_vit(tmp_path, state: dict, spec: dict) -> torch.nn.Module:
    """load_backbone cannot shrink a registered ViT, so convert + load as load_backbone does."""
    target = timm.create_model("vit_base_patch16_224", pretrained=False, **VIT, **_nc(spec))
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": state}, path)
    source = C.convert(W.read_state_dict(path), spec["converter"], target.state_dict(), "here")
    target.load_state_dict(W.convert_state_dict(source, target.state_dict(), "here"), strict=True)
    return target.eval()


def _nc(spec: dict) -> dict:
    return {"num_classes": spec["num_classes"]} if "num_classes" in spec else {}


def test_mmpretrain_resnet50d_round_trip_through_load_backbone(tmp_path) -> None:
    model = _random("resnet50d", num_classes=5)
    mm = _to_mm_resnet_d(model.state_dict())
    assert "backbone.stem.2.bn.running_mean" in mm and "backbone.layer1.0.downsample.1.weight" in mm
    bb = _load(tmp_path, "resnet50d", mm, num_classes=5)  # converter auto-detected
    torch.testing.assert_close(_outputs(bb.model, 64), _outputs(model, 64), rtol=0, atol=0)


def test_mmpretrain_rejects_foreign_keys() -> None:
    with pytest.raises(ParamsError, match=r"where: not an mmpretrain.*'encoder.x'"):
        C.convert({"encoder.x": torch.zeros(1)}, "mmpretrain", {}, "where")


def test_moco_v3_pretraining_checkpoint_into_headless_vit(tmp_path) -> None:
    model = _random("vit_base_patch16_224", num_classes=0, **VIT)
    state = {f"module.base_encoder.{k}": v for k, v in model.state_dict().items()}
    state |= {f"module.momentum_encoder.{k}": v + 1 for k, v in model.state_dict().items()}
    state |= {  # the projector MLP and the predictor are not part of the encoder
        "module.base_encoder.head.0.weight": torch.randn(32, 64),
        "module.base_encoder.head.1.running_mean": torch.randn(32),
        "module.predictor.0.weight": torch.randn(16, 32),
    }
    assert C.detect(state) == "moco_v3"
    rebuilt = _load_vit(tmp_path, state, {"num_classes": 0, "converter": "auto"})
    torch.testing.assert_close(_outputs(rebuilt, 32), _outputs(model, 32), rtol=0, atol=0)


def test_moco_v3_linear_eval_checkpoint_keeps_its_head(tmp_path) -> None:
    model = _random("vit_base_patch16_224", num_classes=4, **VIT)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    rebuilt = _load_vit(tmp_path, state, {"num_classes": 4, "converter": "moco_v3"})
    torch.testing.assert_close(_outputs(rebuilt, 32), _outputs(model, 32), rtol=0, atol=0)


def _bit_model(num_classes: int) -> torch.nn.Module:
    from timm.models.resnetv2 import _create_resnetv2_bit

    torch.manual_seed(0)
    model = _create_resnetv2_bit(
        "resnetv2_50x1_bit", pretrained=False, layers=[1, 1, 1, 1], num_classes=num_classes
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _to_bit_npz(model: torch.nn.Module, path) -> None:
    """Google's BiT .npz layout: HWIO kernels, resnet/blockI/unitJJ/{a,b,c}/..."""
    hwio = lambda t: t.detach().numpy().transpose(2, 3, 1, 0)  # noqa: E731
    out = {
        "resnet/root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
        "resnet/group_norm/gamma": model.norm.weight.detach().numpy(),
        "resnet/group_norm/beta": model.norm.bias.detach().numpy(),
        "resnet/head/conv2d/kernel": hwio(model.head.fc.weight),
        "resnet/head/conv2d/bias": model.head.fc.bias.detach().numpy(),
    }
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            unit = f"resnet/block{i + 1}/unit{j + 1:02d}/"
            for letter, conv, norm in zip(
                "abc",
                (block.conv1, block.conv2, block.conv3),
                (block.norm1, block.norm2, block.norm3),
                strict=True,
            ):
                out[f"{unit}{letter}/standardized_conv2d/kernel"] = hwio(conv.weight)
                out[f"{unit}{letter}/group_norm/gamma"] = norm.weight.detach().numpy()
                out[f"{unit}{letter}/group_norm/beta"] = norm.bias.detach().numpy()
            if block.downsample is not None:
                out[f"{unit}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    np.savez(path, **out)


def test_bit_npz_round_trip(tmp_path) -> None:
    model = _bit_model(6)
    _to_bit_npz(model, tmp_path / "BiT-S-R50x1.npz")
    rebuilt = _bit_model(6)
    with torch.no_grad():
        for p in rebuilt.parameters():
            p.zero_()
    C.load_bit_npz(rebuilt, tmp_path / "BiT-S-R50x1.npz", "here")
    torch.testing.assert_close(_outputs(rebuilt, 64), _outputs(model, 64), rtol=0, atol=0)


def test_bit_npz_with_wrong_head_is_an_error(tmp_path) -> None:
    _to_bit_npz(_bit_model(6), tmp_path / "bit.npz")
    with pytest.raises(ParamsError, match=r"here: the model has 9 classes but the .npz head has 6"):
        C.load_bit_npz(_bit_model(9), tmp_path / "bit.npz", "here")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ParamsError, match="not a BiT checkpoint"):
        C.load_bit_npz(_bit_model(6), tmp_path / "other.npz", "here")


def test_bit_npz_through_load_backbone(tmp_path, monkeypatch) -> None:
    """A checkpoint: *.npz goes through the BiT converter (timm's builder shrunk here)."""
    model = _bit_model(6)
    _to_bit_npz(model, tmp_path / "BiT-S-R101x1.npz")
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: _bit_model(k.get("num_classes", 6)))
    spec = {"preset": "bit_r101x1", "checkpoint": str(tmp_path / "BiT-S-R101x1.npz")}
    bb = B.load_backbone("bit", {**spec, "num_classes": 6, "preprocess": "reference"})
    torch.testing.assert_close(_outputs(bb.model, 64), _outputs(model, 64), rtol=0, atol=0)
    assert bb.info["data_config"]["input_size"] == [3, 480, 480]


def _to_efficientnet_pytorch(state: dict) -> dict:
    """timm EfficientNet -> efficientnet_pytorch (lukemelas) names: one flat `_blocks.<k>`
    list, BatchNorms numbered from 0 inside a block that has an expansion conv."""
    blocks = sorted({tuple(map(int, k.split(".")[1:3])) for k in state if k.startswith("blocks.")})
    flat = {f"blocks.{s}.{i}.": f"_blocks.{k}." for k, (s, i) in enumerate(blocks)}
    top = {"conv_stem.": "_conv_stem.", "bn1.": "_bn0.", "conv_head.": "_conv_head.",
           "bn2.": "_bn1.", "classifier.": "_fc."}  # fmt: skip
    expanded = {"conv_pw.": "_expand_conv.", "bn1.": "_bn0.", "conv_dw.": "_depthwise_conv.",
                "bn2.": "_bn1.", "se.conv_reduce.": "_se_reduce.", "se.conv_expand.": "_se_expand.",
                "conv_pwl.": "_project_conv.", "bn3.": "_bn2."}  # fmt: skip
    separable = {"conv_dw.": "_depthwise_conv.", "bn1.": "_bn1.", "se.conv_reduce.": "_se_reduce.",
                 "se.conv_expand.": "_se_expand.", "conv_pw.": "_project_conv.", "bn2.": "_bn2."}  # fmt: skip
    out = {}
    for key, value in state.items():
        block = next((b for b in flat if key.startswith(b)), None)
        if block is None:
            layer = next(t for t in top if key.startswith(t))
            out[top[layer] + key[len(layer) :]] = value
            continue
        rest = key[len(block) :]
        has_expansion = f"{block}conv_pwl.weight" in state
        names = expanded if has_expansion else separable
        layer = next(n for n in names if rest.startswith(n))
        out[flat[block] + names[layer] + rest[len(layer) :]] = value
    return out


@pytest.mark.parametrize("num_classes", [1000, 0])
def test_efficientnet_pytorch_round_trip(tmp_path, num_classes: int) -> None:
    """EfficientNet-B0 (squeeze-excite, both block kinds) in efficientnet_pytorch's names
    loads back by name, auto-detected; a headless model drops the `_fc` head."""
    full = _random("tf_efficientnet_b0", num_classes=1000)  # the checkpoint always has _fc
    state = _to_efficientnet_pytorch(full.state_dict())
    assert "_blocks.0._bn1.bias" in state and "_blocks.1._expand_conv.weight" in state
    assert "_blocks.15._se_expand.bias" in state and "_fc.weight" in state
    assert C.detect(state) == "efficientnet_pytorch"
    bb = _load(tmp_path, "tf_efficientnet_b0", state, num_classes=num_classes)
    for key, value in bb.model.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key
    expected = _outputs(full, 64)
    if num_classes == 0:  # the pooled features, which the full model's head reads
        full.reset_classifier(0)
        expected = _outputs(full, 64)
    torch.testing.assert_close(_outputs(bb.model, 64), expected, rtol=0, atol=0)


def test_efficientnet_pytorch_with_another_block_count_is_an_error() -> None:
    state = _to_efficientnet_pytorch(_random("tf_efficientnet_lite0").state_dict())
    target = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(
        ParamsError, match=r"^here: efficientnet_pytorch checkpoint has 16 blocks .* the model 21"
    ):
        C.convert(state, "auto", target, "here")
