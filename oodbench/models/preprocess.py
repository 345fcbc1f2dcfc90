"""``backbones.<bb>.preprocess``: a named mode or an explicit mapping, validated without torch.

Modes: ``timm`` (the model's own eval config) and ``reference`` (the ViM seeds' square
resize, mean = std = 0.5). The mapping states the test transform outright, for any
backbone kind (a user's model, torchvision, OpenOOD's networks, timm, open_clip)::

    preprocess: {resize: 256, crop: 224, mean: [0.485, 0.456, 0.406],
                 std: [0.229, 0.224, 0.225], interpolation: bilinear}

``resize``: an integer resizes the shorter side to it (torchvision's ``Resize(256)``),
``[height, width]`` resizes to exactly that size; ``crop``: the side of the centre crop
(equal to the resized size: no crop); ``mean`` / ``std``: per RGB channel, on pixels
scaled to 0..1; ``interpolation``: bilinear (default), bicubic or nearest. This is
OpenOOD's test transform (``Resize(pre_size)``, ``CenterCrop(img_size)``,
``Normalize(mean, std)``, bilinear). The check stage validates it here (it imports no
torch); oodbench/models/transforms.py builds it.
"""

from __future__ import annotations

from typing import Any

from oodbench.core.errors import ParamsError

MODES = ("timm", "reference")
KEYS = ("resize", "crop", "mean", "std", "interpolation")
REQUIRED = ("resize", "crop", "mean", "std")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
EXAMPLE = (
    "{resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], "
    "interpolation: bilinear}"
)


def check_preprocess(value: Any, where: str) -> str | dict[str, Any]:
    """A mode name, or the mapping with its defaults filled in (a canonical form, so that
    writing the default interpolation out reruns nothing); errors name the key."""
    here = f"params.yaml: {where}.preprocess"
    if isinstance(value, str):
        if value not in MODES:
            raise ParamsError(
                f"{here} must be one of {MODES} or a mapping {EXAMPLE}, got {value!r}"
            )
        return value
    if not isinstance(value, dict):
        raise ParamsError(f"{here} must be one of {MODES} or a mapping {EXAMPLE}, got {value!r}")
    for key in value:
        if key not in KEYS:
            raise ParamsError(f"{here}.{key}: unknown key; known: {', '.join(KEYS)}")
    for key in REQUIRED:
        if key not in value:
            raise ParamsError(f"{here}.{key}: missing; the mapping needs {EXAMPLE}")
    out = {
        "resize": _resize(value["resize"], f"{here}.resize"),
        "crop": _positive_int(value["crop"], f"{here}.crop"),
        "mean": _triple(value["mean"], f"{here}.mean", positive=False),
        "std": _triple(value["std"], f"{here}.std", positive=True),
        "interpolation": value.get("interpolation", "bilinear"),
    }
    if out["interpolation"] not in INTERPOLATIONS:
        raise ParamsError(
            f"{here}.interpolation must be one of {INTERPOLATIONS}, got {out['interpolation']!r}"
        )
    shorter = out["resize"] if isinstance(out["resize"], int) else min(out["resize"])
    if out["crop"] > shorter:
        raise ParamsError(
            f"{here}.crop: {out['crop']} is larger than the resized image ({value['resize']}); "
            "crop at most the resize"
        )
    return out


def input_size(preprocess: dict[str, Any]) -> int:
    """The side of the square image the model receives from a mapping."""
    return int(preprocess["crop"])


def _positive_int(value: Any, here: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"{here} must be a positive integer (pixels), got {value!r}")
    return value


def _resize(value: Any, here: str) -> int | list[int]:
    if isinstance(value, list):
        if len(value) != 2:
            raise ParamsError(
                f"{here} must be an integer (the shorter side) or [height, width], got {value!r}"
            )
        return [_positive_int(v, here) for v in value]
    return _positive_int(value, here)


def _triple(value: Any, here: str, positive: bool) -> list[float]:
    numbers = isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not numbers or len(value) != 3:
        raise ParamsError(f"{here} must be three numbers (R, G, B on 0..1 pixels), got {value!r}")
    if positive and min(value) <= 0:
        raise ParamsError(f"{here} must be positive, got {value!r}")
    return [float(v) for v in value]
