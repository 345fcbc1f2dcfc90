"""Checking params values against type hints: the typed hyperparameters of every stage."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from oodbench.core.errors import ParamsError


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint `hint`; allow int where float is expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:  # Optional[X]: X's own message says what is wrong inside
            return coerce(key, value, options[0])
        for option in options:
            try:
                return coerce(key, value, option)
            except ParamsError:
                continue
        raise ParamsError(f"{key}: {value!r} is not {_describe(hint)}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ParamsError(f"{key}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if hint is type(None):
        if value is not None:
            raise ParamsError(f"{key}: expected null, got {value!r}")
        return None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        items = [coerce(f"{key}[{i}]", v, item_hint) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


def _describe(hint: Any) -> str:
    names = []
    for option in typing.get_args(hint):
        if typing.get_origin(option) is Literal:
            names.append(" or ".join(repr(v) for v in typing.get_args(option)))
        else:
            names.append(getattr(option, "__name__", str(option)))
    return " or ".join(names)
