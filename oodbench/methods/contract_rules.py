"""The stateless parts of the method contract (oodbench/methods/contract.py): the
seeded synthetic features it runs on, and the rules that judge one result.

The features: C class centres in D dimensions, non-negative like pooled activations, a
random linear classifier near the centres, labelled train and val rows and a scored set
of ID-like and far rows; with variants of the classifier for methods that need more
than W and b (CLIP's text head for mcm, a MOS group head for mos).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal

import numpy as np

from oodbench.core.errors import ParamsError
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.heads.clip_text import CLIP_PROJECTION, CLIP_TEXT
from oodbench.heads.groups import GROUP_OF_CLASS
from oodbench.methods.base import Detector, FitData, from_params


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome: passed True / False, or None when it does not apply."""

    rule: str
    passed: bool | None
    detail: str


@dataclass
class Synthetic:
    """Seeded synthetic features: classifiers to choose from, ID train, val, scored rows."""

    fcs: dict[str, Linear]
    train: FeatureSet
    val: FeatureSet
    rows: np.ndarray  # the scored set [N, D]: ID-like rows, then far rows
    notes: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        c, d = self.fcs["plain"].weight.shape
        return (
            f"{c} classes, D={d}, {len(self.train)} train / {len(self.val)} val / "
            f"{len(self.rows)} scored rows"
        )


def synthetic(
    seed: int = 0,
    classes: int = 6,
    dim: int = 32,
    train: int = 480,
    val: int = 120,
    rows: int = 400,
) -> Synthetic:
    """Features drawn from `classes` centres (ReLU'd), a random linear classifier near
    the centres, and variants of it for methods that need more than W and b: one with
    CLIP's projection and text embeddings (mcm), one MOS group head (two groups)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))

    def draw(n: int, labelled: bool) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % classes
        x = rng.normal(size=(n, dim)) + 0.5 + (2.0 * centres[labels] if labelled else 0.0)
        return np.maximum(x, 0).astype(np.float32), labels.astype(np.int64)

    names = [f"class{c}" for c in range(classes)]
    weight = (0.5 * centres + 0.1 * rng.normal(size=centres.shape)).astype(np.float32)
    bias = rng.normal(0, 0.1, classes).astype(np.float32)
    plain = Linear(weight, bias, names)
    text = rng.normal(size=(classes, 16))
    clip = Linear(
        weight,
        bias,
        names,
        extras={
            CLIP_PROJECTION: rng.normal(size=(dim, 16)).astype(np.float32),
            CLIP_TEXT: (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32),
        },
    )
    groups = np.arange(classes) % 2  # two groups; the head has one "others" output each
    order = np.argsort(groups, kind="stable")
    head = rng.normal(0, 0.5, size=(classes + 2, dim)).astype(np.float32)
    mos = Linear(
        head,
        np.zeros(classes + 2, np.float32),
        [f"out{i}" for i in range(classes + 2)],
        extras={GROUP_OF_CLASS: groups[order].astype(np.int64)},
    )
    x_train, y_train = draw(train, True)
    x_val, y_val = draw(val, True)
    near, _ = draw(rows // 2, True)
    far, _ = draw(rows - rows // 2, False)
    return Synthetic(
        fcs={"plain": plain, "clip": clip, "mos": mos},
        train=FeatureSet("train", x_train, y_train, np.arange(train)),
        val=FeatureSet("val", x_val, y_val, np.arange(val)),
        rows=np.concatenate([near, far]),
        notes={"clip": "a CLIP text head", "mos": "a MOS group head"},
    )


def arrays_of(data: FitData) -> dict[str, np.ndarray]:
    """The arrays fit() is given, by the name a message uses."""
    assert data.train is not None and data.val is not None
    return {
        "FitData.fc.weight": data.fc.weight,
        "FitData.fc.bias": data.fc.bias,
        "FitData.train.features": data.train.features,
        "FitData.train.labels": data.train.labels,
        "FitData.val.features": data.val.features,
        "FitData.val.labels": data.val.labels,
    }


def changed_array(before: np.ndarray, after: np.ndarray) -> bool:
    return before.shape != after.shape or not np.array_equal(before, after, equal_nan=True)


def largest_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b| where both are numbers (NaN pairs are compared apart)."""
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(np.abs(a - b), initial=0.0))


def shape_rule(raw: Any, n: int) -> RuleResult:
    try:
        array = np.asarray(raw)
    except Exception as err:
        return RuleResult("shape", False, f"score() returned {type(raw).__name__}: {err}")
    if array.shape != (n,):
        return RuleResult(
            "shape",
            False,
            f"score() returned shape {array.shape} for {n} rows; return one float per row, "
            f"shape ({n},)",
        )
    if not np.issubdtype(array.dtype, np.floating):
        return RuleResult(
            "shape",
            False,
            f"score() returned dtype {array.dtype}; return floats (float32 or float64)",
        )
    return RuleResult("shape", True, f"[{n}] {array.dtype}")


def finite_rule(scores: np.ndarray) -> RuleResult:
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        return RuleResult(
            "finite",
            False,
            f"{bad.size} of {scores.size} scores are NaN/Inf (rows {bad[:10].tolist()})",
        )
    return RuleResult("finite", True, "every score is finite")


def inputs_rule(changed: list[str]) -> RuleResult:
    if changed:
        return RuleResult(
            "inputs",
            False,
            f"modified in place: {', '.join(changed)}; work on a copy (x = x.copy()) or "
            "write new arrays",
        )
    return RuleResult("inputs", True, "fit() and score() leave their input arrays unchanged")


def wrong_value(hint: Any) -> tuple[bool, Any]:
    """(True, a value of the wrong type for `hint`), or (False, None) when any value fits."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        return wrong_value(options[0]) if len(options) == 1 else (False, None)
    if origin is Literal:
        return True, "not-one-of-the-choices"
    if hint in (float, int):
        return True, "not-a-number"
    if hint is bool:
        return True, "yes"
    if hint is str:
        return True, 3.5
    if origin in (list, tuple):
        return True, "not-a-list"
    return False, None


def hyperparameter_rule(
    key: str, block: dict[str, Any] | None, root: Path | None, cls: type[Detector]
) -> RuleResult:
    """An unknown key and a wrongly typed value of each field must be refused by name."""
    block = dict(block or {})
    failures, unchecked = [], []
    hints = typing.get_type_hints(cls)
    probes: list[tuple[str, Any]] = [("not_a_hyperparameter", 1)]
    for f in cls.hyperparameter_fields():
        known, value = wrong_value(hints.get(f.name, Any))
        if known:
            probes.append((f.name, value))
        else:
            unchecked.append(f.name)
    for name, value in probes:
        where = f"methods.{key}.{name}"
        try:
            from_params(key, {**block, name: value}, root)
        except ParamsError as err:
            if where not in str(err):
                failures.append(f"{name}={value!r} refused without naming {where}: {err}")
            continue
        except Exception as err:
            failures.append(f"{name}={value!r} raised {type(err).__name__}, not a ParamsError")
            continue
        failures.append(f"{name}={value!r} accepted")
    if failures:
        return RuleResult(
            "hyperparameters",
            False,
            "; ".join(failures) + " (type-hint every field; call super().__post_init__())",
        )
    note = f"; not checked (no type the check knows): {', '.join(unchecked)}" if unchecked else ""
    return RuleResult(
        "hyperparameters",
        True,
        f"an unknown key and {len(probes) - 1} wrongly typed value(s) are refused by name{note}",
    )
