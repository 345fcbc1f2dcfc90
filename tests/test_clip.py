"""CLIP via open_clip, checked against open_clip's own API on tiny random models of the
same ViT CLIP family: the feature is the pre-projection embedding, the text head follows
MCM's prompt ensemble, mcm scores max softmax(cos(normalize(x P), t_c)) with T=1 and no
x100 scale; a user's architecture file (``clip_config:``) and local weights (open_clip
state dicts, OpenAI's TorchScript archive) load as open_clip loads them.

Tolerances: float32 forward passes of the same weights that differ only in batching or
in the order of the normalisation arithmetic agree to ~1e-6; 1e-5 leaves room for that
and still fails on any real difference (a wrong activation, layer or pixel is >1e-3)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from safetensors.torch import save_file

from oodbench.core.errors import DataError, ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.heads import export as F
from oodbench.heads.clip_text import (
    CLIP_PROJECTION,
    CLIP_TEXT,
    PROMPTS,
    prompt_ensemble,
    zero_shot_logits,
)
from oodbench.methods import FitData, create
from oodbench.models import backbones as B
from oodbench.models import clip as CL
from oodbench.models import presets
from oodbench.pipeline import resolve

TINY = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
#: widths of 64: open_clip.load_openai_model infers heads = width // 64 from the weights
TINY_OPENAI = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}
MCM_PROMPTS = (  # scores.md, written out: the oracle must not import the code under test
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)
TOL = 1e-5


def images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_clip(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(name, pretrained=None).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, torch.nn.Module, str]:
    """Register the tiny config under a name, build it with random weights, save them."""
    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "tiny-clip-test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "tiny-clip-test.json")
    model = random_clip("tiny-clip-test")
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return "tiny-clip-test", model, str(path)


def test_tower_feature_is_the_embedding_before_the_projection(tiny) -> None:
    name, reference, path = tiny
    bb = B.load_backbone("c", {"clip": name, "checkpoint": path, "fc": "plp"})
    x = images(3)
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        projected = reference.encode_image(x)
    assert logits is None and B.model_head(bb.model) is None  # no linear head to check
    assert feats.shape == (3, 48) and bb.info["feature_dim"] == 48
    torch.testing.assert_close(feats @ bb.model.projection, projected, rtol=TOL, atol=TOL)
    cfg = bb.info["data_config"]  # CLIP's own preprocessing in timm mode
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0
    assert cfg["crop_mode"] == "center" and cfg["input_size"] == [3, 32, 32]
    assert cfg["mean"] == list(CL.OPENAI_MEAN) and cfg["std"] == list(CL.OPENAI_STD)


def test_text_embeddings_are_the_normalised_prompt_mean(tiny) -> None:
    name, reference, path = tiny
    tower = B.load_backbone("c", {"clip": name, "checkpoint": path, "fc": "plp"}).model
    names = ["cat", "dog", "tiger cat"]
    got = prompt_ensemble(tower, names, chunk=2)  # chunking must not change the result
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        for c, cls in enumerate(names):
            e = reference.encode_text(tokenizer([p.format(cls) for p in MCM_PROMPTS]))
            e = e / e.norm(dim=-1, keepdim=True)
            t = e.mean(0) / e.mean(0).norm()
            np.testing.assert_allclose(got[c], t.numpy(), rtol=1e-4, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=TOL)
    assert PROMPTS == MCM_PROMPTS


def test_mcm_scores_without_the_logit_scale() -> None:
    rng = np.random.default_rng(0)
    feats, proj = rng.normal(size=(6, 8)), rng.normal(size=(8, 5))
    text = rng.normal(size=(3, 5))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    fc = Linear(np.zeros((3, 8), np.float32), np.zeros(3, np.float32), list("abc"))
    fc.extras = {CLIP_PROJECTION: proj.astype(np.float32), CLIP_TEXT: text.astype(np.float32)}
    mcm = create("mcm").fit(FitData(fc=fc))
    z = feats @ proj
    cos = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ text.T
    expected = (np.exp(cos) / np.exp(cos).sum(1, keepdims=True)).max(1)
    np.testing.assert_allclose(mcm.score(feats, None), expected, rtol=TOL)
    assert expected.max() < 0.6  # T=1 on cosines in [-1, 1]: near-uniform, as in MCM
    np.testing.assert_allclose(zero_shot_logits(feats, proj, text, 100.0), 100 * cos, rtol=1e-4)
    with pytest.raises(DataError, match=r"methods\.mcm needs the CLIP projection"):
        create("mcm").fit(FitData(fc=Linear(fc.weight, fc.bias, list("abc"))))


def test_a_users_architecture_file_is_registered_under_its_stem(tmp_path) -> None:
    """clip_config without clip: the model is named after the file, built from it, and its
    preprocessing (open_clip_config.json form) gives the pixels open_clip's transform gives."""
    config = {
        "model_cfg": TINY,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    path = tmp_path / "tiny-user-arch.json"
    path.write_text(json.dumps(config))
    assert presets.expand("u", {"clip_config": str(path)})["clip"] == "tiny-user-arch"
    expanded = presets.expand("u", {"preset": "clip_b16", "clip_config": str(path)})
    assert expanded["clip"] == "tiny-user-arch" and expanded["fc"] == "plp"
    # the same weights under open_clip's own name for the architecture (a public API)
    (tmp_path / "tiny-user-reference.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tiny-user-reference.json")
    reference = random_clip("tiny-user-reference", seed=3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))

    bb = B.load_backbone("u", {"clip_config": str(path), "checkpoint": str(weights), "fc": "plp"})
    assert bb.info["clip"] == "tiny-user-arch" and "tiny-user-arch" in open_clip.list_models()
    assert bb.info["data_config"]["mean"] == [0.5, 0.5, 0.5]
    photo = Image.fromarray(
        np.random.default_rng(4).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    )  # not square: the shorter side is resized, then the centre cropped
    transform = image_transform_v2(
        PreprocessCfg(size=32, mean=(0.5,) * 3, std=(0.5,) * 3), is_train=False
    )
    torch.testing.assert_close(bb.transform(photo), transform(photo), rtol=0, atol=TOL)
    with torch.no_grad():
        feats = bb.model(transform(photo)[None])
        torch.testing.assert_close(
            feats @ bb.model.projection,
            reference.encode_image(transform(photo)[None]),
            rtol=TOL,
            atol=TOL,
        )


