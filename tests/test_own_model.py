"""Backbones oodbench builds itself: a model in the user's own file (OpenOOD's, timm's or
the plain-Linear protocol), torchvision models, OpenOOD v1.5's networks and presets
(released tensor names, OpenOOD's test transform), the ``preprocess:`` mapping, and
each bad input of the issue as one line naming the key or file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.core.errors import DataError, ParamsError
from oodbench.models import backbones as B
from oodbench.models import kinds, presets
from oodbench.models.extract import check_head
from oodbench.models.transforms import build_transform
from tests.faults_catalogue import catalogue
from tests.openood_project import CIFAR10, write_model_code

USER_PACKAGES = ("mynets", "netfile")


@pytest.fixture
def project(tmp_path: Path, monkeypatch):
    """An empty project folder as the working directory (stages run in the project root);
    the user's modules are forgotten afterwards, so each test imports its own files."""
    monkeypatch.chdir(tmp_path)
    saved = list(sys.path)
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in USER_PACKAGES]:
        del sys.modules[name]
    sys.path[:] = saved


def spec(model: str, **extra) -> dict:
    return {"model": model, "preprocess": CIFAR10, **extra}


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random non-trivial weights, BatchNorm statistics included, in eval mode."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif tensor.dtype.is_floating_point:
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model.eval()


# ---- the user's own model file: three protocols ------------------------------------


def test_an_openood_protocol_model_from_the_users_file(project: Path) -> None:
    """mynets/resnet.py:ResNet18_32x32 (OpenOOD's protocol, its blocks imported relatively):
    the feature is forward(x, return_feature=True)[1], the classifier get_fc()."""
    write_model_code(project)
    bb = B.load_backbone("own", spec("mynets/resnet.py:ResNet18_32x32", num_classes=7))
    wrapped = bb.model
    inner = wrapped.model
    assert wrapped.protocol == "openood" and wrapped.head_description == "get_fc()"
    assert (bb.info["feature_dim"], bb.info["num_classes"]) == (512, 7)
    x = images()
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(wrapped, x)
        want_logits, want_feats = inner(x, return_feature=True)
    torch.testing.assert_close(feats, want_feats, rtol=0, atol=0)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=0)
    head = B.model_head(wrapped)
    np.testing.assert_array_equal(head.weight, inner.fc.weight.detach().numpy())
    check_head(head, feats.numpy(), logits.numpy(), "fp32", "own", wrapped.head_description)


TIMM_STYLE = """
import torch.nn as nn


class TimmStyle(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        return self.conv(x).relu()

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.head
"""

PLAIN = """
import torch.nn as nn


def make(num_classes=5):
    '''A factory function: any nn.Module whose last layer is an nn.Linear.'''
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, num_classes),
    )


CONFIG = {"depth": 3}


def broken(num_classes=5):
    layers = num_classes // 0
    return layers


def not_a_module(num_classes=5):
    return {"layers": num_classes}


class NoProtocol(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.body = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.body(x.mean((2, 3)))


class WrongFc(NoProtocol):
    '''OpenOOD's protocol, but get_fc() is not the classifier forward() uses.'''

    def forward(self, x, return_feature=False):
        feature = x.mean((2, 3))
        logits = self.body(feature)
        return (logits, feature) if return_feature else logits

    def get_fc(self):
        return 2 * self.body.weight.detach().numpy(), self.body.bias.detach().numpy()


class WrongFcShape(WrongFc):
    def get_fc(self):
        return self.body.weight.detach().numpy()[:, :2], self.body.bias.detach().numpy()
"""


def write_file(project: Path, name: str, text: str) -> None:
    (project / "netfile").mkdir(exist_ok=True)
    (project / "netfile" / "__init__.py").write_text("")
    (project / "netfile" / name).write_text(text)


