"""The one builder of the report's markdown: numbers, percentages, tables and figure blocks.

Every section of ``results.md`` formats its values with these functions, so a number reads the
same wherever it appears.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.common import FIGURES

__all__ = ["duration", "figure", "load_note", "made_by", "num", "pct", "table"]


def num(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; '-' for missing or non-finite."""
    if v is None or isinstance(v, str):
        return "-" if v in (None, "") else str(v)
    if isinstance(v, bool):
        return str(v)
    x = float(v)
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "-")
    if x == 0:
        return "0"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    if abs(x) >= 1e-3:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def pct(v: Any, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits."""
    if v is None or not math.isfinite(float(v)):
        return "inf" if v is not None and float(v) > 0 else "-"
    return num(100.0 * float(v), digits) + " %"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def duration(s: float | None) -> str:
    """Seconds as ``12.3 s``, or minutes above two minutes; '-' when unknown."""
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def made_by(command: str, data: Sequence[str]) -> str:
    """The line naming the command that made a result and linking its data files in ``figures/``."""
    files = ", ".join(f"[`{d}`]({FIGURES}/{d})" for d in data)
    return f"Made by: `{command}` &nbsp;·&nbsp; data: {files}"


def figure(name: str, alt: str, command: str, data: Sequence[str]) -> str:
    """A figure of ``figures/`` with the command that made it and links to its data files."""
    return f"![{alt}]({FIGURES}/{name})\n\n" + made_by(command, data)


def load_note(meta: Mapping[str, Any]) -> str:
    """The machine load a section ran under, for its headlines: ``load 1.07 to 1 on 2 cores``.

    From the environment every section records (``meta["machine"]``: the 1-minute load average
    when the section started and ended, and the cores it could use). A load near the core count
    means other processes competed for the CPU and wall times overstate an idle machine's.
    """
    m = meta.get("machine", {})
    loads = [m.get("load_avg_1m_at_start"), m.get("load_avg_1m")]
    shown = " to ".join(f"{x:g}" for x in loads if x is not None) or "unknown"
    return f"load {shown} on {m.get('usable_cores', '?')} cores"