def test_architecture_files_are_checked(tmp_path) -> None:
    bad = tmp_path / "no-vision.json"
    bad.write_text(json.dumps({"embed_dim": 8, "text_cfg": {}}))
    with pytest.raises(ParamsError, match=r"backbones\.c\.clip_config .*vision_cfg is missing"):
        B.validate_spec("c", {"clip_config": str(bad)})
    (tmp_path / "broken.json").write_text("{embed_dim")
    with pytest.raises(ParamsError, match=r"backbones\.c\.clip_config .*not a JSON file"):
        B.validate_spec("c", {"clip_config": str(tmp_path / "broken.json")})
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    # an existing open_clip architecture is never silently replaced: checked where the
    # model is built, since that needs open_clip's registry (the check stage imports
    # neither torch nor open_clip)
    spec = {"clip": "ViT-B-16.openai", "clip_config": str(tmp_path / "tiny.json")}
    B.validate_spec("c", spec)
    with pytest.raises(ParamsError, match=r"already has a different architecture named 'ViT-B-16'"):
        B.load_backbone("c", spec)


def test_state_dicts_load_nested_and_from_data_parallel(tiny, tmp_path) -> None:
    name, reference, _ = tiny
    nested = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}
    torch.save(nested, tmp_path / "ckpt.pt")
    tower = B.load_backbone("c", {"clip": name, "checkpoint": str(tmp_path / "ckpt.pt")}).model
    with torch.no_grad():
        torch.testing.assert_close(
            tower(images(2)) @ tower.projection,
            reference.encode_image(images(2)),
            rtol=TOL,
            atol=TOL,
        )


def test_wrong_weights_are_errors_naming_the_key(tiny, tmp_path) -> None:
    name, reference, _ = tiny
    state = reference.state_dict()
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "text_projection"},
        tmp_path / "a.safetensors",
    )
    with pytest.raises(
        ParamsError, match=r"backbones\.c\.checkpoint .*1 tensors missing.*text_projection"
    ):
        B.load_backbone("c", {"clip": name, "checkpoint": str(tmp_path / "a.safetensors")})
    wide = dict(state, **{"visual.proj": torch.zeros(48, 12)})
    save_file({k: v.contiguous() for k, v in wide.items()}, tmp_path / "b.safetensors")
    with pytest.raises(
        ParamsError, match=r"tensor 'visual\.proj' has shape \(48, 12\).*\(48, 24\)"
    ):
        B.load_backbone("c", {"clip": name, "checkpoint": str(tmp_path / "b.safetensors")})
    torch.save({"epoch": 3}, tmp_path / "c.pt")
    with pytest.raises(
        ParamsError, match=r"backbones\.c\.checkpoint: expected an open_clip state dict"
    ):
        B.load_backbone("c", {"clip": name, "checkpoint": str(tmp_path / "c.pt")})


