"""The contract a method must keep for the score stage, checked on synthetic features.

As scikit-learn's ``check_estimator`` does for estimators, :func:`check_method` runs a
detector, built-in or the user's own (``oodbench check-method KEY``), on seeded
synthetic features and reports one :class:`RuleResult` per rule of :data:`RULES`:

- ``builds``: it builds from its params block;
- ``not_fitted``: ``score`` before ``fit`` raises :class:`NotFittedError`;
- ``fits``: ``fit`` runs on ID train and val with the classifier;
- ``shape``: ``score`` returns an array of shape [N] with a float dtype;
- ``finite``: every score is finite;
- ``deterministic``: a second fit on the same data, and a second ``score`` of the same
  rows, give the same scores bit for bit (the benchmark's results are reproducible);
- ``blocks``: the scores of row blocks, scored as the stage scores them (each block with
  its own logits, concurrently when ``threaded_blocks``), equal the scores of the whole
  set, unless the method declares ``per_dataset``;
- ``inputs``: neither ``fit`` nor ``score`` modifies the arrays it is given;
- ``hyperparameters``: an unknown key, and a value of the wrong type for each
  hyperparameter, are refused with a ParamsError naming ``methods.<key>.<field>``.

Each check calls the detector exactly as oodbench/results/scoring.py does (logits None
when ``reads_logits`` is False), so a method that passes runs there. The synthetic
features and the rules judging one result are in contract_rules.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.core.errors import OodbenchError
from oodbench.core.usercode import describe
from oodbench.formats.classifier import Linear
from oodbench.methods.base import Detector, FitData, NotFittedError, from_params
from oodbench.methods.contract_rules import (
    RuleResult,
    Synthetic,
    arrays_of,
    changed_array,
    finite_rule,
    hyperparameter_rule,
    inputs_rule,
    largest_difference,
    shape_rule,
    synthetic,
)

RULES = (
    "builds",
    "not_fitted",
    "fits",
    "shape",
    "finite",
    "deterministic",
    "blocks",
    "inputs",
    "hyperparameters",
)
#: the row blocks the scored set is cut into: a single row, odd sizes, then the rest
BLOCKS = (1, 7, 64, 100)
#: blocks may differ from the whole by float32 rounding of their own logits, no more
BLOCK_RTOL = 1e-5


def check_method(
    key: str, block: dict[str, Any] | None, root: Path | None = None, data: Synthetic | None = None
) -> list[RuleResult]:
    """Every rule of :data:`RULES` for ``methods.<key>`` (`block`), in order."""
    data = data or synthetic()
    where = root or Path()

    def make() -> Detector:
        return from_params(key, block, root)

    try:
        first = make()
    except OodbenchError as err:
        return [RuleResult("builds", False, str(err))]
    fc = next((f for f in data.fcs.values() if first.unsupported(f) is None), None)
    if fc is None:
        return [RuleResult("builds", False, first.unsupported(data.fcs["plain"]) or "")]
    kind = next(k for k, f in data.fcs.items() if f is fc)
    with_head = f" (scored with {data.notes[kind]})" if kind in data.notes else ""
    results = [RuleResult("builds", True, f"{type(first).__name__}{with_head}")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-bank notes and the like: not the contract's
        results += Run(make, fc, data, where).results()
    results.append(hyperparameter_rule(key, block, root, type(first)))
    return results


class Run:
    """The rules that need a fitted detector, on one classifier and data set."""

    def __init__(self, make: Any, fc: Linear, data: Synthetic, root: Path) -> None:
        self.make, self.fc, self.data, self.root = make, fc, data, root

    def fit_data(self) -> FitData:
        copy = dataclasses.replace
        train, val = self.data.train, self.data.val
        return FitData(
            fc=copy(self.fc, weight=self.fc.weight.copy(), bias=self.fc.bias.copy()),
            train=copy(train, features=train.features.copy(), labels=train.labels.copy()),
            val=copy(val, features=val.features.copy(), labels=val.labels.copy()),
        )

    def score(self, detector: Detector, x: np.ndarray) -> Any:
        logits = self.fc.logits(x) if detector.reads_logits else None
        return detector.score(x, logits)

    def error(self, err: BaseException, action: str) -> str:
        return f"{action} raised {describe(err, self.root)}"

    def results(self) -> list[RuleResult]:
        out = [self.not_fitted()]
        detector, data = self.make(), self.fit_data()
        before = {name: array.copy() for name, array in arrays_of(data).items()}
        try:
            detector.fit(data)
        except Exception as err:
            return [*out, RuleResult("fits", False, self.error(err, "fit()"))]
        out.append(RuleResult("fits", True, "fit() ran on ID train and val"))
        changed = [n for n, a in arrays_of(data).items() if changed_array(before[n], a)]
        x = self.data.rows.copy()
        logits = self.fc.logits(x) if detector.reads_logits else None
        given = {"score's features": x, "score's logits": logits}
        kept = {name: array.copy() for name, array in given.items() if array is not None}
        try:
            raw = detector.score(x, logits)
        except Exception as err:
            return [*out, RuleResult("shape", False, self.error(err, "score()"))]
        changed += [name for name, array in kept.items() if changed_array(array, given[name])]
        shape = shape_rule(raw, len(x))
        out.append(shape)
        if not shape.passed:
            return out
        scores = np.asarray(raw, np.float64)
        out.append(finite_rule(scores))
        out.append(self.deterministic(detector, scores))
        out.append(self.blocks(detector, scores))
        out.append(inputs_rule(changed))
        return out

    def not_fitted(self) -> RuleResult:
        detector = self.make()
        if detector.logits_only:
            return RuleResult("not_fitted", None, "logits_only: the score needs no fit")
        try:
            self.score(detector, self.data.rows[:4].copy())
        except NotFittedError:
            return RuleResult("not_fitted", True, "score() before fit() raises NotFittedError")
        except Exception as err:
            return RuleResult(
                "not_fitted",
                False,
                f"score() before fit() raised {describe(err, self.root)}, not NotFittedError; "
                "implement _score and leave score() to Detector (it raises NotFittedError)",
            )
        return RuleResult(
            "not_fitted",
            False,
            "score() before fit() returned scores instead of raising NotFittedError; "
            "implement _score and leave score() to Detector",
        )

    def deterministic(self, detector: Detector, scores: np.ndarray) -> RuleResult:
        try:
            again = np.asarray(self.score(detector, self.data.rows.copy()), np.float64)
            other = self.make()
            other.fit(self.fit_data())
            refit = np.asarray(self.score(other, self.data.rows.copy()), np.float64)
        except Exception as err:
            return RuleResult("deterministic", False, self.error(err, "a second fit or score"))
        if not np.array_equal(again, scores, equal_nan=True):
            return RuleResult(
                "deterministic",
                False,
                f"scoring the same rows twice gives other scores (largest difference "
                f"{largest_difference(again, scores):.3g}); score() must not change the "
                "fitted state",
            )
        if not np.array_equal(refit, scores, equal_nan=True):
            return RuleResult(
                "deterministic",
                False,
                f"a second fit on the same data gives other scores (largest difference "
                f"{largest_difference(refit, scores):.3g}); seed any randomness "
                "(np.random.default_rng(seed))",
            )
        return RuleResult("deterministic", True, "a second fit and score give identical scores")

    def blocks(self, detector: Detector, scores: np.ndarray) -> RuleResult:
        if detector.per_dataset is not None:
            return RuleResult("blocks", None, f"per_dataset: {detector.per_dataset}")
        x = self.data.rows
        starts = np.cumsum([0, *BLOCKS])
        bounds = [(int(a), int(b)) for a, b in itertools.pairwise(starts)]
        bounds += [(int(starts[-1]), len(x))]

        def one(span: tuple[int, int]) -> np.ndarray:
            block = x[span[0] : span[1]].copy()
            return np.asarray(self.score(detector, block), np.float64).reshape(-1)

        try:
            if detector.threaded_blocks:
                with ThreadPoolExecutor(4) as pool:
                    parts = list(pool.map(one, bounds))
            else:
                parts = [one(span) for span in bounds]
        except Exception as err:
            return RuleResult("blocks", False, self.error(err, "score() of a row block"))
        joined = np.concatenate(parts)
        sizes = ", ".join(str(b - a) for a, b in bounds)
        if joined.shape != scores.shape:
            return RuleResult("blocks", False, f"blocks of {sizes} rows gave {joined.size} scores")
        tolerance = BLOCK_RTOL * max(float(np.nanmax(np.abs(scores), initial=0.0)), 1e-12)
        difference = largest_difference(joined, scores)
        same_nan = np.array_equal(np.isnan(joined), np.isnan(scores))
        if not (same_nan and difference <= tolerance):
            return RuleResult(
                "blocks",
                False,
                f"scores of row blocks ({sizes} rows) differ from the whole set's by up to "
                f"{difference:.3g}: a row's score must not depend on the other rows of its "
                "call (the stage scores blocks of 4096 rows); if it must, set per_dataset",
            )
        return RuleResult("blocks", True, f"blocks of {sizes} rows equal the whole set")


def render(key: str, method: str, data: Synthetic, results: list[RuleResult]) -> str:
    """One line per rule: ``pass`` / ``FAIL`` / ``skip``, the rule and why."""
    lines = [f"check-method {key} ({method}) on synthetic features: {data.describe()}"]
    for result in results:
        mark = {True: "pass", False: "FAIL", None: "skip"}[result.passed]
        lines.append(f"  {mark}  {result.rule:<16} {result.detail}")
    failed = [r.rule for r in results if r.passed is False]
    ran = {r.rule for r in results}
    not_run = [rule for rule in RULES if rule not in ran]
    if failed:
        lines.append(
            f"{len(failed)} rule(s) failed: {', '.join(failed)}"
            + (f"; not run after it: {', '.join(not_run)}" if not_run else "")
        )
    else:
        lines.append(f"{key}: every rule passed")
    return "\n".join(lines) + "\n"
