"""A user's own method: its class loaded from the project, its errors as one line.

``methods.<key>.method: path/file.py:ClassName`` names a class in the user's project
(oodbench/core/usercode.py imports the file). It must be a dataclass subclassing
``oodbench.Detector`` that defines ``_score``; it needs no registration, and it is
refused in one line naming the key otherwise. An exception raised inside it while it is
built, fitted or scored becomes one line naming the params key and the user's
``file.py:LINE`` (``OODBENCH_DEBUG=1`` prints the traceback too), while a built-in
method's exceptions keep their traceback: there they are a bug of this package.

This module does not import base.py (which imports it): the detector base class is
passed in, and detectors are read through their ``name`` and ``params_key`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from oodbench.core.errors import OodbenchError, ParamsError
from oodbench.core.usercode import CodeRef, UserCodeError, describe, is_reference, load

DEBUG_HINT = "OODBENCH_DEBUG=1 prints the traceback"


def user_class(reference: str, where: str, root: Path | None, base: type) -> type:
    """The class ``methods.<key>.method`` names (`where` is ``methods.<key>``), imported
    from the project at `root` (default: the working directory) and checked."""
    key = f"{where}.method"
    ref = CodeRef.parse(reference, key)
    found = load(ref, root or Path(), key)
    problem = not_a_detector(found, base)
    if problem is not None:
        raise ParamsError(f"params.yaml: {key}: {ref}: {problem}")
    found.name = str(ref)  # what the method spec records, and the score stage loads again
    return found


def not_a_detector(found: Any, base: type) -> str | None:
    """Why `found` cannot serve as a method class (`base`: ``Detector``), or None."""
    if not isinstance(found, type):
        return (
            f"is a {type(found).__name__}, not a class; name a class that subclasses "
            "oodbench.Detector (docs/extending.md)"
        )
    if found is base or not issubclass(found, base):
        return (
            f"class {found.__name__} is not a subclass of oodbench.Detector; write "
            f"`class {found.__name__}(Detector)` with `from oodbench import Detector`"
        )
    if "__dataclass_fields__" not in vars(found):
        return (
            f"class {found.__name__} is not a dataclass; decorate it with @dataclass "
            "(its fields are its hyperparameters)"
        )
    if found._score is base._score and found.score is base.score:
        return (
            f"class {found.__name__} defines no _score(self, features, logits), the method "
            "that returns one score per row"
        )
    return None


def code_group(key: str, method: str) -> str:
    """The code digest (``build/specs/code/<group>.json``) of ``methods.<key>``'s score
    stages: ``score-<name>`` for a registered method, shared by every key that runs it;
    ``score-user-<key>`` for a user's own class, whose file and imports it adds."""
    return f"score-user-{key}" if is_reference(method) else f"score-{method}"


@contextmanager
def building(name: str, where: str, root: Path | None) -> Iterator[None]:
    """Around constructing method `name` for params key `where`."""
    try:
        yield
    except OodbenchError:
        raise
    except Exception as err:
        if not is_reference(name):
            raise
        raise UserCodeError(
            f"{where}: building {name} failed: {describe(err, root or Path())} ({DEBUG_HINT})"
        ) from err


def errors_of(detector: Any, action: str) -> AbstractContextManager[None]:
    """Around a call into a detector (``fit``, ``score``): an exception raised inside a
    user's own method becomes one line naming the params key, the user's ``file.py:LINE``
    and the error; a built-in's errors pass unchanged."""
    return _reported(detector, action) if is_reference(detector.name) else nullcontext()


@contextmanager
def _reported(detector: Any, action: str) -> Iterator[None]:
    try:
        yield
    except OodbenchError:
        raise
    except Exception as err:
        raise UserCodeError(
            f"{detector.params_key}: {action} failed in {detector.name}: "
            f"{describe(err, Path())} ({DEBUG_HINT})"
        ) from err
