"""Resource blocks (``docs/formulation.md`` §10): matching quality and speed.

``python -m benchmarks blocks`` runs it at the profile's sizes (:data:`PLANS`) and renders its
section of ``results.md``:

- Small random cases (3 devices x 6 blocks, 729 assignments): ``bcd`` (swap matching) and
  ``fast`` (transfers only) against ``exact``, and ``bcd`` against the ``round-robin`` and
  ``greedy`` baselines (whose round time, water-filling power and bits are optimized too). Case
  ``k`` is ``Scenario.default(3, seed=k)`` with ``with_resource_blocks(..., 6, seed=k)`` and the
  latency weight ``omega`` cycling through 0.1, 0.5, 0.9 and 1.0.
- The speed ladder of ``bcd``: wall and process CPU time of ``solve`` (CPU time is closer to the
  unloaded wall time on a shared machine), ``J`` and the gain over the baselines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, utc_now
from benchmarks.markdown import load_note, made_by
from sflam_opt.blocks import with_resource_blocks
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import solve

__all__ = ["case", "draw", "headlines", "ladder", "report", "run", "small_cases"]

OMEGAS = (0.1, 0.5, 0.9, 1.0)
DEFAULT_LADDER = ("10x25", "50x125", "200x500")


def case(k: int, devices: int = 3, blocks: int = 6) -> Scenario:
    """Small random case ``k``: default devices and Rayleigh block gains drawn with seed ``k``."""
    base = Scenario.default(devices, seed=k)
    scn = with_resource_blocks(base, blocks, seed=k)
    return scn.replace(objective={"latency_weight": OMEGAS[k % len(OMEGAS)]})


def _timed(scn: Scenario, solver: str) -> tuple[float, float, float, str]:
    c0, w0 = time.process_time(), time.perf_counter()
    res = solve(scn, solver)
    return res.objective, time.perf_counter() - w0, time.process_time() - c0, res.status


def small_cases(n_cases: int) -> list[str]:
    """Markdown lines comparing the matching with ``exact`` and the baselines."""
    rows = []
    for k in range(n_cases):
        scn = case(k)
        j = {s: _timed(scn, s) for s in ("exact", "bcd", "fast", "round-robin", "greedy")}
        rows.append({s: v[0] for s, v in j.items()} | {"t_exact": j["exact"][1]})
    ex = np.array([r["exact"] for r in rows])
    out = [
        f"Small cases: {n_cases} random instances of 3 devices x 6 blocks "
        f"(omega cycling through {', '.join(map(str, OMEGAS))}).",
        "",
        "| solver | within 1 % of exact | median gap | worst gap | worse than round-robin |",
        "|---|---|---|---|---|",
    ]
    rr = np.array([r["round-robin"] for r in rows])
    for s in ("bcd", "fast"):
        js = np.array([r[s] for r in rows])
        gap = js / ex - 1.0
        out.append(
            f"| `{s}` | {np.mean(gap <= 0.01):.0%} | {np.median(gap):.3%} | {gap.max():.3%} | "
            f"{int(np.sum(js > rr * (1 + 1e-9)))} of {n_cases} |"
        )
    bcd = np.array([r["bcd"] for r in rows])
    gr = np.array([r["greedy"] for r in rows])
    out += [
        "",
        f"`bcd` lowers J against `round-robin` by {np.median(1 - bcd / rr):.2%} (median; "
        f"max {np.max(1 - bcd / rr):.2%}) and against `greedy` by {np.median(1 - bcd / gr):.2%} "
        f"(median; max {np.max(1 - bcd / gr):.2%}). `exact` takes "
        f"{statistics.median(r['t_exact'] for r in rows):.2f} s wall (median).",
    ]
    return out


def ladder(sizes: Sequence[str]) -> list[str]:
    """Markdown table of ``bcd`` times and gains for ``NxM`` sizes."""
    out = [
        "| devices x blocks | `bcd` wall s | `bcd` CPU s | J `bcd` | J `round-robin` | "
        "J `greedy` | gain over round-robin | gain over greedy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        n, m = (int(x) for x in size.lower().split("x"))
        scn = with_resource_blocks(Scenario.default(n, seed=0), m, seed=0)
        jb, wall, cpu, status = _timed(scn, "bcd")
        jr = _timed(scn, "round-robin")[0]
        jg = _timed(scn, "greedy")[0]
        out.append(
            f"| {n} x {m} | {wall:.2f} | {cpu:.2f} | {jb:.4f} | {jr:.4f} | {jg:.4f} | "
            f"{1 - jb / jr:.2%} | {1 - jb / jg:.2%} |"
        )
    return out


#: Small cases and ladder sizes per profile.
PLANS: dict[str, tuple[int, tuple[str, ...]]] = {
    "all": (60, DEFAULT_LADDER),
    "quick": (8, ("10x25",)),
}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure and write ``figures/blocks.json`` (the rendered tables and the setup)."""
    started, started_utc = time.perf_counter(), utc_now()
    cases, sizes = PLANS.get(ctx.profile.name, PLANS["quick"])
    ctx.progress("blocks: small cases against exact", 0.0)
    small = small_cases(cases)
    ctx.progress("blocks: speed ladder", 0.5)
    speed = ladder(sizes)
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
        made_by(doc["meta"]["command"], ["blocks.json"]),
        "",
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The largest ladder size's time."""
    last = doc["speed"][-1].split("|")
    return [
        f"Resource blocks: `bcd` solves {last[1].strip()} in {last[2].strip()} s wall "
        "(`Scenario.default(N, seed=0)` with block gains drawn once, no fading; one solve, the "
        f"first of its size in the process, so compiling included; {load_note(doc['meta'])})."
    ]