def test_a_timm_protocol_model_and_a_headless_one(project: Path) -> None:
    write_file(project, "timmstyle.py", TIMM_STYLE)
    bb = B.load_backbone("t", spec("netfile/timmstyle.py:TimmStyle", num_classes=4))
    model = bb.model.model
    assert bb.model.protocol == "timm" and bb.info["feature_dim"] == 8
    x = images()
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        torch.testing.assert_close(feats, model.forward_features(x).mean((2, 3)))
        torch.testing.assert_close(logits, model(x))
    check_head(B.model_head(bb.model), feats.numpy(), logits.numpy(), "fp32", "t")
    headless = B.load_backbone("h", spec("netfile/timmstyle.py:TimmStyle", num_classes=0))
    assert B.model_head(headless.model) is None and headless.info["num_classes"] == 0
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(headless.model, x)
    assert logits is None and feats.shape == (3, 8)


def test_a_plain_model_with_its_final_linear_named(project: Path) -> None:
    """head: 6 (the Sequential's last layer): the feature is that nn.Linear's input."""
    write_file(project, "plain.py", PLAIN)
    bb = B.load_backbone("p", spec("netfile/plain.py:make", num_classes=5, head="6"))
    model = bb.model.model
    x = images()
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        torch.testing.assert_close(feats, model[:6](x))
        torch.testing.assert_close(logits, model(x))
    assert bb.model.protocol == "plain" and bb.info["feature_dim"] == 12
    check_head(B.model_head(bb.model), feats.numpy(), logits.numpy(), "fp32", "p")
    # naming a Linear that is not the last: refused when the model is built
    with pytest.raises(ParamsError, match=r"backbones\.p\.head: the nn\.Linear '4' has 12 outputs"):
        B.load_backbone("p", spec("netfile/plain.py:make", head="4"))


@catalogue(
    "params",
    "a backbone's `model: path/file.py:Name` names nothing in the file, something not callable, a factory that raises or returns no nn.Module, a model that follows none of the protocols, or a `head:` that is not its final nn.Linear",
    "one line naming `backbones.<bb>.model` (or `.head`) and the file, with `file.py:LINE` of an exception, the methods a protocol lacks, or the model's linear layers; raised where the model is built (extract, fc), the check stage imports no user code",
)
@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            spec("netfile/plain.py:Nope"),
            r"params\.yaml: backbones\.u\.model: netfile/plain\.py defines no 'Nope'; it "
            r"defines .*NoProtocol",
        ),
        (spec("netfile/gone.py:Net"), r"backbones\.u\.model: file netfile/gone\.py not found"),
        (
            spec("netfile/plain.py:CONFIG"),
            r"backbones\.u\.model: CONFIG in netfile/plain\.py is a dict, not callable",
        ),
        (
            spec("netfile/plain.py:broken"),
            r"backbones\.u\.model: calling netfile/plain\.py:broken\(\) failed: "
            r"netfile/plain\.py:\d+: ZeroDivisionError",
        ),
        (
            spec("netfile/plain.py:not_a_module"),
            r"returned a dict, not a torch\.nn\.Module",
        ),
        (
            spec("netfile/plain.py:NoProtocol"),
            r"backbones\.u\.model: NoProtocol follows none of the protocols: OpenOOD's lacks "
            r"forward\(x, return_feature=\.\.\.\), get_fc\(\); timm's lacks forward_features"
            r"\(x\), forward_head\(x, pre_logits=\.\.\.\); or name its final nn\.Linear with "
            r"backbones\.u\.head",
        ),
        (
            spec("netfile/plain.py:WrongFcShape"),
            r"backbones\.u: get_fc\(\) returned W of shape \(5, 2\), but forward\(x, "
            r"return_feature=True\) gives 5 logits of a 3-wide feature",
        ),
        (
            spec("netfile/plain.py:make", head="1"),
            r"backbones\.u\.head: '1' is a ReLU, not an nn\.Linear; its linear layers are 4, 6",
        ),
        (
            spec("netfile/plain.py:make", head="classifier"),
            r"backbones\.u\.head: the model has no submodule 'classifier'; its linear layers "
            r"are 4, 6",
        ),
    ],
)
def test_a_bad_user_model_is_one_line(project: Path, block: dict, message: str) -> None:
    write_file(project, "plain.py", PLAIN)
    with pytest.raises(ParamsError, match=message) as caught:
        B.load_backbone("u", block)
    assert "\n" not in str(caught.value)


