"""OOD detectors, one module per method, named after it (``oodbench/methods/<name>.py``).

Importing this package imports no method: :func:`create` imports the one it is asked
for, :func:`registry` all of them (``oodbench methods`` lists them with their papers).
Modules that hold shared math rather than a method say so in their docstring. A user's
own method is a :class:`Detector` subclass in the user's project, named in params.yaml
as ``path/file.py:ClassName`` (base.py :func:`lookup`); contract.py checks any method
against the contract the score stage relies on (``oodbench check-method``).
"""

from oodbench.methods.base import (
    Detector,
    FitData,
    NotFittedError,
    Precomputed,
    create,
    from_params,
    lookup,
    register,
    registry,
)
from oodbench.methods.usermethod import code_group, errors_of

__all__ = [
    "Detector",
    "FitData",
    "NotFittedError",
    "Precomputed",
    "code_group",
    "create",
    "errors_of",
    "from_params",
    "lookup",
    "register",
    "registry",
]
