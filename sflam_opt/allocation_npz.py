"""The columnar allocation file: ``sflam-opt solve --out FILE.npz``.

A numpy ``.npz`` archive (uncompressed, no pickles) holding the document of the JSON allocation
file with its per-device rows as columns: one array per row key (``id``, ``bits``,
``bandwidth_hz``, ``power_w``, and the solve output's ``rate_bps``, ``upload_s``, ``latency_s``,
``energy_j``), each of shape (N,), plus ``document``: the other keys (``scenario_sha256``, the
solver status and totals) as JSON text, with ``"format": "sflam-opt allocation"``. At a million
devices it is written and read in a fraction of a second, where JSON takes seconds: formatting
and parsing text, not the disk, is what JSON costs.

Resource-block allocations (a list of blocks per device) are written as JSON only.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sflam_opt.allocation import _RANGES, Allocation
from sflam_opt.errors import AllocationError
from sflam_opt.io import write_stream
from sflam_opt.jsonio import ColumnRows, finite

__all__ = ["FORMAT", "load_npz", "write_npz"]

#: The ``format`` key of an allocation ``.npz``'s document.
FORMAT = "sflam-opt allocation"
_REWRITE = "write it again with `sflam-opt solve SCENARIO --out FILE.npz`"


def _id_array(ids: Any) -> np.ndarray:
    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    raise AllocationError(
        "ids mix whole numbers and strings, which a .npz column cannot hold; give a .json file"
    )


def write_npz(path: str | os.PathLike[str], rows: ColumnRows, document: dict[str, Any]) -> Path:
    """Write ``document`` with its device ``rows`` as a ``.npz`` allocation (atomically).

    Parameters
    ----------
    path : path-like
        The output file.
    rows : ColumnRows
        The per-device columns; their names become the array names.
    document : dict
        The other keys of the document (JSON-able).

    Returns
    -------
    Path
        ``path``.
    """
    arrays = {
        name: _id_array(col) if name == "id" else np.asarray(col)
        for name, col in zip(rows.names, rows.columns, strict=True)
    }
    meta = {"format": FORMAT, **{k: v for k, v in document.items() if k != "devices"}}
    arrays["document"] = np.array(json.dumps(finite(meta)))
    return write_stream(path, lambda fh: np.savez(fh, allow_pickle=False, **arrays))


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise AllocationError(
            f"{path}: not a readable .npz allocation ({reason}); {_REWRITE}"
        ) from None
    text = arrays.pop("document", None)
    try:
        doc = json.loads(str(text[()])) if text is not None and text.shape == () else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AllocationError(f"{path}: not an sflam-opt allocation .npz (no document); {_REWRITE}")
    return doc, arrays


def _column(path: Path, arrays: dict[str, np.ndarray], key: str, n: int | None) -> np.ndarray:
    arr = arrays.get(key)
    if arr is None:
        raise AllocationError(f"{path}: missing column {key!r}; {_REWRITE}")
    if arr.ndim != 1 or (n is not None and arr.size != n):
        raise AllocationError(
            f"{path}: column {key!r} has shape {arr.shape}, expected ({n if n else 'N'},); "
            f"{_REWRITE}"
        )
    if key == "id":
        if arr.dtype.kind not in "iuU":
            raise AllocationError(f"{path}: column 'id' holds {arr.dtype}; need ids")
        return arr
    if arr.dtype.kind not in "iuf":
        raise AllocationError(f"{path}: column {key!r} holds {arr.dtype}, not numbers; {_REWRITE}")
    lo, hi = _RANGES[key]
    values = arr.astype(np.float64)
    bad = ~(np.isfinite(values) & (values >= lo) & (values <= hi))
    if key == "bits":
        bad |= values != np.round(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise AllocationError(
            f"{path}: {key}[{k}]: {float(values[k])!r} is not a valid {key} "
            f"(finite{', whole' if key == 'bits' else ''}, in [{lo:g}, {hi:g}])"
        )
    return values.astype(np.int64) if key == "bits" else values


def load_npz(path: str | os.PathLike[str]) -> Allocation:
    """Read a ``.npz`` allocation written by :func:`write_npz`.

    Raises
    ------
    AllocationError
        One line naming the file: not a readable archive (corrupt or truncated), a missing or
        misshapen column, or the first bad value (``bandwidth_hz[k]``).
    """
    p = Path(path)
    doc, arrays = _read(p)
    bits = _column(p, arrays, "bits", None)
    if not bits.size:
        raise AllocationError(f"{p}: no devices")
    bw = _column(p, arrays, "bandwidth_hz", bits.size)
    pw = _column(p, arrays, "power_w", bits.size)
    ids = tuple(_column(p, arrays, "id", bits.size).tolist()) if "id" in arrays else None
    digest = doc.get("scenario_sha256")
    if digest is not None and not isinstance(digest, str):
        raise AllocationError(f"{p}: scenario_sha256: expected a hex string")
    return Allocation(bits, bw, pw, ids, scenario_sha256=digest)
