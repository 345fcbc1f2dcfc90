"""CLIP via open_clip (a tiny random config of the same ViT CLIP family): the feature is the
pre-projection embedding, text embeddings follow MCM's prompt ensemble, and mcm scores
max softmax(cos(normalize(x P), t_c)) with T=1 and no x100 scale."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from oodbench.core.errors import DataError
from oodbench.formats.classifier import Linear
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT, zero_shot_logits
from oodbench.methods import FitData, create
from oodbench.models import backbones as B
from oodbench.models import clip as CL

TINY = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[str, torch.nn.Module, str]:
    """Register the tiny config under a name, build it with random weights, save them."""
    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "tiny-clip-test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / "tiny-clip-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None).eval()
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return "tiny-clip-test", model, str(path)


def test_tower_feature_is_the_embedding_before_the_projection(tiny) -> None:
    name, reference, path = tiny
    bb = B.load_backbone("c", {"clip": name, "checkpoint": path, "fc": "plp"})
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        projected = reference.encode_image(x)
    assert logits is None and B.model_head(bb.model) is None  # no linear head to check
    assert feats.shape == (3, 48) and bb.info["feature_dim"] == 48
    torch.testing.assert_close(feats @ bb.model.projection, projected, rtol=1e-5, atol=1e-5)
    cfg = bb.info["data_config"]  # CLIP's own preprocessing in timm mode
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0
    assert cfg["mean"] == list(CL.OPENAI_MEAN) and cfg["input_size"] == [3, 32, 32]


def test_text_embeddings_are_the_normalised_prompt_mean(tiny) -> None:
    name, reference, path = tiny
    tower = B.load_backbone("c", {"clip": name, "checkpoint": path, "fc": "plp"}).model
    names = ["cat", "dog", "tiger cat"]
    got = tower.text_embeddings(names, chunk=2)  # chunking must not change the result
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        for c, cls in enumerate(names):
            e = reference.encode_text(tokenizer([p.format(cls) for p in CL.PROMPTS]))
            e = e / e.norm(dim=-1, keepdim=True)
            t = e.mean(0) / e.mean(0).norm()
            np.testing.assert_allclose(got[c], t.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert CL.PROMPTS[1] == "a blurry photo of a {}." and len(CL.PROMPTS) == 5


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
    np.testing.assert_allclose(mcm.score(feats, None), expected, rtol=1e-5)
    assert expected.max() < 0.6  # T=1 on cosines in [-1, 1]: near-uniform, as in MCM
    np.testing.assert_allclose(zero_shot_logits(feats, proj, text, 100.0), 100 * cos, rtol=1e-4)
    with pytest.raises(DataError, match=r"methods\.mcm needs the CLIP projection"):
        create("mcm").fit(FitData(fc=Linear(fc.weight, fc.bias, list("abc"))))
