"""Checks of public arguments: one place for the rules and the wording of the errors.

Each check names the argument and its allowed values, accepts numpy scalars as Python numbers do,
and refuses bools and strings where a number is meant (`classes=True`, `classes='10'`).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}" if isinstance(lo, int) and isinstance(hi, int) else f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """`value` as an int within [lo, hi]; a ValueError naming `name` otherwise."""
    what = "a positive integer" if lo == 1 and hi is None else f"an integer{_range(lo, hi)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {what}; got {value!r} ({type(value).__name__}).")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {what}; got {value}.")
    return value


def number(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """`value` as a finite float within [lo, hi]; a ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{_range(lo, hi)}; got {value!r}.")
    value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be a number{_range(lo, hi)}; got {value}.")
    return value


def boolean(name: str, value: Any) -> bool:
    """`value` if it is a bool (numpy's included); a ValueError naming `name` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


def choice(name: str, value: Any, options: Iterable) -> Any:
    """`value` if it is one of `options`; a ValueError listing them otherwise."""
    options = list(options)
    if not any(value is o or (type(value) is type(o) and value == o) for o in options):
        raise ValueError(f"{name} must be one of {options!r}; got {value!r}.")
    return value


def optional_str(name: str, value: Any, what: str) -> str | None:
    """None or a non-empty string (a path or a name); a ValueError naming `name` otherwise."""
    if value is None:
        return None
    if hasattr(value, "__fspath__"):
        value = str(value.__fspath__())
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be None or {what}; got {value!r} ({type(value).__name__}).")
    return value
