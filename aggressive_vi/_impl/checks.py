"""Argument checks, in one place so every message reads the same way:
``"<name> must be <expected>; got <what came>"``."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

__all__ = ["positive_int", "positive_int_or_none", "non_negative_int", "positive_float_or_none",
           "non_negative_float", "in_range", "one_of", "has_method", "is_callable", "describe"]


def describe(value: Any) -> str:
    """``repr`` for numbers and strings, the type name for anything else (kept short)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {describe(value)}")
    return value


def positive_int_or_none(name: str, value: Any) -> Optional[int]:
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"{name} must be a positive int or None; got {describe(value)}")
    return value


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> float:
    """A number in the interval from ``low`` to ``high`` (each end closed unless ``*_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}; got {describe(value)}")
    return float(value)


def non_negative_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {describe(value)}")
    return value


def positive_float_or_none(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number or None; got {describe(value)}")
    return float(value)


def non_negative_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number; got {describe(value)}")
    return float(value)


def one_of(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {describe(value)}")
    return value


def has_method(name: str, value: Any, method: str, signature: str) -> Any:
    if not callable(getattr(value, method, None)):
        raise TypeError(f"{name} must have a method {signature}; got {describe(value)}")
    return value


def is_callable(name: str, value: Any, signature: str) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{name} must be callable as {signature}; got {describe(value)}")
    return value