@catalogue(
    "params",
    "a model's `get_fc()` (or its `head:` layer) does not reproduce the logits its forward returns",
    "extraction stops at the first batch: one line with the difference, naming the backbone and where W, b came from",
)
def test_get_fc_disagreeing_with_the_logits_stops_extraction(project: Path) -> None:
    write_file(project, "plain.py", PLAIN)
    bb = B.load_backbone("u", spec("netfile/plain.py:WrongFc"))
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, images())
    with pytest.raises(
        DataError, match=r"backbones\.u: features @ W\^T \+ b differs .* from get_fc\(\)"
    ):
        check_head(
            B.model_head(bb.model), feats.numpy(), logits.numpy(), "fp32", "u",
            bb.model.head_description,
        )  # fmt: skip


@catalogue(
    "params",
    "a checkpoint's tensor names do not fit the model (OpenOOD's CIFAR ResNet-18 `shortcut` keys into torchvision's `downsample`)",
    "one line naming `backbones.<bb>.checkpoint`, the counts and first keys missing from the checkpoint and not in the model, and what to check for that kind",
)
def test_checkpoint_keys_that_do_not_match_name_both_sides(project: Path, tmp_path: Path) -> None:
    """OpenOOD's CIFAR checkpoint (``shortcut`` projections) into torchvision's ResNet-18
    (``downsample``): the issue's first attempt, now one line naming keys on both sides."""
    from oodbench.models.openood_nets import ResNet18_32x32

    path = tmp_path / "best.ckpt"
    torch.save(ResNet18_32x32(10).state_dict(), path)
    block = {
        "torchvision": "resnet18",
        "num_classes": 10,
        "checkpoint": str(path),
        "preprocess": CIFAR10,
    }
    with pytest.raises(ParamsError) as caught:
        B.load_backbone("tv", block)
    text = str(caught.value)
    assert "backbones.tv.checkpoint" in text and "\n" not in text
    assert "missing from the checkpoint ('layer2.0.downsample.0.weight'" in text
    assert "not in the model ('layer2.0.shortcut.0.weight'" in text
    assert "check the torchvision name and num_classes" in text


# ---- OpenOOD v1.5's networks and presets ---------------------------------------------


