"""JPEG decoding with torchvision (``extract.decoder: torchvision``) for extraction.

The default decoder is PIL, through each model's own timm/reference transform. With
``decoder: torchvision`` a baseline RGB or greyscale JPEG is decoded by
``torchvision.io.decode_jpeg`` and resized / cropped on uint8 tensors with the same
geometry (shorter side to ``floor(size / crop_pct)``, centre crop; or the reference
square resize), antialiased like PIL. Both decoders use libjpeg-turbo and the
antialiased resizes agree to within one grey level on a few pixels, but not bit for
bit, so the choice is part of the extraction key and the default stays PIL (the
committed metrics). Measured on this CPU, one thread: 0.74 ms per 500x375 JPEG against
2.19 ms through PIL + timm (2.9x); on a GPU machine extraction of small models is
decode-bound (README), which is where it helps. Anything else (PNG, CMYK or progressive
JPEGs torchvision refuses, other crop modes) takes the PIL path. torchvision 0.29
deprecates its image decoders in favour of TorchCodec (a later move should be checked
against these tests).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from oodbench.core.errors import ParamsError

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class JpegPixels:
    """Decoded uint8 [3, H, W] -> the model's uint8 pixels (picklable for DataLoader workers)."""

    resize: tuple[int, ...]  # (shorter side,) or (height, width)
    crop: tuple[int, int] | None
    interpolation: str

    @classmethod
    def from_data_config(cls, config: dict[str, Any], where: str) -> JpegPixels:
        """The tensor pipeline for a backbone's recorded data config (oodbench/models/backbones.py)."""
        height, width = config["input_size"][1:]
        interpolation = config.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ParamsError(
                f"params.yaml: extract.decoder: torchvision resizes with {INTERPOLATIONS}, "
                f"{where} uses {interpolation!r}; set extract.decoder: pil"
            )
        if "resize" in config:  # a preprocess: mapping states its resize and crop
            resize = config["resize"]
            sides = (resize,) if isinstance(resize, int) else tuple(resize)
            return cls(sides, (config["crop"],) * 2, interpolation)
        if "crop_pct" not in config:  # preprocess: reference, a square resize
            return cls((height, width), None, interpolation)
        if config.get("crop_mode", "center") != "center" or height != width:
            raise ParamsError(
                f"params.yaml: extract.decoder: torchvision does the centre crop of square "
                f"inputs only; {where} has crop_mode {config.get('crop_mode')!r}, "
                f"input {height}x{width}; set extract.decoder: pil"
            )
        # timm's eval transform: Resize(floor(size / crop_pct)) of the shorter side, then crop
        return cls((math.floor(height / config["crop_pct"]),), (height, width), interpolation)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        mode = getattr(F.InterpolationMode, self.interpolation.upper())
        image = F.resize(image, list(self.resize), interpolation=mode, antialias=True)
        return F.center_crop(image, list(self.crop)) if self.crop else image


def read_jpeg(path: Path, pixels: JpegPixels) -> torch.Tensor | None:
    """The pixels of a plain RGB / greyscale JPEG via torchvision; None: use PIL instead.

    PIL reads the header only (lazily) to tell the format and mode and to apply its
    decompression-bomb limit before anything large is decoded."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = path.read_bytes()  # read once: PIL parses the header, torchvision decodes
    with Image.open(io.BytesIO(encoded)) as header:
        if header.format != "JPEG" or header.mode not in ("RGB", "L"):
            return None
    try:
        image = decode_jpeg(
            torch.frombuffer(bytearray(encoded), dtype=torch.uint8), mode=ImageReadMode.RGB
        )
    except RuntimeError:  # a JPEG flavour torchvision does not decode: PIL does, or reports
        return None
    return pixels(image)
