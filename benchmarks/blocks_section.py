"""``python -m benchmarks blocks``: resource-block matching against exact and the baselines.

The measurements are :func:`benchmarks.blocks.small_cases` and :func:`benchmarks.blocks.ladder`
(see that module for the setup); this module runs them at the profile's sizes for results.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import blocks
from benchmarks.common import BenchContext, utc_now

__all__ = ["draw", "headlines", "report", "run"]

#: Small cases and ladder sizes per profile.
PLANS: dict[str, tuple[int, tuple[str, ...]]] = {
    "all": (60, blocks.DEFAULT_LADDER),
    "quick": (8, ("10x25",)),
}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure and write ``figures/blocks.json`` (the rendered tables and the setup)."""
    started, started_utc = time.perf_counter(), utc_now()
    cases, sizes = PLANS.get(ctx.profile.name, PLANS["quick"])
    ctx.progress("blocks: small cases against exact", 0.0)
    small = blocks.small_cases(cases)
    ctx.progress("blocks: speed ladder", 0.5)
    speed = blocks.ladder(sizes)
    ctx.progress("blocks", 1.0)
    doc = {
        "meta": ctx.meta("blocks", started, started_utc),
        "cases": cases,
        "ladder": list(sizes),
        "small_cases": small,
        "speed": speed,
    }
    ctx.json("blocks", doc)
    return doc


def draw(figures: Path) -> list[Path]:
    """No figure: the section is two tables."""
    return []


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown of the resource-block section (``docs/formulation.md`` §10)."""
    return [
        "## Resource blocks",
        "",
        *doc["small_cases"],
        "",
        "Speed ladder of `bcd` (default devices, seed 0; wall and process CPU time):",
        "",
        *doc["speed"],
        "",
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The largest ladder size's time."""
    last = doc["speed"][-1].split("|")
    return [f"Resource blocks: `bcd` solves {last[1].strip()} in {last[2].strip()} s wall."]