def released_cifar_names() -> list[str]:
    """The tensor names of OpenOOD's ResNet18_32x32 checkpoints (its network file's
    layout): stem conv1/bn1, layer1-4 of two blocks (conv1, bn1, conv2, bn2; the first
    block of layers 2-4 with shortcut.0 / shortcut.1), fc."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = ["conv1.weight", *(f"bn1.{t}" for t in bn)]
    for layer in range(1, 5):
        for block in range(2):
            at = f"layer{layer}.{block}"
            names += [f"{at}.conv1.weight", *(f"{at}.bn1.{t}" for t in bn)]
            names += [f"{at}.conv2.weight", *(f"{at}.bn2.{t}" for t in bn)]
            if layer > 1 and block == 0:
                names += [f"{at}.shortcut.0.weight", *(f"{at}.shortcut.1.{t}" for t in bn)]
    return [*names, "fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    ("preset", "classes"), [("openood_cifar10", 10), ("openood_cifar100", 100)]
)
def test_cifar_presets_load_the_released_names(
    project: Path, tmp_path: Path, preset: str, classes: int
) -> None:
    """A checkpoint written by another implementation (the user's file of the project
    test) under OpenOOD's names loads into the preset; outputs equal the source's."""
    from oodbench.models.openood_nets import ResNet18_32x32

    assert list(ResNet18_32x32(classes).state_dict()) == released_cifar_names()
    write_model_code(project)
    from oodbench.core.usercode import CodeRef, load

    source_class = load(CodeRef.parse("mynets/resnet.py:ResNet18_32x32", "t"), project, "t")
    source = perturbed(source_class(num_classes=classes))
    assert list(source.state_dict()) == released_cifar_names()
    path = tmp_path / "best.ckpt"
    torch.save(source.state_dict(), path)
    bb = B.load_backbone("r", {"preset": preset, "checkpoint": str(path)})
    assert bb.info["data_config"]["input_size"] == [3, 32, 32]
    x = images(seed=5)
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        want_logits, want_feats = source(x, return_feature=True)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats, want_feats, rtol=1e-5, atol=1e-5)
    assert bb.info["num_classes"] == classes


@pytest.mark.parametrize(
    ("preset", "source_name", "classes"),
    [("openood_imagenet200", "resnet18", 200), ("openood_imagenet", "resnet50", 1000)],
)
def test_imagenet_presets_load_torchvision_names(
    tmp_path: Path, preset: str, source_name: str, classes: int
) -> None:
    """ImageNet-200's ResNet18_224x224 and ImageNet-1k's ResNet-50 have torchvision's
    tensor names (OpenOOD subclasses torchvision's ResNet): a torchvision state dict loads,
    the logits and the pooled feature equal torchvision's own forward."""
    import torchvision

    source = perturbed(torchvision.models.get_model(source_name, num_classes=classes))
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    bb = B.load_backbone("i", {"preset": preset, "checkpoint": str(path)})
    x = images(2, 64, seed=7)  # a shrunk input: the networks pool globally
    with torch.no_grad():
        feats, logits = B.forward_features_and_logits(bb.model, x)
        trunk = torch.nn.Sequential(*list(source.children())[:-1])
        want_feats = torch.flatten(trunk(x), 1)
        want_logits = source(x)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats, want_feats, rtol=1e-5, atol=1e-5)
    head = B.model_head(bb.model)
    assert head.weight.shape == (classes, feats.shape[1])
    if classes == 1000:  # torchvision's ImageNet order is the sorted wnids, as timm's
        assert head.class_ids[0] == "n01440764"


