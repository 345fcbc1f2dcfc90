"""The ``extract`` params block, validated (no torch: the check stage reads it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oodbench.core.errors import ParamsError

PRECISIONS = ("fp32", "bf16", "fp16")
DECODERS = ("pil", "torchvision")


@dataclass(frozen=True)
class ExtractSettings:
    """How features are extracted; ``num_workers`` and ``nproc_per_node`` change no number."""

    batch_size: int = 64
    num_workers: int = 2
    precision: str = "fp32"
    shard_rows: int = 4096
    nproc_per_node: int = 1  # > 1: the extract stage reruns itself under torchrun
    decoder: str = "pil"  # or torchvision: JPEGs decoded by libjpeg-turbo (models/decode.py)

    @classmethod
    def from_params(cls, settings: dict[str, Any]) -> ExtractSettings:
        if not isinstance(settings, dict):
            raise ParamsError(f"params.yaml: extract must be a mapping, got {settings!r}")
        known = cls.__dataclass_fields__
        for key in settings:
            if key not in known:
                raise ParamsError(
                    f"params.yaml: extract.{key}: unknown key; known: {', '.join(known)}"
                )
        out = cls(**settings)
        lows = (("batch_size", 1), ("num_workers", 0), ("shard_rows", 1), ("nproc_per_node", 1))
        for key, low in lows:
            value = getattr(out, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ParamsError(
                    f"params.yaml: extract.{key} must be an integer >= {low}, got {value!r}"
                )
        if out.decoder not in DECODERS:
            raise ParamsError(
                f"params.yaml: extract.decoder must be one of {', '.join(DECODERS)}, got {out.decoder!r}"
            )
        if out.precision not in PRECISIONS:
            raise ParamsError(
                f"params.yaml: extract.precision must be one of {', '.join(PRECISIONS)}, got {out.precision!r}"
            )
        return out
