"""Value checks of hyperparameters, each naming the params key (types are checked already)."""

from __future__ import annotations

import warnings

from oodbench.core.errors import ParamsError


def positive(where: str, key: str, value: float) -> None:
    if not value > 0:
        raise ParamsError(f"{where}.{key}: must be > 0, got {value}")


def fraction(where: str, key: str, value: float | None) -> None:
    """A quantile or fraction in (0, 1]; None (the method's default) passes."""
    if value is not None and not 0.0 < value <= 1.0:
        raise ParamsError(f"{where}.{key}: must be in (0, 1], got {value}")


def percent(where: str, key: str, value: float | None, *, upper_inclusive: bool = False) -> None:
    """A percentile in [0, 100) (or (0, 100] with `upper_inclusive`); None passes."""
    if value is None:
        return
    ok = 0.0 < value <= 100.0 if upper_inclusive else 0.0 <= value < 100.0
    if not ok:
        span = "(0, 100]" if upper_inclusive else "[0, 100)"
        raise ParamsError(f"{where}.{key}: must be in {span}, got {value}")


def at_least(where: str, key: str, value: int | None, low: int, note: str = "") -> None:
    if value is not None and value < low:
        raise ParamsError(f"{where}.{key}: must be >= {low}{note}, got {value}")


class FitWarning(UserWarning):
    """A fit that runs, but on data that makes its answer weaker than the user may think."""


class IllPosedFitWarning(FitWarning):
    """Fewer train rows than the statistic needs (a singular covariance, a principal
    subspace wider than the data): the fit is defined, but partly arbitrary."""


class SmallBankWarning(FitWarning):
    """A default neighbour count was capped at the size of a small bank."""


def warn_fit(warning: type[FitWarning], message: str) -> None:
    """Issue `message` once per process (Python's default filter shows a given message
    once per place), attributed to the caller of ``Detector.fit``."""
    warnings.warn(message, warning, stacklevel=4)
