"""``oodbench tune BACKBONE METHOD``: hyperparameter search on cached features.

Each detector class declares its grid (``grid`` ClassVar, OpenOOD's sweeps). Every grid
point is fitted and scored from the cached features and classifier, with no
re-extraction: OpenOOD's sweep re-runs inference per point, here a point costs one fit
plus a matrix product.

No test data is touched. ID validation comes from ID *train* only: a seeded
permutation of its rows (``--seed``) holds out ``--holdout`` of them and the detector
is fitted on the rest. OOD validation is ``--ood DATASET`` or ``benchmark.tune_ood``, a
dataset with extracted features that is NOT in ``benchmark.ood`` (refused otherwise:
tuning on a test set inflates its numbers).

No grid point is scored on rows it was fitted on. Some detectors also fit on "ID val"
(``FitData.val``: ReAct ``source: val`` takes its clip percentile there, KL-Matching
``templates: val_labels`` its templates), and handing them the rows they are then
evaluated on would let them tune on their own evaluation data. So the held-out rows
are cut in two by the same permutation: the first half is the detector's ID val
(``FitData.val``), the second half (the larger when odd) the ID rows scored for AUROC.
The cut is made for every method, so every method and grid point is evaluated on the
same ID rows, whichever fields it reads.

The block's current setting (its values, the defaults where unset) is scored the same
way first. The best grid point by AUROC (first in grid order among equals) is written
into ``methods.<method>`` of params.yaml only when it beats the current setting: on a tie
the current setting stays and the report says so, since a tie carries no evidence for a
change (on small or easy validation sets every point often reaches the same AUROC). The
write is a ruamel.yaml round trip that keeps block style and comments, so the next
``dvc repro`` reruns only that method's stages.

A class declares one grid; where a block's ``source`` changes which field the detector
reads, ``SOURCE_GRIDS`` holds the grid for that source (ReAct ``source: val`` clips at a
``percentile`` of ID val and refuses ``quantile``, the field its class grid sweeps).
"""

from __future__ import annotations

import io
import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core import params as P
from oodbench.core.errors import DataError, OodbenchError, ParamsError
from oodbench.data.oneclass import one_class_of, restrict
from oodbench.formats.atomic import write_text
from oodbench.formats.classifier import Linear, load_fc
from oodbench.formats.features import FeatureSet, load_features
from oodbench.formats.paths import fc_path, features_dir
from oodbench.methods import FitData, errors_of, from_params
from oodbench.results.fitdata import load_id_set, named
from oodbench.results.metrics import auroc

#: grids decided by a block's ``source`` (method, source) -> grid, where the class grid
#: sweeps a field that source does not read; ReAct source: val: OpenOOD's percentiles
SOURCE_GRIDS: dict[tuple[str, str], dict[str, list[Any]]] = {
    ("react", "val"): {"percentile": [85.0, 90.0, 95.0, 99.0]},
}


@dataclass
class TuneResult:
    method: str
    ood: str
    points: list[tuple[dict[str, Any], float | None, str]] = field(default_factory=list)
    #: the point written to params.yaml; None when the current setting is kept
    best: dict[str, Any] | None = None
    best_auroc: float | None = None
    seconds: float = 0.0
    #: rows of each part of the split (fit, val, evaluate), for the report
    sizes: tuple[int, int, int] = (0, 0, 0)
    #: the block as it is (defaults where unset) and its AUROC (None: it cannot run)
    current: dict[str, Any] = field(default_factory=dict)
    current_auroc: float | None = None
    #: why the result is what it is, for the report
    verdict: str = ""


@dataclass
class Split:
    """Disjoint parts of ID train: what a detector fits on, and what it is scored on."""

    fit: FeatureSet  # FitData.train
    val: FeatureSet  # FitData.val: held out, fitted on by the detectors that read ID val
    evaluate: FeatureSet  # held out, scored as ID; no detector is fitted on these rows


def take(features: FeatureSet, rows: np.ndarray) -> FeatureSet:
    """The given rows of a feature set, in their original order (other fields kept)."""
    rows = np.sort(rows)
    logits = None if features.logits is None else features.logits[rows]
    return replace(
        features,
        features=features.features[rows],
        labels=features.labels[rows],
        index=features.index[rows],
        logits=logits,
    )


