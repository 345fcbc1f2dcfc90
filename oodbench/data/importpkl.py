"""``oodbench import-pkl``: bring ViM / MOODv2 pickles into oodbench's own formats.

The ViM and MOODv2 code dump features as a bare pickled float32 array [N, D]
(``mmcv.dump(features, "x.pkl")``) and the classifier as a pickled list ``[W, b]``.
A pickle is a program: loading one from the internet with ``pickle.load`` runs any
callable it names (``os.system`` included). These files are therefore read with a
restricted unpickler that admits only what a numpy array needs, and refused with a
clear error otherwise; what comes out is written as a feature directory (NPY shards +
info.json, see oodbench/formats/features.py) or ``fc.safetensors``, formats that hold no code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core.errors import DataError
from oodbench.data.datalist import parse_datalist
from oodbench.formats.atomic import atomic_dir
from oodbench.formats.classifier import Linear, save_fc
from oodbench.formats.features import write_feature_dir

#: (module, name) pairs a pickled numpy array needs, and nothing else:
#: ``_reconstruct``/``ndarray``/``dtype`` (protocols 2-4, numpy 1 and 2 module names),
#: ``_frombuffer`` (protocol 5), ``_codecs.encode`` (protocol 2 stores bytes through it,
#: mmcv's default), ``list`` (the ``[W, b]`` fc file).
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "list"),
        ("_codecs", "encode"),
    }
)
SHARD_ROWS = 65536


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and lists, and refuses every other global."""

    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.source}: refused to unpickle {module}.{name}: only numpy arrays and "
                "lists may be imported (the file may run code); re-export it as a bare array"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path` through :class:`ArrayUnpickler`; any failure is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return ArrayUnpickler(path.read_bytes(), path).load()
    except DataError:
        raise
    except Exception as err:  # truncated or malformed pickles raise many types
        raise DataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err


def as_matrix(obj: Any, path: Path, what: str, ndim: int = 2) -> np.ndarray:
    """A finite float32 array of `ndim` dimensions, or a DataError saying what was found."""
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "fiu" or obj.ndim != ndim:
        found = (
            f"{obj.dtype} array of shape {obj.shape}"
            if isinstance(obj, np.ndarray)
            else type(obj).__name__
        )
        raise DataError(f"{path}: expected {what} as a {ndim}-D float array, found {found}")
    array = np.ascontiguousarray(obj, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise DataError(f"{path}: {what} hold {bad} NaN/Inf values; re-export them")
    return array


def import_features(
    path: Path, out: Path, backbone: str, dataset: str, datalist: Path | None = None
) -> int:
    """A pickled [N, D] array -> feature directory `out`; labels from `datalist` (else -1)."""
    features = as_matrix(load_pickle(path), path, "features")
    n = len(features)
    paths, labels = [""] * n, [-1] * n
    if datalist is not None:
        entries = parse_datalist(datalist)
        if len(entries) != n:
            raise DataError(
                f"{datalist}: {len(entries)} entries but {path} holds {n} feature rows; "
                "pass the datalist the features were extracted from"
            )
        paths, labels = [e.path for e in entries], [e.label for e in entries]
    info = {"backbone": backbone, "dataset": dataset, "imported_from": path.name}
    with atomic_dir(out) as tmp:
        write_feature_dir(tmp, info, features, labels, paths=paths, shard_rows=SHARD_ROWS)
    return n


def import_fc(path: Path, out: Path) -> Linear:
    """A pickled ``[W, b]`` list (W [C, D], b [C]) -> ``fc.safetensors`` at `out`."""
    obj = load_pickle(path)
    if not isinstance(obj, list) or len(obj) != 2:
        raise DataError(f"{path}: expected the list [W, b], found {type(obj).__name__}")
    weight = as_matrix(obj[0], path, "W")
    bias = as_matrix(obj[1], path, "b", ndim=1)
    if bias.shape != (weight.shape[0],):
        raise DataError(f"{path}: W{weight.shape} and b{bias.shape} disagree on the class count")
    fc = Linear(weight=weight, bias=bias, class_names=[str(c) for c in range(len(bias))])
    save_fc(out, fc, {"source": "import-pkl", "file": path.name})
    return fc
