"""Argument checks shared by every public entry point.

Each check returns the value converted to a plain Python type, or raises the given
:class:`~sflam_opt.errors.SflamError` subclass with a one-line message of the form
``name=value: need ...``, so that the CLI can print it as is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sflam_opt.errors import SflamError

__all__ = ["check_flag", "check_int", "check_real", "is_flag", "is_int", "is_real"]


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` (which Python counts as int)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for Python and numpy integers and floats, False for ``bool``."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def is_flag(value: Any) -> bool:
    """True for ``True``/``False`` (Python or numpy)."""
    return isinstance(value, bool | np.bool_)


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[SflamError] = SflamError,
    hint: str = "",
) -> int:
    """Return ``value`` as ``int`` if it is a whole number in ``[minimum, maximum]``.

    Parameters
    ----------
    value : Any
        The value to check; ``bool`` is rejected.
    name : str
        The argument or field name used in the message.
    minimum, maximum : int, optional
        Inclusive bounds.
    error : type of SflamError
        The exception class raised.
    hint : str
        Appended to the message, e.g. ``", e.g. 50"``.
    """
    ok = is_int(value)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        raise error(f"{name}={value!r}: need a whole number{_range(minimum, maximum)}{hint}")
    return int(value)


def check_real(
    value: Any,
    name: str,
    *,
    lower: float | None = None,
    upper: float | None = None,
    open_lower: bool = False,
    open_upper: bool = False,
    error: type[SflamError] = SflamError,
    hint: str = "",
) -> float:
    """Return ``value`` as a finite ``float`` inside the given interval.

    ``lower``/``upper`` are inclusive unless ``open_lower``/``open_upper`` is set. Non-finite
    values and ``bool`` are rejected.
    """
    try:
        ok = is_real(value) and math.isfinite(float(value))
    except OverflowError:  # an integer beyond float's range
        ok = False
    if ok and lower is not None:
        ok = float(value) > lower if open_lower else float(value) >= lower
    if ok and upper is not None:
        ok = float(value) < upper if open_upper else float(value) <= upper
    if not ok:
        if lower is not None and upper is not None:
            rng = (
                f" in {'(' if open_lower else '['}{lower:g}, {upper:g}{')' if open_upper else ']'}"
            )
        else:
            rng = _range(lower, upper, open_lower, open_upper)
        raise error(f"{name}={value!r}: need a finite number{rng}{hint}")
    return float(value)


def check_flag(
    value: Any, name: str, *, error: type[SflamError] = SflamError, hint: str = ""
) -> bool:
    """Return ``value`` as ``bool`` if it is ``True`` or ``False``."""
    if not is_flag(value):
        raise error(f"{name}={value!r}: need True or False{hint}")
    return bool(value)


def _range(
    lower: float | None, upper: float | None, open_lower: bool = False, open_upper: bool = False
) -> str:
    parts = []
    if lower is not None:
        parts.append(f"{'>' if open_lower else '>='} {lower:g}")
    if upper is not None:
        parts.append(f"{'<' if open_upper else '<='} {upper:g}")
    return (" " + " and ".join(parts)) if parts else ""
