"""The classifier file ``features/<bb>/fc.safetensors``: W [C, D], b [C], class names.

Never pickle: safetensors holds tensors and a JSON header only. The header carries the
class names (and stable class ids), a sha256 of W and b, and of any extra tensors some
methods need (the CLIP projection and text embeddings, a MOS head's class -> group table).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oodbench.core.errors import DataError
from oodbench.formats.atomic import atomic_path


@dataclass
class Linear:
    """The classifier z = x W^T + b over the features."""

    weight: np.ndarray  # float32 [C, D]
    bias: np.ndarray  # float32 [C]
    class_names: list[str]
    #: other tensors of the fc file that some methods need (oodbench/heads/clip_text.py, oodbench/heads/groups.py): the CLIP
    #: projection and text embeddings (mcm), the class -> group ids of a MOS head
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: stable identifiers of the outputs where the names are descriptions (an ImageNet
    #: head: wnids, the names a classes file holds); None: the names are the identifiers
    class_ids: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits in float32, as the reference code computes them."""
        if features.shape[1] != self.weight.shape[1]:
            raise DataError(
                f"feature dimension {features.shape[1]} does not match the classifier's "
                f"{self.weight.shape[1]}: the fc file and the features come from different "
                "backbones; rerun `dvc repro` so both are rebuilt"
            )
        w = np.asarray(self.weight, dtype=np.float32)
        b = np.asarray(self.bias, dtype=np.float32)
        return np.asarray(features, dtype=np.float32) @ w.T + b


def save_fc(path: str | Path, fc: Linear, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    tensors = {
        "weight": np.ascontiguousarray(fc.weight, dtype=np.float32),
        "bias": np.ascontiguousarray(fc.bias, dtype=np.float32),
    }
    meta = {
        "class_names": json.dumps(list(fc.class_names)),
        **({"class_ids": json.dumps(list(fc.class_ids))} if fc.class_ids is not None else {}),
        **(metadata or {}),
        "sha256": _tensor_digest(tensors["weight"], tensors["bias"]),
    }
    if fc.extras:
        if set(fc.extras) & set(tensors):
            raise DataError(f"{path}: extra tensors may not be named weight or bias")
        tensors |= {k: np.ascontiguousarray(v) for k, v in sorted(fc.extras.items())}
        meta["extras_sha256"] = _extras_digest(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        _sort_header(Path(tmp))


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors file with the keys of its JSON header sorted.

    The library writes its header from a hash map, in a different order on each run, so
    an identical classifier got a new file hash and DVC reran every score and evaluate
    stage after any fc rerun. Only the header changes: the tensor bytes and their offsets
    are the library's, and the header is padded with spaces to 8 bytes as the format asks."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])


def load_fc(path: str | Path) -> Linear:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classifier file missing; run `dvc repro` to build it")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
            names = [k for k in f.keys() if k not in ("weight", "bias")]  # noqa: SIM118
            extras = {k: f.get_tensor(k) for k in names}
    except Exception as err:  # safetensors raises several types on corrupt files
        raise DataError(f"{path}: unreadable classifier file ({err}); rerun `dvc repro`") from err
    extras_bad = extras and meta.get("extras_sha256") != _extras_digest(extras)
    if ("sha256" in meta and meta["sha256"] != _tensor_digest(weight, bias)) or extras_bad:
        raise DataError(
            f"{path}: checksum mismatch, the classifier file is corrupted; delete it and rerun "
            "`dvc repro` (or `dvc checkout` to restore it from the cache)"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise DataError(f"{path}: W or b holds NaN/Inf; rebuild it with `dvc repro`")
    names = json.loads(meta.get("class_names", "[]")) or [str(c) for c in range(len(bias))]
    ids = json.loads(meta["class_ids"]) if "class_ids" in meta else None
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(names) != len(bias):
        raise DataError(
            f"{path}: inconsistent shapes W{weight.shape} b{bias.shape}; rerun `dvc repro`"
        )
    if ids is not None and len(ids) != len(bias):
        raise DataError(f"{path}: {len(ids)} class ids for {len(bias)} outputs; rerun `dvc repro`")
    return Linear(weight=weight, bias=bias, class_names=names, extras=extras, class_ids=ids)


def _extras_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the extra tensors (name, dtype, shape, bytes) in name order."""
    h = hashlib.sha256()
    for name in sorted(k for k in tensors if k not in ("weight", "bias")):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{t.dtype.str}:{t.shape}".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def _tensor_digest(weight: np.ndarray, bias: np.ndarray) -> str:
    """sha256 over W then b (float32 bytes): safetensors itself has no checksum."""
    h = hashlib.sha256(np.ascontiguousarray(weight, np.float32).tobytes())
    h.update(np.ascontiguousarray(bias, np.float32).tobytes())
    return h.hexdigest()
