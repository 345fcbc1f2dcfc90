"""The detector API, in the style of scikit-learn estimators and pytorch-ood detectors.

A detector is a dataclass whose fields are its hyperparameters, with the defaults of
the reference code. Constructing one checks every field against its type hint and
calls ``validate()`` (so ``ReAct(quantile=5.0)`` is refused, not only a params block
saying so); ``fit(data)`` learns from the ID training features and the classifier;
``score(features, logits)`` returns one float per row, higher meaning more
in-distribution, and refuses with :class:`NotFittedError` before ``fit``. Fitted
attributes end in ``_``. Every error names the params key the detector came from
(``params_key``, e.g. ``methods.react_val`` for ``react_val: {method: react}``).

Methods are registered by name, as timm registers models: one module per method,
``oodbench/methods/<name>.py``, whose class carries ``@register("<name>")``. A method
is imported only when it is asked for (:func:`create`), so a score stage imports its
own method's file and nothing of the others; :func:`registry` imports them all.

A researcher's own method lives in their own project, not in this package: a
``methods.<key>`` block names it as ``method: path/file.py:ClassName`` (relative to the
project root), a subclass of :class:`Detector` (``from oodbench import Detector``)
that needs no registration. It is loaded by :func:`lookup` through
oodbench/core/usercode.py and then behaves as a built-in: validated on construction,
scored by the same stage, listed by ``oodbench methods``, checked by
``oodbench check-method`` (oodbench/methods/contract.py). oodbench/methods/usermethod.py
loads it and turns its errors into one line naming the key and the user's file:line.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from oodbench.core.errors import DataError, OodbenchError, ParamsError
from oodbench.core.threads import blas_threads
from oodbench.core.typed import coerce
from oodbench.core.usercode import is_reference
from oodbench.formats.classifier import Linear
from oodbench.formats.features import FeatureSet
from oodbench.methods.usermethod import building, user_class

PACKAGE = "oodbench.methods"
#: modules of this package that hold no method
NOT_METHODS = frozenset({"base", "contract", "contract_rules", "usermethod"})


class NotFittedError(OodbenchError):
    """``score`` was called before ``fit`` (pytorch-ood's RequiresFittingException)."""


@dataclass(frozen=True)
class Precomputed:
    """A part of a fit that its own stage computed ahead into a file, and the fingerprint
    of the inputs (train rows, classifier) the file must record to be used."""

    path: Path
    fingerprint: str

    def current(self) -> bool:
        """Whether the file exists and records this fingerprint (an ``.npz`` with a
        ``fingerprint`` member; only that member is read)."""
        if not self.path.is_file():
            return False
        try:
            with np.load(self.path, allow_pickle=False) as f:
                return str(f["fingerprint"]) == self.fingerprint
        except (OSError, KeyError, ValueError):
            return False


@dataclass
class FitData:
    """What a detector may learn from: the classifier, ID train and (optionally) ID val.

    ``precomputed``: the detector's :attr:`Detector.precomputed` file, current for this
    train set and classifier, which it fits from instead of train (which is then None)."""

    fc: Linear
    train: FeatureSet | None = None
    val: FeatureSet | None = None
    precomputed: Precomputed | None = None

    def require_train(self, where: str) -> FeatureSet:
        if self.train is None:
            raise DataError(
                f"{where} needs the ID training features; set benchmark.id_train in params.yaml"
            )
        return self.train

    def require_val(self, where: str) -> FeatureSet:
        if self.val is None:
            raise DataError(f"{where} needs the ID val features (benchmark.id_val)")
        return self.val


@dataclass
class Detector:
    """Base class. Subclasses are dataclasses; their fields are the hyperparameters."""

    #: the registered name, which is also the module's name; for a user's own class the
    #: ``path/file.py:ClassName`` it was loaded from (set by :func:`lookup`)
    name: ClassVar[str] = ""
    #: what fit() needs besides the classifier: any of "train", "labels", "val"
    requires: ClassVar[frozenset[str]] = frozenset()
    #: why a row's score depends on the rest of its dataset, if it does: such a method
    #: scores whole datasets only (never row blocks, never one image); None: row by row
    per_dataset: ClassVar[str | None] = None
    #: True: the score is a function of the logits alone, so it needs no fit
    logits_only: ClassVar[bool] = False
    #: False: ``_score`` never reads its logits argument (it scores the features, or
    #: logits of its own such as clipped ones), so the score stage passes None instead
    #: of computing x W^T + b for nothing
    reads_logits: ClassVar[bool] = True
    #: False: ``_score`` runs a multi-threaded library of its own (torch or faiss
    #: searches), so the score stage hands it row blocks one after another; True: its
    #: numpy work releases the GIL, and blocks are scored from concurrent threads
    threaded_blocks: ClassVar[bool] = True
    #: the file (under ``features/<bb>/``) of a fit computed ahead by its own stage that
    #: fit() uses instead of reading train when the score stage finds it current
    precomputed: ClassVar[str | None] = None
    #: the hyperparameter grid `oodbench tune` searches (OpenOOD's sweep where it has one)
    grid: ClassVar[dict[str, list[Any]]] = {}
    #: the paper, and the reference code whose numbers the method reproduces
    paper: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    #: the params.yaml key errors name; set by `create` (``methods.<key>``)
    params_key: str = field(default="", kw_only=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.params_key = self.params_key or f"methods.{self.name}"
        hints = typing.get_type_hints(type(self))
        for f in self.hyperparameter_fields():
            where = f"{self.params_key}.{f.name}"
            setattr(self, f.name, coerce(where, getattr(self, f.name), hints[f.name]))
        self.validate()

    @classmethod
    def hyperparameter_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.name != "params_key"]

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.hyperparameter_fields()}

    def validate(self) -> None:
        """Check the hyperparameters' values (types are already checked); raise ParamsError."""

    def unsupported(self, fc: Linear) -> str | None:
        """Why this classifier cannot serve the method (a CLIP text head, a MOS group head
        it lacks), or None. The score stage then skips the method and says why."""
        return None

    def fit(self, data: FitData) -> Detector:
        """Learn from ID train (and the classifier); returns self.

        ``_fit`` runs with one BLAS thread, so that the fit is the same bits whatever
        the thread count (oodbench/methods/shared/threads.py); a fit that makes passes
        over many rows spreads fixed row blocks over threads with ``ordered_map``."""
        self.fc_ = data.fc
        with blas_threads(1):
            self._fit(data)
        return self

    def _fit(self, data: FitData) -> None:
        """What a subclass learns; the base keeps the classifier only."""

    def score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """One score per row of `features` ([N, D]) with its `logits` ([N, C]); higher = ID.

        `logits` are ``fc.logits(features)``, the float32 product of the fitted classifier
        (the score stage computes them once per block of rows); a method may use them
        instead of recomputing them. Methods that do not need them accept None."""
        if not (self.logits_only or hasattr(self, "fc_")):
            raise NotFittedError(
                f"{self.params_key}: {type(self).__name__} is not fitted; call fit() first"
            )
        return self._score(features, logits)

    def _score(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError


_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


def register(name: str) -> Callable[[D], D]:
    """Class decorator: make the detector available under `name` in params.yaml.

    The class must live in ``oodbench/methods/<name>.py``, so that a method's file is
    found from its name (and imported alone); registering a name twice is an error."""

    def wrap(cls: D) -> D:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        if cls.__module__ not in (f"{PACKAGE}.{name}", "__main__"):
            raise ValueError(f"method {name!r} must be defined in {PACKAGE}.{name}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def method_modules() -> list[str]:
    """The names of every method module: each registers the method of its own name."""
    import oodbench.methods as package

    names = (m.name for m in pkgutil.iter_modules(package.__path__))
    return sorted(n for n in names if n not in NOT_METHODS and not n.startswith("_"))


def lookup(name: str, where: str | None = None, root: Path | None = None) -> type[Detector]:
    """The class of method `name`: a registered name, its module imported on first use,
    or a user's own class ``path/file.py:ClassName`` in the project at `root` (default:
    the working directory, which is the project root under DVC and for the CLI)."""
    where = where or f"methods.{name}"
    if is_reference(name):
        return user_class(name, where, root, Detector)
    if name not in _REGISTRY and name in method_modules():
        importlib.import_module(f"{PACKAGE}.{name}")
    if name not in _REGISTRY:
        raise ParamsError(
            f"{where}: unknown method {name!r}; known methods are {', '.join(registry())}, "
            "or your own class as 'path/file.py:ClassName' (docs/extending.md)"
        )
    return _REGISTRY[name]


def registry() -> dict[str, type[Detector]]:
    """Every registered method by name (imports every method module)."""
    for module in method_modules():
        importlib.import_module(f"{PACKAGE}.{module}")
    return dict(sorted(_REGISTRY.items()))


def create(
    name: str,
    params: dict[str, Any] | None = None,
    where: str | None = None,
    root: Path | None = None,
) -> Detector:
    """Build detector `name` from its params block; unknown or missing keys name the key.

    `where` is the params.yaml key the block came from (default ``methods.<name>``);
    `root` the project a user's own class (``path/file.py:Class``) is loaded from."""
    where = where or f"methods.{name}"
    cls = lookup(name, where, root)
    fields = {f.name: f for f in cls.hyperparameter_fields()}
    params = dict(params or {})
    for key in params:
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise ParamsError(f"{where}.{key}: unknown hyperparameter; {name} takes: {allowed}")
    missing = [
        f.name
        for f in fields.values()
        if f.name not in params
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ParamsError(f"{where}.{missing[0]}: required hyperparameter of {name} is not set")
    # a user's own __post_init__ / validate, or type hints that do not resolve: one line
    with building(name, where, root):
        return cls(**params, params_key=where)


def method_of(key: str, block: dict[str, Any] | None) -> str:
    """The method a ``methods.<key>`` block runs: its ``method:`` (a registered name or a
    user's ``path/file.py:Class``), else the key."""
    if block is not None and not isinstance(block, dict):
        raise ParamsError(f"methods.{key}: expected a mapping of hyperparameters, got {block!r}")
    name = (block or {}).get("method", key)
    if not isinstance(name, str):
        raise ParamsError(f"methods.{key}.method: expected a method name, got {name!r}")
    return name


def from_params(key: str, block: dict[str, Any] | None, root: Path | None = None) -> Detector:
    """The detector of params block ``methods.<key>``.

    The block may name a registered method with ``method:``, so one method can run
    under several keys with different settings (``mahalanobis_pp: {method:
    mahalanobis, normalize: true}``), or a user's own class (``method:
    mymethods/cosine.py:CosineToMeans``, loaded from the project at `root`); by
    default the key is the method's name."""
    name = method_of(key, block)
    rest = {k: v for k, v in (block or {}).items() if k != "method"}
    return create(name, rest, where=f"methods.{key}", root=root)