def openai_archive(model: torch.nn.Module, path: Path) -> None:
    """A TorchScript archive laid out as OpenAI's CLIP .pt files are: the CLIP state dict
    (float16 weights) plus the input_resolution / context_length / vocab_size scalars."""
    root = torch.nn.Module()
    for key, tensor in model.state_dict().items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, tensor.half() if tensor.is_floating_point() else tensor)
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        root.register_buffer(key, torch.tensor(value))
    torch.jit.script(root).save(str(path))


def test_openai_torchscript_archive_loads_as_open_clip_loads_it(tmp_path) -> None:
    """Against open_clip.load_openai_model, which builds OpenAI's architecture from the
    archive with QuickGELU: a tower built with plain GELU would differ by >1e-3."""
    (tmp_path / "tiny-openai.json").write_text(json.dumps(TINY_OPENAI))
    open_clip.add_model_config(tmp_path / "tiny-openai.json")
    archive = tmp_path / "ViT-tiny.pt"
    openai_archive(random_clip("tiny-openai", seed=5), archive)
    assert CL.is_torchscript_archive(archive) and not CL.is_torchscript_archive(
        tmp_path / "tiny-openai.json"
    )
    reference = open_clip.load_openai_model(str(archive), precision="fp32", device="cpu").eval()

    tower = B.load_backbone("o", {"clip": "tiny-openai", "checkpoint": str(archive)}).model
    assert isinstance(
        tower.clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU
    )
    x = images(3, seed=6)
    texts = ["a photo of a cat.", "a photo of many dogs."]
    with torch.no_grad():
        torch.testing.assert_close(
            tower(x) @ tower.projection, reference.encode_image(x), rtol=TOL, atol=TOL
        )
        expected_text = reference.encode_text(open_clip.tokenize(texts)).numpy()
    np.testing.assert_allclose(tower.encode_text(texts), expected_text, rtol=TOL, atol=TOL)


def test_fc_stage_keeps_the_text_head_with_plp_and_probe(tiny, tmp_path, monkeypatch) -> None:
    """The fc stage of a CLIP backbone from its resolved spec: P and the names' prompt
    ensemble are stored whichever probe is trained, so mcm runs on either."""
    name, reference, path = tiny
    monkeypatch.chdir(tmp_path)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    rng = np.random.default_rng(7)
    train = FeatureSet(
        "tr",
        rng.normal(size=(30, 48)).astype(np.float32),
        np.repeat(np.arange(3), 10),
        np.arange(30),
    )
    monkeypatch.setattr(F, "load_features", lambda *args, **kwargs: train)
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        expected = []
        for cls in ("cat", "dog", "bird"):
            e = reference.encode_text(tokenizer([p.format(cls) for p in MCM_PROMPTS]))
            e = e / e.norm(dim=-1, keepdim=True)
            expected.append((e.mean(0) / e.mean(0).norm()).numpy())
    for kind, outputs in (("plp", ["cat", "dog", "bird"]), ("probe", ["0", "1", "2"])):
        block = {"clip": name, "checkpoint": path, "fc": kind, "classes": "names.txt"}
        params = {"backbones": {"c": block}, "probe": {"epochs": 3}}
        spec = resolve.fc_spec(
            params, SimpleNamespace(id_train="tr"), "c", resolve.model_spec(params, "c")
        )
        fc, meta = F.build_classifier("c", spec)
        assert meta["source"] == kind and fc.class_names == outputs and fc.weight.shape == (3, 48)
        np.testing.assert_array_equal(
            fc.extras[CLIP_PROJECTION], reference.visual.proj.detach().numpy()
        )
        np.testing.assert_allclose(fc.extras[CLIP_TEXT], np.stack(expected), rtol=0, atol=TOL)
        assert np.isfinite(create("mcm").fit(FitData(fc=fc)).score(train.features, None)).all()


def test_timm_only_keys_are_refused_on_clip(tiny) -> None:
    name, _, path = tiny
    for key, value in (("num_classes", 10), ("converter", "timm")):
        with pytest.raises(ParamsError, match=rf"backbones\.c\.{key}: applies to timm models"):
            B.validate_spec("c", {"clip": name, "checkpoint": path, key: value})
