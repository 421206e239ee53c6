"""Render ``results.md`` from the benchmark data files.

Every number in the report is read from a CSV/JSON file in ``<out>/figures/`` that a benchmark just
wrote; nothing is typed by hand. The document is assembled here from the registered sections
(:mod:`benchmarks.sections`), each rendering its own part with :mod:`benchmarks.markdown`. Each
section states the exact command that produced its data, the machine and the date. Sections whose
data files are missing are listed as not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import FIGURES, read_csv, read_json, utc_now
from benchmarks.markdown import duration, made_by, table
from benchmarks.sections import SECTIONS
from sflam_opt.io import atomic_write_text

__all__ = ["recorded_errors", "render", "write"]

#: How the report names the benchmark command.
COMMAND = "python -m benchmarks"


# ------------------------------------------------------------------------------- machine
_MACHINE_KEYS = (
    ("cpu", "CPU"),
    ("usable_cores", "cores used"),
    ("ram_gib", "RAM (GiB)"),
    ("os", "OS"),
    ("python", "Python"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("cvxpy", "cvxpy"),
    ("clarabel", "clarabel"),
    ("torch", "torch"),
    ("torch_threads", "torch threads"),
    ("cuda", "CUDA available"),
    ("sflam_opt", "sflam-opt"),
    ("git_commit", "git commit"),
    ("load_avg_1m_at_start", "load average at start (1 min)"),
    ("load_avg_1m", "load average at end (1 min)"),
)


def _machine(metas: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(metas)
    rows = []
    for key, label in _MACHINE_KEYS:
        vals = [metas[n]["machine"].get(key) for n in names]
        rows.append([label, *(("-" if v is None else str(v)) for v in vals)])
    rows.append(["started (UTC)", *(metas[n]["started_utc"] for n in names)])
    rows.append(["run time", *(duration(metas[n].get("elapsed_s")) for n in names)])
    rows.append(["command", *(f"`{metas[n]['command']}`" for n in names)])
    return table(["", *names], rows)


# ------------------------------------------------------------------------------- errors
def recorded_errors(paths: Iterable[Path]) -> list[str]:
    """Rows of the CSV files in ``paths`` whose ``error`` column is set, as one-line strings.

    A solver that raised, an unregistered solver, a failed training run or memory measurement is
    recorded there instead of stopping a long run; ``python -m benchmarks`` then exits 1 so that CI
    notices, and the report lists them.
    """
    out = []
    for path in dict.fromkeys(Path(p) for p in paths if Path(p).suffix == ".csv"):
        if not path.exists():
            continue
        for row in read_csv(path):
            if row.get("error"):
                what = ", ".join(
                    f"{k} {row[k]}"
                    for k in (
                        "solver",
                        "protocol",
                        "bits_mode",
                        "n_devices",
                        "seed",
                        "batch",
                        "scenario",
                    )
                    if row.get(k) is not None
                )
                out.append(f"`{path.name}` ({what}): {row['error']}")
    return out


# ------------------------------------------------------------------------------- document
def _present(figures: Path) -> dict[str, Any]:
    """The data document of every registered section that has one, in registration order."""
    out = {}
    for name in SECTIONS:
        path = figures / f"{name}.json"
        if path.exists():
            out[name] = read_json(path)
    return out


def _expected(present: Mapping[str, Any]) -> list[str]:
    """Sections a complete report of this run would hold: ``quick`` data skips the slow ones."""
    profiles = {d["meta"]["profile"].get("name") for d in present.values()}
    quick = profiles == {"quick"}
    return [name for name, sec in SECTIONS.items() if sec.quick or not quick]


def _unlinked_data(figures: Path, name: str, doc: Mapping[str, Any], text: str) -> list[str]:
    """A ``Made by`` line for the section's data files that its report text does not link.

    A section's files are ``<name>.json`` and ``<name>_*`` (its CSVs); every data file is then
    reachable from the report even where a section's own text names only its table.
    """
    if not figures.is_dir():
        return []
    mine = sorted(
        p.name
        for p in figures.iterdir()
        if p.suffix in (".json", ".csv") and (p.stem == name or p.stem.startswith(f"{name}_"))
    )
    missing = [f for f in mine if f"({FIGURES}/{f})" not in text]
    if not missing:
        return []
    return [made_by(doc["meta"].get("command", f"{COMMAND} {name}"), missing), ""]


def render(out_dir: Path) -> str:
    """The markdown of ``results.md`` for the data files under ``out_dir/figures``."""
    figures = Path(out_dir) / FIGURES
    present = _present(figures)
    lines = [
        "# sflam-opt results",
        "",
        "<!-- Generated by benchmarks/report.py from the CSV/JSON files in figures/; "
        "do not edit by hand. -->",
        "",
        f"Every number and figure below was produced by `{COMMAND}` on the machine described "
        "here, and is rendered from the CSV/JSON files in [`figures/`](figures/) written by that "
        f"run. Report rendered {utc_now()}. Reproduce "
        f"everything with `{COMMAND} all --out docs`, or one part with `{COMMAND} "
        f"{'|'.join(SECTIONS)} --out docs`; `{COMMAND} report --out docs` redraws the figures and "
        "this file from the data files alone.",
        "",
    ]
    heads = [t for name, d in present.items() for t in SECTIONS[name].load().headlines(figures, d)]
    if heads:
        lines += ["## Headlines", "", *(f"- {t}" for t in heads), ""]
    if present:
        lines += [
            "## Machine and date",
            "",
            _machine({s: d["meta"] for s, d in present.items()}),
            "",
            "A 1-minute load average above the number of cores means other processes competed for "
            "the CPU during that section; its wall times then overstate what an idle machine "
            "needs (accuracies, bytes, J and simulated costs do not depend on it).",
            "",
        ]
    parts = {name: SECTIONS[name].load().report(figures, d) for name, d in present.items()}
    linked = "\n".join(line for part in parts.values() for line in part)
    for name, part in parts.items():
        lines += part + _unlinked_data(figures, name, present[name], linked)
    errors = recorded_errors(sorted(figures.glob("*.csv"))) if figures.is_dir() else []
    if errors:
        lines += ["## Recorded errors", ""] + [f"- {e}" for e in errors] + [""]
    missing = [s for s in _expected(present) if s not in present]
    if missing:
        lines += [
            "## Not run",
            "",
            "No data for: " + ", ".join(f"`{COMMAND} {s}`" for s in missing) + ".",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def write(out_dir: Path) -> Path:
    """Render and atomically write ``out_dir/results.md``."""
    return atomic_write_text(Path(out_dir) / "results.md", render(out_dir))
