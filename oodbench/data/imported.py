"""Features extracted elsewhere, as a backbone: ``backbones.<bb>: {imported: <folder>}``.

The folder holds one file per dataset of the benchmark and, for ``fc: head``, the
classifier, under fixed names so that the pipeline can name each as a dependency:

  ``<folder>/<ds>.npy``      float [N, D], ``np.save`` (read with ``allow_pickle=False``)
  ``<folder>/<ds>.pt``       a float tensor [N, D] (``torch.save``; read weights-only)
  ``<folder>/<ds>.pkl``      ViM / MOODv2's pickled array (the restricted unpickler of
                             oodbench/data/importpkl.py: numpy arrays only, never code)
  ``<folder>/<ds>/``         a feature directory (``oodbench import-pkl --out``)
  ``<folder>/fc.safetensors``  W [C, D], b [C] (``oodbench import-pkl --fc``), or
  ``fc.pkl`` (the ``[W, b]`` list), ``fc.npz`` / ``fc.pt`` (``weight`` and ``bias``)

Row i of a dataset's file is entry i of its datalist (the manifest, in list order):
the ``import-<ds>`` stage refuses another row count, and features whose width is not the
classifier's. It writes the rows as the backbone's feature directory
``features/<bb>/<ds>/`` (labels and paths from the manifest), so every method, the fc
stage and evaluation read them as if they had been extracted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from oodbench.core.errors import DataError, ParamsError
from oodbench.data.importpkl import as_matrix, load_pickle
from oodbench.formats.atomic import atomic_dir
from oodbench.formats.classifier import Linear
from oodbench.formats.features import load_features, write_feature_dir

FEATURE_SUFFIXES = (".npy", ".pt", ".pkl")
FC_NAMES = ("fc.safetensors", "fc.pkl", "fc.npz", "fc.pt")
SHARD_ROWS = 65536


def feature_source(folder: str, dataset: str, root: Path = Path()) -> str:
    """The file (or feature directory) of `dataset` in `folder`, relative to the project
    root; the ``.npy`` name when there is none yet (the check stage reports it)."""
    found = [
        f"{folder}/{dataset}{suffix}"
        for suffix in FEATURE_SUFFIXES
        if (root / folder / f"{dataset}{suffix}").is_file()
    ]
    if (root / folder / dataset / "info.json").is_file():
        found.append(f"{folder}/{dataset}")
    return found[0] if len(found) == 1 else f"{folder}/{dataset}.npy"


def fc_source(folder: str, root: Path = Path()) -> str | None:
    """The classifier file in `folder` (relative to the project root), None when absent."""
    found = [f"{folder}/{name}" for name in FC_NAMES if (root / folder / name).is_file()]
    return found[0] if found else None


def check_folder(where: str, folder: str, datasets: list[str], fc_needed: bool, root: Path) -> None:
    """Every dataset has exactly one file and, when the fc stage reads it, the classifier
    is there: one ParamsError naming the key and the file otherwise."""
    here = f"params.yaml: {where}.imported"
    if not (root / folder).is_dir():
        raise ParamsError(
            f"{here}: folder {folder} not found (paths are relative to the project root)"
        )
    for dataset in datasets:
        names = [
            f"{dataset}{s}" for s in FEATURE_SUFFIXES if (root / folder / f"{dataset}{s}").is_file()
        ]
        if (root / folder / dataset / "info.json").is_file():
            names.append(f"{dataset}/")
        if len(names) != 1:
            what = "no features" if not names else f"{len(names)} files ({', '.join(names)})"
            raise ParamsError(
                f"{here}: {what} for dataset {dataset!r} in {folder}; put exactly one of "
                f"{dataset}.npy, {dataset}.pt, {dataset}.pkl or a feature folder {dataset}/ "
                "there (row i = entry i of its datalist)"
            )
    if fc_needed and fc_source(folder, root) is None:
        raise ParamsError(
            f"{here}: no classifier in {folder} for fc: head; put {' or '.join(FC_NAMES)} "
            "there (W [classes, width], b [classes]), or train one with fc: probe"
        )


def read_feature_rows(path: Path) -> np.ndarray:
    """The [N, D] float32 rows of one imported file or feature directory."""
    if path.is_dir():
        return load_features(path, logits=False).features
    if not path.exists():
        raise DataError(f"{path}: imported features not found; put the file there and rerun")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise DataError(f"{path}: not a plain NPY array ({err}); save it with np.save") from err
    elif path.suffix == ".pt":
        array = _torch_array(path)
    else:
        array = load_pickle(path)
    return as_matrix(array, path, "features")


def _torch_array(path: Path) -> np.ndarray:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise DataError(f"{path}: not a weights-only torch file ({err})") from err
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: expected one tensor [rows, width], found {type(value).__name__}")
    return value.detach().float().numpy()


def read_fc(path: Path) -> Linear:
    """An imported classifier: fc.safetensors (oodbench's own), ``[W, b]`` pickle, or an
    NPZ / torch file with ``weight`` and ``bias``."""
    if path.suffix == ".safetensors":
        from oodbench.formats.classifier import load_fc

        return load_fc(path)
    if path.suffix == ".pkl":
        pair = load_pickle(path)
        if not isinstance(pair, list) or len(pair) != 2:
            raise DataError(f"{path}: expected the list [W, b], found {type(pair).__name__}")
        weight, bias = pair
    else:
        tensors = _named_arrays(path)
        missing = [k for k in ("weight", "bias") if k not in tensors]
        if missing:
            raise DataError(
                f"{path}: no {missing[0]!r} array; expected 'weight' [classes, width] and "
                f"'bias' [classes], found {sorted(tensors)}"
            )
        weight, bias = tensors["weight"], tensors["bias"]
    weight = as_matrix(weight, path, "W")
    bias = as_matrix(bias, path, "b", ndim=1)
    if bias.shape != (weight.shape[0],):
        raise DataError(f"{path}: W{weight.shape} and b{bias.shape} disagree on the class count")
    return Linear(weight=weight, bias=bias, class_names=[str(c) for c in range(len(bias))])


def _named_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable NPZ file ({err})") from err
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise DataError(f"{path}: not a weights-only torch file ({err})") from err
    if not isinstance(value, dict):
        raise DataError(
            f"{path}: expected a dict with 'weight' and 'bias', found {type(value).__name__}"
        )
    return {k: v.detach().float().numpy() for k, v in value.items() if isinstance(v, torch.Tensor)}


def import_dataset(
    backbone: str,
    dataset: str,
    source: Path,
    fc_file: Path | None,
    manifest: Path,
    out: Path,
) -> int:
    """Stage ``import-<ds>``: `source`'s rows -> the feature directory `out`, labels and
    paths from the dataset's manifest (row i = manifest row i); returns the row count."""
    from oodbench.formats.manifest import read_manifest

    rows = read_feature_rows(source)
    frame, _ = read_manifest(manifest)
    if len(rows) != len(frame):
        raise DataError(
            f"{source}: {len(rows)} feature rows but datalists/{dataset}.txt lists {len(frame)} "
            "images; row i must be the features of entry i (import the features of this list)"
        )
    if fc_file is not None:
        width = read_fc(fc_file).weight.shape[1]
        if rows.shape[1] != width:
            raise DataError(
                f"{source}: {rows.shape[1]} features per row, but the classifier {fc_file} has "
                f"W of width {width}; import the features the classifier was trained on"
            )
    info = {"backbone": backbone, "dataset": dataset, "imported_from": source.as_posix()}
    with atomic_dir(out) as tmp:
        write_feature_dir(
            tmp,
            info,
            rows,
            frame["label"].to_numpy(np.int64),
            paths=frame["path"].tolist(),
            shard_rows=SHARD_ROWS,
        )
    return len(rows)


def imported_dataset(backbone: str, dataset: str) -> None:
    """Stage ``pipelines/<bb>/dvc.yaml:import-<ds>``, from the resolved model spec."""
    from oodbench.formats import paths
    from oodbench.formats.specs import model_spec, read_spec

    spec = read_spec(model_spec(backbone), f"backbones.{backbone}")
    folder = spec.get("imported")
    if not folder:
        raise ParamsError(
            f"backbones.{backbone}: not an imported backbone ({json.dumps(spec)}); rerun "
            "`oodbench pipeline`"
        )
    fc = fc_source(folder)
    n = import_dataset(
        backbone,
        dataset,
        Path(feature_source(folder, dataset)),
        Path(fc) if fc else None,
        paths.manifest_path(dataset),
        paths.features_dir(backbone, dataset),
    )
    print(f"import {backbone}/{dataset}: {n} rows from {feature_source(folder, dataset)}")
