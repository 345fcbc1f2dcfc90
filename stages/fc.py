"""Stage ``fc``: export the classifier (W, b) every score function works from.

``fc: head`` takes the model's own head; ``fc: probe`` trains a linear probe on the
frozen ID train features (the demo's choice, since its ID classes are not ImageNet's).
"""

from __future__ import annotations

import numpy as np

from stages import params as P
from stages.errors import DataError, ParamsError
from stages.layout import fc_path, features_dir
from stages.probe import ProbeConfig, train_linear_probe
from stages.store import Linear, load_features, save_fc

FC_KINDS = ("head", "probe")


def main(backbone: str) -> None:
    params = P.load_params()
    kind = P.get(params, f"backbones.{backbone}.fc", str)
    if kind == "head":
        from stages.backbones import head_linear

        fc = head_linear(backbone, P.get(params, f"backbones.{backbone}", dict))
        meta = {"source": "head"}
    elif kind == "probe":
        train_name = P.get(params, "benchmark.id_train", str)
        config = ProbeConfig.from_params(P.get(params, "probe", dict))
        train = load_features(features_dir(backbone, train_name), backbone=backbone)
        fc = fit_probe(train.features, train.labels, config, train_name)
        meta = {"source": "probe", "train": train_name, "probe": repr(config)}
    else:
        raise ParamsError(
            f"backbones.{backbone}.fc: unknown classifier {kind!r}; use one of {', '.join(FC_KINDS)}"
        )
    save_fc(fc_path(backbone), fc, meta)
    print(f"fc {backbone}: {kind}, {fc.num_classes} classes x {fc.weight.shape[1]} features")


def fit_probe(
    features: np.ndarray, labels: np.ndarray, config: ProbeConfig, dataset: str
) -> Linear:
    """Train the probe on labelled rows; classes are 0..C-1 and must all be present."""
    known = labels >= 0
    if not known.any():
        raise DataError(f"dataset {dataset!r} has no labels; a probe needs labelled ID train data")
    classes = np.unique(labels[known])
    if not np.array_equal(classes, np.arange(classes.size)):
        raise DataError(
            f"dataset {dataset!r}: probe labels must be 0..C-1 with every class present, got {classes.tolist()}"
        )
    weight, bias = train_linear_probe(features[known], labels[known], classes.size, config)
    return Linear(weight=weight, bias=bias, class_names=[str(c) for c in classes])
