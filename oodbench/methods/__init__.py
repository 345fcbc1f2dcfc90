"""OOD detectors, one module per method, named after it (``oodbench/methods/<name>.py``).

Importing this package imports no method: :func:`create` imports the one it is asked
for, :func:`registry` all of them (``oodbench methods`` lists them with their papers).
Modules that hold shared math rather than a method say so in their docstring.
"""

from oodbench.methods.base import (
    Detector,
    FitData,
    NotFittedError,
    Precomputed,
    create,
    from_params,
    register,
    registry,
)

__all__ = [
    "Detector",
    "FitData",
    "NotFittedError",
    "Precomputed",
    "create",
    "from_params",
    "register",
    "registry",
]
