"""``python -m benchmarks scale``: every CLI step of the README at growing device counts N.

Each step is one ``sflam-opt`` command run in a fresh process (``python -m sflam_opt.cli``), so
imports, reading the files and writing the output are part of its time, as for a user. Measured
per step: wall time, CPU time (user + system) and peak resident memory of that process (from
``os.wait4``). Steps, on ``Scenario.default(N, seed 0)``, with the ``fast`` solver:

- ``scenario new``, ``scenario show``;
- ``solve --out`` to JSON and to the columnar ``.npz``;
- ``evaluate`` (table of the first rows) and ``evaluate --json`` of each of those two files;
- ``sweep`` over three latency weights;
- bad input: ``evaluate`` of the JSON file with one malformed row in the middle, of the JSON
  file cut in half, and of the ``.npz`` cut in half (each must exit 2 with one ``error:`` line).

How a step grows with N is the exponent ``log(t2 / t1) / log(N2 / N1)`` between the two largest
sizes (1 = linear). The machine's load is recorded: on a shared machine wall times rise with it,
CPU times much less. Command outputs go to a temporary directory and are deleted.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchContext, checkout_env, utc_now

__all__ = ["STEPS", "draw", "headlines", "measure", "report", "run", "steps"]

#: Device counts per profile.
SIZES: dict[str, tuple[int, ...]] = {
    "all": (10_000, 100_000, 1_000_000),
    "quick": (200, 2_000),
}
#: The README's budget for every step at N = 1,000,000 on the reference machine.
BUDGET_S, BUDGET_GB = 5.0, 1.5
#: Step name -> (command-line arguments after ``sflam-opt``, expected exit code); ``{d}`` is the
#: working directory, ``{n}`` the device count.
STEPS: dict[str, tuple[tuple[str, ...], int]] = {
    "scenario new": (("scenario", "new", "-n", "{n}", "--out", "{d}/s.toml"), 0),
    "scenario show": (("scenario", "show", "{d}/s.toml"), 0),
    "solve --out .json": (("solve", "{d}/s.toml", "-s", "fast", "--out", "{d}/a.json"), 0),
    "solve --out .npz": (("solve", "{d}/s.toml", "-s", "fast", "--out", "{d}/a.npz"), 0),
    "evaluate .json": (("evaluate", "{d}/s.toml", "{d}/a.json"), 0),
    "evaluate .npz": (("evaluate", "{d}/s.toml", "{d}/a.npz"), 0),
    "evaluate --json .json": (("evaluate", "{d}/s.toml", "{d}/a.json", "--json"), 0),
    "evaluate --json .npz": (("evaluate", "{d}/s.toml", "{d}/a.npz", "--json"), 0),
    "sweep (3 weights)": (
        ("sweep", "{d}/s.toml", "-s", "fast", "--weights", "0,0.5,1", "--out", "{d}/sweep"),
        0,
    ),
    "bad row (.json)": (("evaluate", "{d}/s.toml", "{d}/bad.json"), 2),
    "truncated .json": (("evaluate", "{d}/s.toml", "{d}/cut.json"), 2),
    "truncated .npz": (("evaluate", "{d}/s.toml", "{d}/cut.npz"), 2),
}


def measure(args: Sequence[str]) -> dict[str, Any]:
    """Run ``sflam-opt ARGS`` in a fresh process; its wall, CPU, peak RSS, exit code, stderr.

    Standard output (tables, JSON) goes to ``/dev/null``: it is produced and written, not kept.
    """
    with tempfile.TemporaryFile() as errf:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "sflam_opt.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=errf,
            env=checkout_env(),
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        stderr = errf.read().decode("utf-8", "replace")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,  # KiB on Linux
        "exit": proc.returncode,
        "stderr": stderr.strip().splitlines()[-3:],
    }


def _bad_inputs(d: Path) -> None:
    """One malformed row in the middle of ``a.json``; ``a.json`` and ``a.npz`` cut in half."""
    text = (d / "a.json").read_bytes()
    middle = text.index(b'"bandwidth_hz": ', len(text) // 2)
    (d / "bad.json").write_bytes(text[:middle] + b'"bandwidth_hz": "x' + text[middle + 16 :])
    (d / "cut.json").write_bytes(text[: len(text) // 2])
    npz = (d / "a.npz").read_bytes()
    (d / "cut.npz").write_bytes(npz[: len(npz) // 2])


def steps(n: int, workdir: Path) -> list[dict[str, Any]]:
    """Every step of :data:`STEPS` at ``n`` devices, in order, in ``workdir``."""
    rows = []
    for name, (args, expected) in STEPS.items():
        if name == "bad row (.json)":
            _bad_inputs(workdir)
        filled = [a.format(d=workdir, n=n) for a in args]
        got = measure(filled)
        ok = got["exit"] == expected
        if expected == 2:  # bad input: exactly one error line
            ok = ok and sum(ln.startswith("error: ") for ln in got["stderr"]) == 1
        rows.append({"step": name, "devices": n, **got, "ok": ok})
    return rows


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure every step at the profile's sizes; write ``figures/scale.json``."""
    started, started_utc = time.perf_counter(), utc_now()
    sizes = SIZES.get(ctx.profile.name, SIZES["quick"])
    rows: list[dict[str, Any]] = []
    for k, n in enumerate(sizes):
        ctx.progress(f"scale: N = {n:,}", 0.0 if k == 0 else 1.0 / len(sizes))
        with tempfile.TemporaryDirectory(prefix="sflam-scale-") as tmp:
            rows += steps(n, Path(tmp))
    ctx.progress("scale", 1.0 / len(sizes))
    doc = {"meta": ctx.meta("scale", started, started_utc), "sizes": list(sizes), "rows": rows}
    ctx.json("scale", doc)
    return doc


