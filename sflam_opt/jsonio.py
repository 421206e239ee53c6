"""JSON output of documents with one long list (a row per device), written in chunks.

:func:`iter_json` yields the same text as ``json.dumps(finite(doc), indent=1) + "\\n"``, where
``finite`` writes non-finite floats as ``null`` (JSON has no inf or NaN), but encodes the long
list a chunk of rows at a time: no second copy of the whole document is built, and flat rows
of numbers are encoded by the C encoder (``json`` uses its pure-Python encoder whenever
``indent`` is set) and indented by string replacement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

__all__ = ["finite", "iter_json"]

_CHUNK = 20_000
_SENTINEL = "\x00sflam-rows\x00"


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, NaN) replaced by None, recursively."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _flat_rows_text(rows: list[Any], compact: str) -> str | None:
    """Indented text of rows that are flat objects of numbers, from the C encoder's compact text.

    ``json.dumps`` with ``indent`` runs the pure-Python encoder; without it the C one, which is
    many times faster. When no value is a string (every ``"`` is a key's) and nothing is nested,
    braces and ``, "`` only occur as structure, so the indented layout is a few replacements.
    """
    if not all(isinstance(r, dict) and r for r in rows):
        return None
    keys = sum(len(r) for r in rows)
    if compact.count('"') != 2 * keys or compact.count("{") != len(rows) or compact.count("[") != 1:
        return None
    body = compact[1:-1].replace("}, {", "}\x00{")
    body = body.replace('{"', '  {\n   "').replace(', "', ',\n   "').replace("}", "\n  }")
    return body.replace("\x00", ",\n")


def _rows_text(rows: list[Any]) -> str:
    try:
        compact = json.dumps(rows, allow_nan=False)
    except ValueError:  # a non-finite number somewhere in this chunk
        rows = finite(rows)
        compact = json.dumps(rows)
    fast = _flat_rows_text(rows, compact)
    if fast is not None:
        return fast
    text = json.dumps(rows, indent=1)
    # Rows sit one level deeper inside the document than in a bare list.
    return " " + text[2:-2].replace("\n", "\n ")


def iter_json(doc: dict[str, Any], key: str) -> Iterator[str]:
    """Pieces of ``json.dumps(finite(doc), indent=1) + "\\n"``, with ``doc[key]`` in chunks.

    Parameters
    ----------
    doc : dict
        The document; ``doc[key]`` is a list of JSON-able rows.
    key : str
        The key of the long list.

    Yields
    ------
    str
        Consecutive pieces of the JSON text.
    """
    rows = doc.get(key)
    if not isinstance(rows, list) or not rows:
        yield json.dumps(finite(doc), indent=1) + "\n"
        return
    head = json.dumps(finite({**doc, key: _SENTINEL}), indent=1)
    before, after = head.split(json.dumps(_SENTINEL), 1)
    yield before + "[\n"
    for start in range(0, len(rows), _CHUNK):
        if start:
            yield ",\n"
        yield _rows_text(rows[start : start + _CHUNK])
    yield "\n ]" + after + "\n"
