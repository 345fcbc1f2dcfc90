"""``oodbench tune BACKBONE METHOD``: hyperparameter search on cached features.

Each detector class declares its grid (``grid`` ClassVar, OpenOOD's sweeps). Every grid
point is fitted and scored from the cached features and classifier, with no
re-extraction: OpenOOD's sweep re-runs inference per point, here a point costs one fit
plus a matrix product.

No test data is touched. ID validation is a seeded hold-out of ID *train* (the
detector is fitted on the rest); OOD validation is ``--ood DATASET`` or
``benchmark.tune_ood``, a dataset with extracted features that is NOT in
``benchmark.ood`` (refused otherwise: tuning on a test set inflates its numbers).
The best point by AUROC (first in grid order on ties) is written into
``methods.<method>`` of params.yaml with a ruamel.yaml round trip that keeps block
style and comments, so the next ``dvc repro`` reruns only that method's stages.
"""

from __future__ import annotations

import io
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages import params as P
from stages.atomic import write_text
from stages.errors import DataError, OodbenchError, ParamsError
from stages.layout import fc_path, features_dir
from stages.methods import FitData, from_params
from stages.metrics import auroc
from stages.oneclass import one_class_of, restrict
from stages.store import FeatureSet, load_fc, load_features


@dataclass
class TuneResult:
    method: str
    ood: str
    points: list[tuple[dict[str, Any], float | None, str]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    best_auroc: float | None = None
    seconds: float = 0.0


def split_holdout(train: FeatureSet, fraction: float, seed: int) -> tuple[FeatureSet, FeatureSet]:
    """(fit rows, held-out ID validation rows): a seeded random split of ID train."""
    if not 0.0 < fraction < 1.0:
        raise ParamsError(f"tune --holdout must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(train))
    n_hold = max(1, round(fraction * len(train)))
    if n_hold >= len(train):
        raise DataError(f"ID train {train.dataset!r} has too few rows ({len(train)}) to hold out")

    def take(rows: np.ndarray) -> FeatureSet:
        rows = np.sort(rows)
        logits = None if train.logits is None else train.logits[rows]
        return FeatureSet(
            train.dataset, train.features[rows], train.labels[rows], train.index[rows], logits
        )

    return take(order[n_hold:]), take(order[:n_hold])


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def tune(
    backbone: str, method: str, ood: str | None = None, holdout: float = 0.2, seed: int = 0
) -> TuneResult:
    """Evaluate every grid point of `method` on (held-out ID train, validation OOD set)."""
    params = P.load_params()
    block = dict(P.get(params, "methods", dict).get(method) or {})
    grid = type(from_params(method, block)).grid
    if not grid:
        raise ParamsError(f"methods.{method}: this method declares no grid to search")
    ood = ood or (params.get("benchmark") or {}).get("tune_ood")
    if not ood:
        raise ParamsError("tune: pass --ood DATASET or set benchmark.tune_ood in params.yaml")
    if ood in P.get(params, "benchmark.ood", list):
        raise ParamsError(
            f"tune: {ood!r} is a test set (listed in benchmark.ood); tune on a dataset that "
            "is not reported, or its numbers are optimistic"
        )
    fc = load_fc(fc_path(backbone))
    train = load_features(
        features_dir(backbone, P.get(params, "benchmark.id_train", str)), backbone=backbone
    )
    fit_rows, id_rows = split_holdout(restrict(train, one_class_of(params)), holdout, seed)
    ood_rows = load_features(features_dir(backbone, ood), backbone=backbone)
    logits = {"id": fc.logits(id_rows.features), "ood": fc.logits(ood_rows.features)}
    result = TuneResult(method=method, ood=ood)
    start = time.perf_counter()
    for point in grid_points(grid):
        try:
            detector = from_params(method, {**block, **point})
            detector.fit(FitData(fc=fc, train=fit_rows, val=id_rows))
            value = auroc(
                detector.score(id_rows.features, logits["id"]),
                detector.score(ood_rows.features, logits["ood"]),
            )
        except OodbenchError as err:  # e.g. k larger than the bank, dim >= D
            result.points.append((point, None, str(err)))
            continue
        result.points.append((point, value, ""))
        if result.best_auroc is None or value > result.best_auroc:
            result.best, result.best_auroc = point, value
    result.seconds = time.perf_counter() - start
    if result.best is None:
        raise DataError(f"tune {method}: every grid point failed; first: {result.points[0][2]}")
    return result


def write_choice(path: Path, method: str, choice: dict[str, Any]) -> None:
    """Set ``methods.<method>.<key>`` in params.yaml, keeping its layout and comments."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=2, offset=0)
    yaml.representer.add_representer(  # keep `null` spelled out, as the file has it
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = yaml.load(path.read_text(encoding="utf-8"))
    methods = data.setdefault("methods", CommentedMap())
    if not isinstance(methods.get(method), dict):
        methods[method] = CommentedMap()
    block = methods[method]
    block.fa.set_block_style()
    for key, value in choice.items():
        block[key] = value.item() if isinstance(value, np.generic) else value
    buf = io.StringIO()
    yaml.dump(data, buf)
    write_text(path, buf.getvalue())


def render(result: TuneResult) -> str:
    lines = [f"tune {result.method}: AUROC on held-out ID train vs {result.ood!r}"]
    for point, value, why in result.points:
        text = ", ".join(f"{k}={v}" for k, v in point.items())
        mark = "  <- best" if point is result.best else ""
        shown = f"{100 * value:7.2f}" if value is not None else f"skipped ({why})"
        lines.append(f"  {text:<28} {shown}{mark}")
    n = len(result.points)
    lines.append(
        f"{n} grid points in {result.seconds:.2f} s from cached features "
        f"({result.seconds / n:.3f} s per point, no re-extraction)"
    )
    return "\n".join(lines) + "\n"