def split_rows(train: FeatureSet, fraction: float, seed: int) -> Split:
    """A seeded split of ID train: the held-out `fraction` is halved into val and evaluate."""
    if not 0.0 < fraction < 1.0:
        raise ParamsError(f"tune --holdout must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(train))
    n_hold = max(2, round(fraction * len(train)))  # at least one val and one evaluate row
    if n_hold >= len(train):
        raise DataError(f"ID train {train.dataset!r} has too few rows ({len(train)}) to hold out")
    n_val = n_hold // 2
    return Split(
        fit=take(train, order[n_hold:]),
        val=take(train, order[:n_val]),
        evaluate=take(train, order[n_val:n_hold]),
    )


def search_grid(method: str, block: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid to search for ``methods.<method>``: SOURCE_GRIDS for the block's source,
    else the detector class's own ``grid``."""
    detector = from_params(method, block)
    source = getattr(detector, "source", None)
    override = SOURCE_GRIDS.get((detector.name, source)) if isinstance(source, str) else None
    return override if override is not None else type(detector).grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def tune(
    backbone: str, method: str, ood: str | None = None, holdout: float = 0.2, seed: int = 0
) -> TuneResult:
    """Evaluate every grid point of `method` on (held-out ID train, validation OOD set)."""
    params = P.read_params_file()
    block = dict(P.get(params, "methods", dict).get(method) or {})
    if not search_grid(method, block):
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
    split = split_rows(tune_rows(backbone, fc, params), holdout, seed)
    ood_rows = load_features(features_dir(backbone, ood), backbone=backbone, logits=False)
    return search(method, block, fc, split, ood_rows)


def tune_rows(backbone: str, fc: Linear, params: dict[str, Any]) -> FeatureSet:
    """ID train as the score stage loads it (oodbench/results/fitdata.py): checked, with
    its class names (SHE compares them with predictions), cut to class K in one-class mode."""
    train = load_id_set(backbone, P.get(params, "benchmark.id_train", str), fc)
    return named(restrict(train, one_class_of(params)), train.classes)


def search(
    method: str, block: dict[str, Any], fc: Linear, split: Split, ood_rows: FeatureSet
) -> TuneResult:
    """Fit each grid point on (split.fit, split.val); score split.evaluate against OOD.

    The current setting is scored first; the best point is chosen only if it beats it."""
    grid = search_grid(method, block)
    evaluate = split.evaluate.features
    logits = {"id": fc.logits(evaluate), "ood": fc.logits(ood_rows.features)}
    sizes = (len(split.fit), len(split.val), len(split.evaluate))
    result = TuneResult(method=method, ood=ood_rows.dataset, sizes=sizes)
    start = time.perf_counter()

    def score(point: dict[str, Any]) -> tuple[float | None, str]:
        try:
            detector = from_params(method, {**block, **point})
            with errors_of(detector, "fit"):  # a user's method: one line naming its line
                detector.fit(FitData(fc=fc, train=split.fit, val=split.val))
            with errors_of(detector, "score"):
                value = auroc(
                    detector.score(evaluate, logits["id"]),
                    detector.score(ood_rows.features, logits["ood"]),
                )
        except OodbenchError as err:  # e.g. k larger than the bank, dim >= D
            return None, str(err)
        return value, ""

    current = from_params(method, block).hyperparameters()
    result.current = {k: current[k] for k in grid if k in current}
    result.current_auroc, _ = score({})
    best_point, best_value = None, None
    for point in grid_points(grid):
        value, why = score(point)
        result.points.append((point, value, why))
        if value is not None and (best_value is None or value > best_value):
            best_point, best_value = point, value
    result.seconds = time.perf_counter() - start
    if best_point is None:
        raise DataError(f"tune {method}: every grid point failed; first: {result.points[0][2]}")
    result.best_auroc = best_value
    values = [v for _, v, _ in result.points if v is not None]
    if result.current_auroc is not None and best_value <= result.current_auroc:
        tied = "ties" if best_value == result.current_auroc else "does not beat"
        result.verdict = (
            f"the best grid point {tied} the current setting ({_text(result.current)}, AUROC "
            f"{100 * result.current_auroc:.2f}): methods.{method} is kept as it is"
        )
    else:
        result.best = best_point
        ties = sum(v == best_value for v in values)
        result.verdict = f"best: {_text(best_point)} (AUROC {100 * best_value:.2f})" + (
            f", first in grid order of {ties} equal points" if ties > 1 else ""
        )
    return result


def _text(point: dict[str, Any]) -> str:
    """``k=10, M=50``; an unset value (None) shows as ``default``."""
    shown = (f"{k}={'default' if v is None else v}" for k, v in point.items())
    return ", ".join(shown) or "defaults"


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
    n_fit, n_val, n_eval = result.sizes
    lines = [
        f"tune {result.method}: AUROC on {n_eval} held-out ID train rows vs {result.ood!r} "
        f"(fitted on {n_fit} train rows + {n_val} held-out rows as ID val)"
    ]
    current = (
        f"{100 * result.current_auroc:7.2f}"
        if result.current_auroc is not None
        else "cannot run on these rows"
    )
    lines.append(f"  {'current: ' + _text(result.current):<28} {current}")
    for point, value, why in result.points:
        mark = "  <- best" if point is result.best else ""
        shown = f"{100 * value:7.2f}" if value is not None else f"skipped ({why})"
        lines.append(f"  {_text(point):<28} {shown}{mark}")
    n = len(result.points)
    lines.append(
        f"{n} grid points in {result.seconds:.2f} s from cached features "
        f"({result.seconds / n:.3f} s per point, no re-extraction)"
    )
    lines.append(result.verdict)
    return "\n".join(lines) + "\n"
