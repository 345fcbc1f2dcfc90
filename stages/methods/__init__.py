"""OOD score functions, one module per method family, all registered by name.

Importing this package imports every family so that :func:`registry` sees them all.
"""

from stages.methods import (  # noqa: F401  (importing registers each family)
    clip,
    gen,
    gradnorm,
    klm,
    knn,
    logits,
    mahalanobis,
    mos,
    react,
    shaping,
    vim,
)
from stages.methods.base import Detector, FitData, create, from_params, register, registry

__all__ = ["Detector", "FitData", "create", "from_params", "register", "registry"]
