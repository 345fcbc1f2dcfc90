"""The detector API: scikit-learn-like estimators with typed hyperparameters and a registry.

A detector is a dataclass whose fields are its hyperparameters (with the defaults of
the reference code). ``fit(data)`` learns whatever it needs from the ID training
features and the classifier; ``score(features, logits)`` returns one float per row,
higher meaning more in-distribution. Detectors are registered by name, as timm
registers models, and built from the ``methods.<name>`` block of params.yaml by
:func:`create`, which rejects unknown keys and wrong types with the key's full name.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from stages.errors import DataError, ParamsError
from stages.store import FeatureSet, Linear
from stages.typed import coerce


@dataclass
class FitData:
    """What a detector may learn from: the classifier, ID train and (optionally) ID val."""

    fc: Linear
    train: FeatureSet | None = None
    val: FeatureSet | None = None

    def require_train(self, method: str) -> FeatureSet:
        if self.train is None:
            raise DataError(
                f"method {method!r} needs the ID training features; set benchmark.id_train "
                "in params.yaml"
            )
        return self.train

    def require_val(self, method: str) -> FeatureSet:
        if self.val is None:
            raise DataError(f"method {method!r} needs the ID val features (benchmark.id_val)")
        return self.val


class Detector:
    """Base class. Subclasses are dataclasses; their fields are the hyperparameters."""

    name: ClassVar[str] = ""
    #: what fit() needs besides the classifier: any of "train", "labels", "val"
    requires: ClassVar[frozenset[str]] = frozenset()
    #: the hyperparameter grid `oodbench tune` searches (OpenOOD's sweep where it has one)
    grid: ClassVar[dict[str, list[Any]]] = {}
    #: set by `create` on the instance: the params.yaml key of the block it came from
    _params_key: ClassVar[str | None] = None

    @property
    def params_key(self) -> str:
        """The params.yaml key errors name: ``methods.<key>`` of the block this detector
        was built from (``react_val: {method: react}`` -> methods.react_val), by default
        ``methods.<registered name>``."""
        return self._params_key or f"methods.{self.name}"

    def fit(self, data: FitData) -> Detector:
        self.fc_ = data.fc
        return self

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}


_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register(name: str) -> Callable[[D], D]:
    """Class decorator: make the detector available under `name` in params.yaml."""

    def wrap(cls: D) -> D:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registry() -> dict[str, type[Detector]]:
    import stages.methods  # noqa: F401  (importing the package registers every family)

    return dict(sorted(_REGISTRY.items()))


def create(name: str, params: dict[str, Any] | None = None, where: str | None = None) -> Detector:
    """Build detector `name` from its params block, validating keys and types.

    `where` is the params.yaml key the block came from (default ``methods.<name>``),
    used in every error message.
    """
    where = where or f"methods.{name}"
    known = registry()
    if name not in known:
        raise ParamsError(f"{where}: unknown method {name!r}; known methods are {', '.join(known)}")
    cls = known[name]
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    hints = typing.get_type_hints(cls) if fields else {}
    kwargs = {}
    for key, value in params.items():
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise ParamsError(f"{where}.{key}: unknown hyperparameter; {name} takes: {allowed}")
        kwargs[key] = coerce(f"{where}.{key}", value, hints[key])
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ParamsError(f"{where}.{missing[0]}: required hyperparameter of {name} is not set")
    detector = cls(**kwargs)
    detector._params_key = where
    check = getattr(detector, "validate", None)
    if check is not None:
        check()
    return detector


def from_params(key: str, block: dict[str, Any] | None) -> Detector:
    """The detector of params block ``methods.<key>``.

    The block may name a registered method with ``method:``, so one method can run
    under several keys with different settings (``mahalanobis_pp: {method:
    mahalanobis, normalize: true}``); by default the key is the method's name.
    """
    if block is not None and not isinstance(block, dict):
        raise ParamsError(f"methods.{key}: expected a mapping of hyperparameters, got {block!r}")
    block = dict(block or {})
    name = block.pop("method", key)
    if not isinstance(name, str):
        raise ParamsError(f"methods.{key}.method: expected a method name, got {name!r}")
    return create(name, block, where=f"methods.{key}")
