"""Argument checks shared by every constructor: one copy of each rule.

Each raises :class:`~aiopay_auth.ConfigError` naming the field (``what``),
and shows a value only as its type name, never the value itself: a
misplaced argument may be a credential.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from .exceptions import ConfigError


__all__ = ["callable_or_none", "count", "instance_of", "number", "type_name", "wait_bound"]

_T = TypeVar("_T")


def type_name(value: object) -> str:
    """The name of *value*'s type: how a wrong value is shown (never the value)."""
    return type(value).__name__


def instance_of(what: str, value: object, types: type[_T] | tuple[type[_T], ...]) -> _T:
    """Return *value* if it is an instance of *types*, else raise ConfigError naming *what*."""
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        msg = f"{what} must be a {names}, not a {type_name(value)}"
        raise ConfigError(msg)
    return value


def number(what: str, value: object, *, positive: bool = True) -> float:
    """A finite real number (an int or a float, not a bool), positive unless told.

    Raises:
        ConfigError: Naming *what*, for any other type, NaN, an infinity,
            or a value not above zero when *positive*.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{what} must be a number (an int or a float), not a {type_name(value)}"
        raise ConfigError(msg)
    if not math.isfinite(value):
        msg = f"{what} must be a finite number, not {value!r}"
        raise ConfigError(msg)
    if positive and not value > 0:
        msg = f"{what} must be positive, not {value!r}"
        raise ConfigError(msg)
    return float(value)


def count(what: str, value: object, *, minimum: int) -> int:
    """An int (not a bool) of at least *minimum*, else ConfigError naming *what*."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what} must be an int, not a {type_name(value)}"
        raise ConfigError(msg)
    if value < minimum:
        msg = f"{what} must be at least {minimum}, not {value!r}"
        raise ConfigError(msg)
    return value


def callable_or_none(what: str, value: object) -> Callable[..., object] | None:
    """*value* if it is callable or ``None``, else ConfigError naming *what*."""
    if value is not None and not callable(value):
        msg = f"{what} must be callable, not a {type_name(value)}"
        raise ConfigError(msg)
    return value


def wait_bound(what: str, value: object) -> float:
    """Seconds to wait: any int or float but a bool or NaN (zero or less: do not wait, inf: ever).

    Raises:
        ConfigError: Naming *what*, for any other type or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{what} must be a number of seconds, not a {type_name(value)}"
        raise ConfigError(msg)
    if math.isnan(value):
        msg = f"{what} must be a number of seconds, not NaN"
        raise ConfigError(msg)
    return float(value)
