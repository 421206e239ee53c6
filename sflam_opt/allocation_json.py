"""The JSON allocation file (``sflam-opt solve --out FILE.json``), read a chunk of rows at a time.

Rows are decoded a few megabytes at a time and checked with numpy a chunk at a time, so memory
stays bounded by the result for any number of devices; only a chunk that fails a check is walked
row by row, to name the first bad row and field. The columnar twin is :mod:`allocation_npz`.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import _RANGES, Allocation, check_block_lists
from sflam_opt.errors import AllocationError
from sflam_opt.jsonio import JsonReadError, read_json_streamed
from sflam_opt.validation import is_real

__all__ = ["from_document", "load_json"]

_GET_ID = itemgetter("id")

_NOT_AN_ALLOCATION = (
    'expected a JSON object with a "devices" list (as written by `sflam-opt solve --out`)'
)


def load_json(text: IO[str], source: str) -> Allocation:
    """Read a JSON allocation a chunk of rows at a time (see :meth:`Allocation.load`)."""
    rows = _RowColumns(source)
    try:
        doc, count = read_json_streamed(text, "devices", rows.add)
    except JsonReadError as exc:
        if exc.reason == "expected a JSON object" and not exc.truncated:
            raise AllocationError(f"{source}: {_NOT_AN_ALLOCATION}") from None
        where = (
            ""
            if exc.row is None
            else f" devices[{exc.row}]" + (f".{exc.field}" if exc.field else "")
        )
        if exc.truncated:
            raise AllocationError(
                f"{source}: the file ends early, inside{where or ' the document'} (line "
                f"{exc.line}); it is truncated: write it again with `sflam-opt solve --out`"
            ) from None
        raise AllocationError(
            f"{source}:{where}{':' if where else ''} invalid JSON at line {exc.line}: {exc.reason}"
        ) from None
    if count is None:
        raise AllocationError(f"{source}: {_NOT_AN_ALLOCATION}")
    return rows.allocation(doc)


def from_document(data: Any, source: str) -> Allocation:
    """The allocation of a decoded JSON document (see :meth:`Allocation.from_dict`)."""
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        raise AllocationError(f"{source}: {_NOT_AN_ALLOCATION}")
    rows = _RowColumns(source)
    rows.add(0, data["devices"])
    return rows.allocation(data)


class _RowColumns:
    """Checks allocation rows a chunk at a time and keeps them as columns.

    A chunk is checked with numpy; only a chunk that fails is walked row by row, to name the
    first bad row and field in the message.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: list[Any] = []
        self.cols: dict[str, list[NDArray[Any]]] = {k: [] for k in _RANGES}
        self.blocks: list[Any] = []
        self.powers: list[Any] = []
        self.any_blocks = False

    def add(self, first: int, rows: list[Any]) -> None:
        """Check and keep ``rows`` (decoded JSON), the first being ``devices[first]``."""
        cols = None
        if all(type(r) is dict for r in rows):
            try:
                cols = _checked_columns({k: list(map(itemgetter(k), rows)) for k in _RANGES})
            except KeyError:
                pass
        if cols is None:  # name the first bad row and field
            for k, row in enumerate(rows):
                _check_row(row, f"{self.source}: devices[{first + k}]")
            cols = {
                "bits": np.array([int(r["bits"]) for r in rows], dtype=np.int64),
                "bandwidth_hz": np.array([float(r["bandwidth_hz"]) for r in rows]),
                "power_w": np.array([float(r["power_w"]) for r in rows]),
            }
        try:
            ids = list(map(_GET_ID, rows))
        except KeyError:
            ids = [r.get("id", first + k) for k, r in enumerate(rows)]
        n = len(rows)
        for key, col in cols.items():
            self.cols[key].append(col)
        self.ids.extend(ids)
        if any(map(_has_blocks, rows)):
            self.any_blocks = True
            self.blocks.extend([r.get("blocks") for r in rows])
            self.powers.extend([r.get("block_power_w") for r in rows])
        else:
            self.blocks.extend([None] * n)
            self.powers.extend([None] * n)

    def allocation(self, doc: dict[str, Any]) -> Allocation:
        source, n = self.source, len(self.ids)
        if not n:
            raise AllocationError(f'{source}: "devices" is empty')
        digest = doc.get("scenario_sha256")
        if digest is not None and not isinstance(digest, str):
            raise AllocationError(f"{source}: scenario_sha256: expected a hex string")
        bits, bw, pw = (np.concatenate(self.cols[k]) for k in _RANGES)
        if not self.any_blocks:
            return Allocation(bits, bw, pw, tuple(self.ids), scenario_sha256=digest)
        has = [
            b is not None or p is not None for b, p in zip(self.blocks, self.powers, strict=True)
        ]
        if not all(has):
            k = has.index(False)
            raise AllocationError(
                f'{source}: devices[{k}]: missing "blocks" and "block_power_w" '
                "(give them for every device or for none)"
            )
        try:
            blk, bpw = check_block_lists(self.blocks, self.powers, n)
        except AllocationError as exc:
            raise AllocationError(f"{source}: {exc}") from None
        return Allocation(bits, bw, pw, tuple(self.ids), blk, bpw, scenario_sha256=digest)


def _checked_columns(values: dict[str, list[Any]]) -> dict[str, NDArray[Any]] | None:
    """The bits, bandwidth_hz and power_w values as arrays, or None if any value fails a check.

    Parameters
    ----------
    values : dict
        The decoded values of each of the three keys, one list each, for the same rows.
    """
    out: dict[str, NDArray[Any]] = {}
    for key, (lo, hi) in _RANGES.items():
        col = values[key]
        if not all(map(_is_real_type, set(map(type, col)))):
            return None  # strings, None, lists, and bools (a subclass of int)
        try:
            arr = np.array(col, dtype=np.float64)
        except OverflowError:  # an integer of hundreds of digits
            return None
        if not np.all(np.isfinite(arr) & (arr >= lo) & (arr <= hi)):
            return None
        if key == "bits":
            if not np.array_equal(arr, np.round(arr)):
                return None
            arr = arr.astype(np.int64)
        out[key] = arr
    return out


def _has_blocks(row: dict[str, Any]) -> bool:
    return "blocks" in row or "block_power_w" in row


def _is_real_type(kind: type) -> bool:
    return issubclass(kind, int | float | np.integer | np.floating) and not issubclass(
        kind, bool | np.bool_
    )


def _check_row(row: Any, where: str) -> None:
    """Raise the one-line error for the first bad value of one row (a dict from JSON)."""
    if not isinstance(row, dict):
        raise AllocationError(f"{where}: expected an object")
    for key in _RANGES:
        if key not in row:
            raise AllocationError(f"{where}: missing key {key!r}")
        v = row[key]
        if not is_real(v):
            raise AllocationError(f"{where}.{key}: expected a finite number, got {_short(v)}")
        lo, hi = _RANGES[key]
        # Compared before float(): an integer of hundreds of digits must not overflow.
        if isinstance(v, float) and not math.isfinite(v) or not lo <= v <= hi:
            raise AllocationError(
                f"{where}.{key}: {_short(v)} is outside the valid range [{lo:g}, {hi:g}]"
            )
    if isinstance(row["bits"], float) and not row["bits"].is_integer():
        raise AllocationError(f"{where}.bits: expected a whole number, got {row['bits']!r}")


def _short(v: Any) -> str:
    """``repr(v)``, cut short for numbers of many digits and long strings."""
    text = repr(v)
    if len(text) <= 30:
        return text
    return f"{text[:8]}... ({len(text)} {'digits' if isinstance(v, int) else 'characters'})"
