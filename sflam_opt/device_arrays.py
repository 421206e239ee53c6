"""Checks for per-device inputs given in code: vectors, ids and ``{id: dB}`` gain maps.

Used by the :class:`~sflam_opt.scenario.Scenario` helpers for host systems (``from_arrays``,
``select``, ``with_gains``) and by :class:`~sflam_opt.allocator.Allocator`. Every failure is a
one-line :class:`~sflam_opt.errors.ScenarioError` naming the entry.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.errors import ScenarioError
from sflam_opt.numeric import FloatArray
from sflam_opt.scenario_parser import short_number
from sflam_opt.scenario_parts import DEVICE_RANGES
from sflam_opt.validation import is_real

__all__ = [
    "block_gain_rows",
    "device_ids",
    "device_vector",
    "gain_values",
    "id_index",
    "id_positions",
    "valid_range",
]


def valid_range(key: str) -> str:
    """The valid range of a ``[[device]]`` key as text, e.g. ``"[-200, 0] dB"`` (formulation §11)."""
    meta = DEVICE_RANGES[key]
    return f"{'[' if meta['inclusive'] else '('}{meta['min']:g}, {meta['max']:g}] {meta['unit']}"


def _in_range(key: str, value: float | int) -> bool:
    """True if the number ``value`` lies in the valid range of ``key`` (huge integers do not)."""
    try:
        return not bool(_outside(key, np.array([float(value)]))[0])
    except OverflowError:
        return False


def _outside(key: str, values: FloatArray) -> NDArray[np.bool_]:
    """Entries outside the valid range of ``key`` (NaN included), same shape as ``values``."""
    meta = DEVICE_RANGES[key]
    with np.errstate(invalid="ignore"):
        return ~((values >= meta["min"]) & (values <= meta["max"]))


def device_ids(ids: Sequence[Any] | None, n: int) -> tuple[Any, ...]:
    """Checked device ids (whole numbers or strings, unique); ``0 .. n-1`` when None."""
    if ids is None:
        return tuple(range(n))
    out = tuple(int(i) if isinstance(i, np.integer) else i for i in ids)
    if len(out) != n:
        raise ScenarioError(f"from_arrays(): {len(out)} ids for {n} devices")
    for k, did in enumerate(out):
        if isinstance(did, bool) or not isinstance(did, int | str):
            raise ScenarioError(
                f"from_arrays(): ids[{k}] = {did!r}: need a whole number or a string"
            )
    if len(set(out)) != n:
        seen: set[Any] = set()
        dup = next(i for i in out if i in seen or seen.add(i))
        raise ScenarioError(f"from_arrays(): duplicate device id {dup!r}; ids must be unique")
    return out


def device_vector(name: str, value: Any, n: int, *, positive: bool) -> FloatArray:
    """``value`` broadcast to a finite float vector of shape (n,), checked element-wise."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ScenarioError(f"from_arrays(): {name}: need numbers, got {value!r}") from None
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != n):
        raise ScenarioError(f"from_arrays(): {name}: need one value or {n} values, got {arr.shape}")
    arr = np.broadcast_to(arr, (n,)).copy()
    bad = ~np.isfinite(arr) | ((arr <= 0) if positive else False)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        need = "a finite number > 0" if positive else "a finite number"
        raise ScenarioError(f"from_arrays(): {name}[{k}] = {float(arr[k])!r}: need {need}")
    bad = _outside(name, arr)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ScenarioError(
            f"from_arrays(): {name}[{k}] = {float(arr[k])!r}: outside the valid range "
            f"{valid_range(name)} (docs/formulation.md §11)"
        )
    return arr


def id_index(all_ids: Sequence[Any]) -> dict[Any, int]:
    """Map from device id to its position, for repeated :func:`id_positions` look-ups."""
    return {did: i for i, did in enumerate(all_ids)}


def id_positions(
    all_ids: Sequence[Any], ids: Sequence[Any], index: Mapping[Any, int] | None = None
) -> NDArray[np.int64]:
    """Positions of ``ids`` within ``all_ids``, in the order given, shape (len(ids),).

    ``index`` (from :func:`id_index`) saves rebuilding the map on every call.

    Raises
    ------
    ScenarioError
        Naming the first unknown or repeated id.
    """
    index = index if index is not None else id_index(all_ids)
    try:
        # itemgetter looks all ids up in C; it returns a bare value for a single id.
        found = operator.itemgetter(*ids)(index) if len(ids) else ()
        out = np.array(found if len(ids) != 1 else [found], dtype=np.int64)
    except (KeyError, TypeError):
        bad = next(d for d in ids if not _known(index, d))
        raise ScenarioError(f"device id {bad!r}: not in the scenario") from None
    if np.unique(out).size != out.size:
        seen: set[int] = set()
        dup = next(k for k, p in enumerate(out.tolist()) if p in seen or seen.add(p))
        raise ScenarioError(f"device id {ids[dup]!r}: listed twice; ids must be unique")
    return out


def _known(index: Mapping[Any, int], did: Any) -> bool:
    try:
        return did in index
    except TypeError:  # unhashable
        return False


def gain_values(gain_db: Mapping[Any, Any], name: str = "gain_db") -> FloatArray:
    """The values of an ``{id: dB}`` map as a float vector, each finite and in the valid range.

    Raises
    ------
    ScenarioError
        ``"gain_db[id] = value: need a finite number in [-200, 0] dB ..."`` for the first
        entry that is not a number, not finite or outside ``docs/formulation.md`` §11.
    """
    try:
        vals = np.fromiter(gain_db.values(), dtype=np.float64, count=len(gain_db))
        if not _outside("gain_db", vals).any():
            return vals
    except (TypeError, ValueError, OverflowError):
        pass
    for did, g in gain_db.items():
        if not is_real(g) or not _in_range("gain_db", g):
            raise ScenarioError(
                f"{name}[{did!r}] = {short_number(g) if is_real(g) else repr(g)}: need a "
                f"finite number in {valid_range('gain_db')} (docs/formulation.md §11)"
            )
    raise AssertionError("unreachable: a bad gain was not found")  # pragma: no cover


def block_gain_rows(block_gain_db: Mapping[Any, Any], m: int) -> FloatArray:
    """The values of an ``{id: [M dB]}`` map as a float array of shape (len(map), M), checked.

    Raises
    ------
    ScenarioError
        Naming the first entry that is not a list of ``m`` numbers, or a gain that is not finite
        or outside the valid range of ``docs/formulation.md`` §11.
    """
    try:
        rows = np.array(list(block_gain_db.values()), dtype=np.float64)
        if rows.shape == (len(block_gain_db), m) and not _outside("block_gain_db", rows).any():
            return rows
    except (TypeError, ValueError, OverflowError):
        pass
    for did, row in block_gain_db.items():
        where = f"block_gain_db[{did!r}]"
        try:
            arr = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            arr = None
        if arr is None or arr.shape != (m,) or isinstance(row, str | bytes):
            raise ScenarioError(
                f"{where} = {row!r}: need a list of {m} gains in dB, one per resource block"
            )
        bad = _outside("block_gain_db", arr)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ScenarioError(
                f"{where}[{k}] = {float(arr[k])!r}: need a finite number in "
                f"{valid_range('block_gain_db')} (docs/formulation.md §11)"
            )
    raise AssertionError("unreachable: a bad block gain was not found")  # pragma: no cover