def growth(rows: Sequence[Mapping[str, Any]], step: str, key: str = "cpu_s") -> float | None:
    """Exponent of ``key`` against N between the two largest sizes of ``step``."""
    pts = sorted((r["devices"], r[key]) for r in rows if r["step"] == step)
    if len(pts) < 2 or pts[-2][1] <= 0 or pts[-1][1] <= 0:
        return None
    (n1, t1), (n2, t2) = pts[-2], pts[-1]
    return math.log(t2 / t1) / math.log(n2 / n1)


def draw(figures: Path) -> list[Path]:
    """No figure: the section is one table."""
    return []


def _cell(r: Mapping[str, Any]) -> str:
    flag = "" if r["ok"] else " (!)"
    return f"{r['wall_s']:.2f} / {r['cpu_s']:.2f} s, {r['peak_rss_mb']:.0f} MB{flag}"


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown: one row per step, one column per N, and the growth exponent."""
    sizes, rows = list(doc["sizes"]), list(doc["rows"])
    by = {(r["step"], r["devices"]): r for r in rows}
    head = "| step | " + " | ".join(f"N = {n:,}" for n in sizes) + " | growth (CPU) |"
    lines = [
        "## CLI steps at scale",
        "",
        "Each `sflam-opt` command in a fresh process (`python -m benchmarks scale`): wall / CPU "
        "time and peak resident memory; growth is the exponent of CPU time between the two "
        "largest N (1 = linear). (!) marks a step whose exit code or error line was not the "
        f"expected one. Load average at start: {doc['meta']['machine'].get('load_avg_1m_at_start')}.",
        "",
        head,
        "|" + "---|" * (len(sizes) + 2),
    ]
    for step in STEPS:
        cells = [_cell(by[(step, n)]) if (step, n) in by else "-" for n in sizes]
        g = growth(rows, step)
        lines.append(
            f"| {step} | " + " | ".join(cells) + f" | {'-' if g is None else f'{g:.2f}'} |"
        )
    return [*lines, ""]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The slowest step at the largest N, against the budget."""
    n = max(doc["sizes"])
    last = [r for r in doc["rows"] if r["devices"] == n and r["ok"]]
    if not last:
        return []
    worst = max(last, key=lambda r: r["wall_s"])
    fat = max(last, key=lambda r: r["peak_rss_mb"])
    return [
        f"CLI at N = {n:,}: slowest step `{worst['step']}` {worst['wall_s']:.1f} s wall "
        f"({worst['cpu_s']:.1f} s CPU); most memory `{fat['step']}` "
        f"{fat['peak_rss_mb'] / 1024:.2f} GB (budget {BUDGET_S:g} s, {BUDGET_GB:g} GB)."
    ]