@pytest.mark.parametrize(
    ("preset", "image_size", "pre_size", "img_size"),
    [("openood_cifar10", (37, 45), 32, 32), ("openood_imagenet", (300, 411), 256, 224)],
)
def test_preset_pixels_are_openoods_test_transform(preset, image_size, pre_size, img_size) -> None:
    """OpenOOD's TestStandardPreProcessor: Resize(pre_size) bilinear, CenterCrop(img_size),
    ToTensor, Normalize(mean, std); the preset's pixels equal it."""
    from torchvision import transforms as T

    mapping = presets.PRESETS[preset].preprocess
    pixels, normalize, desc = build_transform(None, mapping)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (*image_size, 3), dtype=np.uint8))
    openood = T.Compose(
        [
            T.Resize(pre_size, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(img_size),
            T.ToTensor(),
            T.Normalize(mapping["mean"], mapping["std"]),
        ]
    )
    torch.testing.assert_close(normalize(pixels(image)), openood(image), rtol=0, atol=2e-6)
    assert desc["input_size"] == [3, img_size, img_size] and desc["resize"] == pre_size


def test_openood_preset_values_are_v15s() -> None:
    """OpenOOD v1.5's default_preprocessing_dict (CIFAR-100's mean/std are its own)."""
    cifar100 = presets.PRESETS["openood_cifar100"].preprocess
    assert cifar100["mean"] == [0.5071, 0.4867, 0.4408]
    assert cifar100["std"] == [0.2675, 0.2565, 0.2761]
    assert presets.PRESETS["openood_cifar10"].preprocess == CIFAR10
    expanded = presets.expand("x", {"preset": "openood_imagenet"})
    assert expanded["torchvision"] == "resnet50" and expanded["num_classes"] == 1000
    # a model named next to the preset replaces the preset's, the preprocessing stays
    mine = presets.expand("x", {"preset": "openood_cifar10", "model": "a/b.py:C"})
    assert "openood" not in mine and mine["model"] == "a/b.py:C" and mine["preprocess"] == CIFAR10


# ---- validation (the check stage: no torch, no user code) ----------------------------


def test_kind_tables_match_the_libraries() -> None:
    import torchvision.models as tv

    from oodbench.models.openood_nets import NETWORKS

    assert tuple(tv.list_models(module=tv)) == kinds.TORCHVISION_MODELS
    assert tuple(NETWORKS) == kinds.OPENOOD_NETWORKS


def test_validation_imports_neither_torch_nor_the_users_file(tmp_path: Path) -> None:
    """kinds.py and preprocess.py are what the check stage runs for these keys."""
    code = (
        "import sys\n"
        "from oodbench.models import kinds\n"
        "from oodbench.models.preprocess import check_preprocess\n"
        "cfg = {'model': 'nets/x.py:Net', 'preprocess': check_preprocess("
        "{'resize': 32, 'crop': 32, 'mean': [0, 0, 0], 'std': [1, 1, 1]}, 'b'), "
        "'converter': 'auto'}\n"
        "assert kinds.check_kind('backbones.b', cfg) == 'model'\n"
        "kinds.check_kind('backbones.t', {'torchvision': 'resnet50', 'checkpoint': 'c', "
        "'preprocess': cfg['preprocess'], 'converter': 'auto'})\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'nets') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


GOOD = {"resize": 256, "crop": 224, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@catalogue(
    "params",
    "a `preprocess:` mapping lacks a key, has one of the wrong type or an unknown one, or crops beyond its resize",
    "the check stage refuses it naming `backbones.<bb>.preprocess.<key>` and the expected form",
)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop": None}, r"backbones\.m\.preprocess\.crop: missing; the mapping needs"),
        ({"mean": [0.5, 0.5]}, r"backbones\.m\.preprocess\.mean must be three numbers"),
        ({"std": [0.2, 0, 0.2]}, r"backbones\.m\.preprocess\.std must be positive"),
        ({"resize": "256"}, r"backbones\.m\.preprocess\.resize must be a positive integer"),
        (
            {"resize": [256]},
            r"backbones\.m\.preprocess\.resize must be an integer .* or \[height, width\]",
        ),
        ({"crop": 300}, r"backbones\.m\.preprocess\.crop: 300 is larger than the resized image"),
        ({"interpolation": "area"}, r"backbones\.m\.preprocess\.interpolation must be one of"),
        ({"size": 224}, r"backbones\.m\.preprocess\.size: unknown key; known: resize, crop"),
        ({"mean": "imagenet"}, r"backbones\.m\.preprocess\.mean must be three numbers"),
    ],
)
def test_a_bad_preprocess_mapping_names_its_key(change: dict, message: str) -> None:
    mapping = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ParamsError, match=message):
        B.validate_spec("m", {"timm": "resnet18", "preprocess": mapping})


def test_the_mapping_works_for_timm_and_is_canonical(tmp_path: Path) -> None:
    out = B.validate_spec("m", {"timm": "resnet18", "preprocess": GOOD})
    assert out["preprocess"] == {**GOOD, "interpolation": "bilinear"}  # the default written out
    assert B.validate_spec("m", {"timm": "resnet18"})["preprocess"] == "timm"
    import timm

    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), tmp_path / "w.pth")
    block = {"timm": "resnet10t", "num_classes": 3, "checkpoint": str(tmp_path / "w.pth")}
    bb = B.load_backbone("m", {**block, "preprocess": {**GOOD, "resize": [240, 260]}})
    assert bb.info["data_config"]["input_size"] == [3, 224, 224]
    image = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    assert tuple(bb.pixels(image).shape) == (3, 224, 224)  # [h, w] resize, then the crop
    assert B.load_backbone("m", block).info["data_config"]["crop_pct"] == 0.875  # timm's own


