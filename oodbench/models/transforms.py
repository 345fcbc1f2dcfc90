"""Image transforms: PIL image -> uint8 pixels (DataLoader workers) -> normalised input.

The split keeps workers shipping uint8 batches (4x less inter-process traffic) and lets
normalisation run on the model's device.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn


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
    model: nn.Module, preprocess: str | dict[str, Any], reference_size: int | None = None
) -> tuple[Callable, Normalize, dict[str, Any]]:
    """(PIL -> uint8 CHW tensor, uint8 -> normalised float, description).

    ``timm``: the model's own eval data config (resize, crop, interpolation, mean, std);
    ``reference``: the seeds' square bilinear resize (PIL, antialiased, as torchvision's
    ``Resize((s, s))`` on PIL images) to ``reference_size`` when given (BiT: 480, the ViM
    seed's size), else the model's input size, with mean=std=0.5; a mapping
    (oodbench/models/preprocess.py): exactly the transform it states."""
    from torchvision import transforms as T

    if isinstance(preprocess, dict):
        return explicit_transform(preprocess)
    import timm.data

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


def explicit_transform(preprocess: dict[str, Any]) -> tuple[Callable, Normalize, dict[str, Any]]:
    """A ``preprocess:`` mapping: ``Resize(resize)`` then ``CenterCrop(crop)`` on the PIL
    image (torchvision's test transform, as OpenOOD's), normalised with its mean and std.

    The description is a timm-style data config (``input_size``, ``interpolation``, mean,
    std) plus ``resize`` and ``crop``, which ``extract.decoder: torchvision`` follows."""
    from torchvision import transforms as T

    mode = getattr(T.InterpolationMode, preprocess["interpolation"].upper())
    resize = preprocess["resize"]
    size = resize if isinstance(resize, int) else tuple(resize)
    crop = int(preprocess["crop"])
    tf = T.Compose([T.Resize(size, interpolation=mode), T.CenterCrop(crop), T.PILToTensor()])
    mean, std = tuple(preprocess["mean"]), tuple(preprocess["std"])
    desc = {
        "input_size": [3, crop, crop],
        "resize": resize,
        "crop": crop,
        "interpolation": preprocess["interpolation"],
        "mean": list(mean),
        "std": list(std),
    }
    return T.Compose([_ToRGB(), tf]), Normalize(mean, std), desc
