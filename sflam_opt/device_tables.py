"""Fast reading of the ``[[device]]`` tables of large scenario files.

A scenario with a million devices is a 100 MB TOML file, and a general TOML parser spends minutes
on it. The device tables written by :meth:`sflam_opt.scenario.Scenario.to_toml` have one fixed
layout, so they can be read column by column with a few regular-expression checks and numpy
conversions instead. :func:`read_device_columns` does this, and returns ``None`` whenever the text
departs from that layout in any way (comments, other key orders, string ids, TOML number forms
such as ``0x10`` or ``1_000``); the caller then parses the whole file with :mod:`tomllib`, so the
result never depends on which path was taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["DeviceColumns", "read_device_columns"]

_HEADER = "[[device]]"
_BLOCK = 7  # "[[device]]", id, gain_db or distance_m, cpu_hz, max_power_w, samples, blank line
_NUMBER_CHARS = str.maketrans("", "", "0123456789+-.eE\n")
_INT_CHARS = str.maketrans("", "", "0123456789+-\n")
# Forms float() reads but TOML forbids: leading zeros, a dot without digits on both sides. One
# regular expression over the newline-framed column: re scans for its first characters at memory
# speed, where a substring test per form (36 scans) took most of the time of reading the file.
_NOT_TOML = re.compile(r"\n[+-]?(?:0[0-9]|\.)|\.(?:\n|[eE])")


@dataclass(frozen=True)
class DeviceColumns:
    """Raw device columns, shape (N,) each; not yet range-checked.

    ``gain_db`` is NaN where a device gave ``distance_m`` and vice versa.
    """

    ids: tuple[int, ...]
    gain_db: NDArray[np.float64]
    distance_m: NDArray[np.float64]
    cpu_hz: NDArray[np.float64]
    max_power_w: NDArray[np.float64]
    samples: NDArray[np.float64]


def _column(lines: list[str], prefixes: tuple[str, ...], chars: dict[int, None]) -> str | None:
    """The values of ``lines`` (each ``prefix + value``) joined by newlines, or None if a line
    has another prefix or a value is not a plain TOML decimal number."""
    joined = "\n" + "\n".join(lines)
    if sum(joined.count("\n" + p) for p in prefixes) != len(lines):
        return None
    for p in prefixes:
        joined = joined.replace("\n" + p, "\n")
    values = joined[1:]
    framed = f"\n{values}\n"
    if values.translate(chars) or _NOT_TOML.search(framed):
        return None
    return values


def _floats(values: str) -> NDArray[np.float64] | None:
    try:
        return np.array(values.split("\n"), dtype=np.float64)
    except ValueError:  # e.g. "1e5e5": the general parser reports it
        return None


def read_device_columns(text: str) -> tuple[str, DeviceColumns] | None:
    """Split scenario TOML into its head and device columns, if the devices use the fixed layout.

    Parameters
    ----------
    text : str
        The whole scenario file.

    Returns
    -------
    (str, DeviceColumns) or None
        The text before the first ``[[device]]`` (to parse with :mod:`tomllib`) and the device
        columns; ``None`` when the fast path does not apply.
    """
    start = text.find("\n" + _HEADER + "\n")
    if start < 0:
        return None
    head, body = text[: start + 1], text[start + 1 :]
    lines = body.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    lines.append("")
    if len(lines) % _BLOCK:
        return None
    headers = lines[0::_BLOCK]
    if headers.count(_HEADER) != len(headers) or any(lines[_BLOCK - 1 :: _BLOCK]):
        return None
    ids = _column(lines[1::_BLOCK], ("id = ",), _INT_CHARS)
    loc = _column(lines[2::_BLOCK], ("gain_db = ", "distance_m = "), _NUMBER_CHARS)
    cpu = _column(lines[3::_BLOCK], ("cpu_hz = ",), _NUMBER_CHARS)
    pmax = _column(lines[4::_BLOCK], ("max_power_w = ",), _NUMBER_CHARS)
    samples = _column(lines[5::_BLOCK], ("samples = ",), _NUMBER_CHARS)
    if ids is None or loc is None or cpu is None or pmax is None or samples is None:
        return None
    id_list = ids.split("\n")
    if max(map(len, id_list)) > 30:  # huge ids: leave them to the general parser
        return None
    arrays = [_floats(v) for v in (loc, cpu, pmax, samples)]
    if any(a is None for a in arrays):
        return None
    loc_v, cpu_v, pmax_v, samples_v = arrays
    is_gain = np.array([line[0] == "g" for line in lines[2::_BLOCK]], dtype=bool)
    columns = DeviceColumns(
        ids=tuple(map(int, id_list)),
        gain_db=np.where(is_gain, loc_v, np.nan),
        distance_m=np.where(is_gain, np.nan, loc_v),
        cpu_hz=cpu_v,
        max_power_w=pmax_v,
        samples=samples_v,
    )
    return head, columns