@catalogue(
    "params",
    "a backbone names two model kinds, an unknown torchvision or OpenOOD network, a malformed `model:` reference, no preprocess mapping for a built model, or image keys on imported features",
    "the check stage refuses it in one line naming the key, without importing the user's file",
)
@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"model": "nets/x.py", "preprocess": GOOD}, r"backbones\.b\.model: expected 'path/to/file\.py:Name'"),
        ({"model": "nets/x.py:Net"}, r"backbones\.b\.preprocess: a model: backbone states its test transform"),
        ({"model": "nets/x.py:Net", "preprocess": "reference"}, r"backbones\.b\.preprocess: a model: backbone"),
        (
            {"torchvision": "resnet51", "checkpoint": "c.pth", "preprocess": GOOD},
            r"backbones\.b\.torchvision: unknown torchvision classification model 'resnet51'",
        ),
        (
            {"torchvision": "resnet50", "preprocess": GOOD},
            r"backbones\.b\.checkpoint: a torchvision: backbone loads a local state dict",
        ),
        (
            {"openood": "resnet34", "checkpoint": "c", "preprocess": GOOD},
            r"backbones\.b\.openood: unknown OpenOOD network 'resnet34'; known: resnet18_32x32",
        ),
        ({"timm": "resnet18", "head": "fc"}, r"backbones\.b\.head: names the final nn\.Linear of a model: or torchvision:"),
        (
            {"model": "nets/x.py:Net", "preprocess": GOOD, "head": "fc[1]"},
            r"backbones\.b\.head must be the attribute name of the model's final nn\.Linear",
        ),
        (
            {"model": "nets/x.py:Net", "preprocess": GOOD, "converter": "mmpretrain"},
            r"backbones\.b\.converter: applies to timm and open_clip models, not to model:",
        ),
        ({"timm": "resnet18", "model": "a.py:B"}, r"backbones\.b: set exactly one of timm:, clip:, model:, torchvision:, openood:, imported: or preset: \(found timm, model\)"),
        ({"imported": "imp/x", "preprocess": GOOD}, r"backbones\.b\.preprocess: an imported backbone runs no model on images"),
        ({"imported": "imp/x", "num_classes": 3}, r"backbones\.b\.num_classes: an imported backbone"),
        ({"timm": "resnet18", "preprocess": GOOD, "reference_size": 480}, r"backbones\.b\.reference_size: sets the size of preprocess: reference"),
    ],
)  # fmt: skip
def test_a_bad_backbone_block_names_its_key(block: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        B.validate_spec("b", block)


def test_an_imported_block_has_no_model(tmp_path: Path) -> None:
    out = B.validate_spec("b", {"imported": "imp/x"})
    assert out["imported"] == "imp/x" and out["preprocess"] is None and out["fc"] == "head"
    with pytest.raises(ParamsError, match=r"backbones\.b\.imported: features imported from imp/x"):
        B.load_backbone("b", {"imported": "imp/x"})


def test_the_torchvision_decoder_follows_the_mapping(tmp_path: Path) -> None:
    """extract.decoder: torchvision takes the mapping's resize and crop: its pixels agree
    with the PIL path's within a few grey levels (as for timm configs)."""
    from oodbench.models.decode import JpegPixels, read_jpeg

    mapping = presets.PRESETS["openood_imagenet"].preprocess
    pixels, _, desc = build_transform(None, mapping)
    jpeg = JpegPixels.from_data_config(desc, "backbones.b")
    assert (jpeg.resize, jpeg.crop) == ((256,), (224, 224))
    rng = np.random.default_rng(1)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 10, 0), 10, 1)
    Image.fromarray(smooth).save(tmp_path / "x.jpg", quality=95)
    fast = read_jpeg(tmp_path / "x.jpg", jpeg)
    with Image.open(tmp_path / "x.jpg") as image:
        slow = pixels(image)
    assert fast.shape == slow.shape == (3, 224, 224)
    assert float((fast.float() - slow.float()).abs().mean()) < 1.0
