"""oodbench: a reproducible OOD-detection benchmark as a DVC pipeline.

One module per pipeline stage (materialize, extract, fc, score, evaluate, report) and
the small libraries they share (errors, atomic, store, params, metrics, methods/).

The names a user's own method needs are exported here (``from oodbench import
Detector, FitData, FeatureSet, NotFittedError, ParamsError``; docs/extending.md). They are imported on first access, so that
``import oodbench`` (which every stage and command does) stays as light as before;
they are named as strings, not imported here, so that the import closure of every stage
(oodbench/pipeline/closure.py, which reads import statements) does not grow by them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: name -> the module that defines it
_EXPORTS = {
    "Detector": "oodbench.methods.base",
    "FitData": "oodbench.methods.base",
    "NotFittedError": "oodbench.methods.base",
    "FeatureSet": "oodbench.formats.features",
    "ParamsError": "oodbench.core.errors",
}
__all__ = ["Detector", "FeatureSet", "FitData", "NotFittedError", "ParamsError", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'oodbench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
