"""The ``sflam-opt`` command line: parses arguments, calls the public API, renders results.

Exit codes: 0 success; 1 an evaluated allocation violates a constraint; 2 bad input (one-line
``error: ...`` on stderr, no traceback); 3 the problem is infeasible.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from sflam_opt.allocation import Allocation, scenario_sha256
from sflam_opt.console import consoles, plain_lines, print_error, print_table, usage_error_line
from sflam_opt.costs import evaluate
from sflam_opt.errors import SflamError
from sflam_opt.io import atomic_write_text, check_writable, write_stream
from sflam_opt.jsonio import ColumnRows, iter_json
from sflam_opt.scenario import Scenario
from sflam_opt.training.cli import register as register_training_commands

EXIT_VIOLATION = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3

app = typer.Typer(
    name="sflam-opt",
    help="Quantization, power and bandwidth allocation for split federated learning (SFLAM), "
    "and a split-federated trainer that applies it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenario_app = typer.Typer(help="Create and inspect scenario files.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")

# Markup off: paths, ids and messages are user text and may contain "[...]".
out, err = consoles()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log solver diagnostics.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ------------------------------------------------------------------------------ scenario
@scenario_app.command("new")
def scenario_new(
    devices: Annotated[
        int, typer.Option("--devices", "-n", min=1, help="Number of devices N.")
    ] = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed for device draws.")] = 0,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")
    ] = None,
    blocks: Annotated[
        int | None,
        typer.Option(
            "--blocks", min=1, help="Cut the band into M resource blocks (Rayleigh block gains)."
        ),
    ] = None,
) -> None:
    """Write the default scenario (docs/formulation.md §7) as TOML."""
    if out_file is not None:
        check_writable(out_file)
    with _as_options():
        scn = Scenario.default(devices=devices, seed=seed)
        if blocks is not None:
            from sflam_opt.blocks import with_resource_blocks

            scn = with_resource_blocks(scn, blocks, seed=seed)
    text = scn.to_toml()
    if out_file is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out_file, text)
        err.print(f"wrote {out_file} ({devices} devices, seed {seed})", highlight=False)


#: Scenario files above this size show a status line on stderr while they are parsed.
_LARGE_FILE_BYTES = 1 << 20


def _read_scenario(path: Path) -> Scenario:
    """Load a scenario, with a status line on stderr for large files (millions of devices)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # from_toml reports the missing or unreadable file
    if size < _LARGE_FILE_BYTES:
        return Scenario.from_toml(path)
    with err.status(f"reading {path} ({size / 1e6:.0f} MB) ..."):
        return Scenario.from_toml(path)


@scenario_app.command("show")
def scenario_show(
    file: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    max_rows: Annotated[int, typer.Option(help="Device rows to list.")] = 20,
) -> None:
    """Print a readable summary of a scenario file."""
    scn = _read_scenario(file)
    t = Table(title=f"{file}  ({scn.n_devices} devices)", show_header=True)
    t.add_column("section")
    t.add_column("key")
    t.add_column("value", justify="right")
    for name in ("system", "model", "training", "convergence", "objective", "constraints"):
        for key, val in vars(getattr(scn, name)).items():
            if val is not None:
                t.add_row(name, key, f"{val:g}" if isinstance(val, float) else str(val))
    t.add_row("bits", "levels", _levels(scn.bits.levels))
    print_table(out, t)
    d = Table(title="devices", show_header=True)
    for col in ("id", "gain dB", "distance m", "CPU GHz", "Pmax W", "samples"):
        d.add_column(col, justify="right")
    dv = scn.devices
    shown = min(scn.n_devices, max_rows)
    for i in range(shown):
        dist = "" if np.isnan(dv.distance_m[i]) else f"{dv.distance_m[i]:.1f}"
        d.add_row(
            str(dv.ids[i]),
            f"{dv.gain_db[i]:.2f}",
            dist,
            f"{dv.cpu_hz[i] / 1e9:.3f}",
            f"{dv.max_power_w[i]:g}",
            str(dv.samples[i]),
        )
    if shown < scn.n_devices:
        d.add_row("...", f"{scn.n_devices - shown} more", "", "", "", "")
    d.add_section()
    for label, fn in (("min", np.min), ("mean", np.mean), ("max", np.max)):
        dist = dv.distance_m[~np.isnan(dv.distance_m)]
        d.add_row(
            label,
            f"{fn(dv.gain_db):.2f}",
            f"{fn(dist):.1f}" if dist.size else "",
            f"{fn(dv.cpu_hz) / 1e9:.3f}",
            f"{fn(dv.max_power_w):g}",
            f"{fn(dv.samples):.0f}",
        )
    print_table(out, d)


def _levels(levels: tuple[int, ...]) -> str:
    if len(levels) > 2 and levels == tuple(range(levels[0], levels[-1] + 1)):
        return f"{levels[0]}..{levels[-1]}"
    return ", ".join(map(str, levels))


# ------------------------------------------------------------------------------ errors
#: Library argument names and the command-line options that set them.
_OPTIONS = {
    "solver": "--solver",
    "cvx_solver": "--cvx-solver",
    "max_iter": "--max-iter",
    "bits": "--bits",
    "weights": "--weights",
    "devices": "--devices",
    "seed": "--seed",
    "blocks": "--blocks",
}
_ARG_NAME = re.compile(r"(?<![\w.\[-])(" + "|".join(_OPTIONS) + r")(=|(?=:))")
_VALID_OPTIONS = re.compile(r"valid options: ([\w, ]+)$")


def _option_text(message: str) -> str:
    """``message`` with argument names as options: ``max_iter=3`` becomes ``--max-iter 3``."""
    text = _ARG_NAME.sub(lambda m: _OPTIONS[m.group(1)] + (" " if m.group(2) else ""), message)
    valid = _VALID_OPTIONS.search(text)
    if valid:  # a solver's option list: say which of them the command line sets
        names = [v.strip() for v in valid.group(1).split(",")]
        flags = [_OPTIONS[v] for v in names if v in _OPTIONS]
        given = f"options it takes here: {', '.join(flags)}" if flags else "it takes no options"
        text = text[: valid.start()] + given
    return text


@contextmanager
def _as_options() -> Iterator[None]:
    """Argument errors of the library calls name the command-line option (``--max-iter 3``,
    not ``max_iter=3``); the error keeps its class and so its exit code."""
    try:
        yield
    except SflamError as exc:
        text = _option_text(str(exc))
        if text == str(exc):
            raise
        raise type(exc)(text) from None


# ------------------------------------------------------------------------------ device tables
#: Device rows a table shows unless --all is given; a summary line tells how many were left out.
SHOWN_ROWS = 50
_SI = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"))


def _g(values: Any) -> list[str]:
    return [f"{v:.4g}" for v in np.asarray(values, dtype=float).tolist()]


def _si(unit: str) -> Any:
    """Formatter with an SI prefix per value: 20 MHz and 19.87 Hz both keep 4 digits."""

    def fmt(values: Any) -> list[str]:
        out = []
        for v in np.asarray(values, dtype=float).tolist():
            scale, prefix = next(((s, p) for s, p in _SI if abs(v) >= s), (1.0, ""))
            out.append(f"{v / scale:.4g} {prefix}{unit}" if np.isfinite(v) else f"{v} {unit}")
        return out

    return fmt


def _text(values: Any) -> list[str]:
    return [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]


def _block_list(blocks: Any) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    b = np.sort(np.asarray(blocks, dtype=np.int64))
    if not b.size:
        return "-"
    starts = np.flatnonzero(np.diff(b, prepend=b[0] - 2) != 1)
    ends = np.append(starts[1:], b.size) - 1
    return ",".join(
        str(b[s]) if s == e else f"{b[s]}-{b[e]}" for s, e in zip(starts, ends, strict=True)
    )


def _blocks_texts(blocks: Any) -> list[str]:
    return [_block_list(b) for b in blocks]


def _print_devices(title: str, columns: list[tuple[str, Any, Any]], show_all: bool) -> None:
    """A per-device table: ``columns`` are ``(header, values, formatter)``, values of length N.

    Without ``show_all`` only the first :data:`SHOWN_ROWS` rows are listed, then one line
    saying how many more there are. Long listings go out as plain lines, a chunk at a time.
    """
    n = len(columns[0][1])
    shown = n if show_all else min(n, SHOWN_ROWS)
    headers = [h for h, _, _ in columns]
    if shown > 1000 or not out.is_terminal:
        justify = ["right"] * len(columns)
        sys.stdout.write(title + "\n")
        for start in range(0, max(shown, 1), 10_000):
            stop = min(start + 10_000, shown)
            texts = [f(v[start:stop]) for _, v, f in columns]
            cells = list(zip(*texts, strict=True)) if stop > start else []
            lines = plain_lines(headers if start == 0 else None, cells, justify)
            sys.stdout.writelines(line + "\n" for line in lines)
    else:
        t = Table(title=title)
        for h in headers:
            t.add_column(h, justify="right")
        for row in zip(*(f(v[:shown]) for _, v, f in columns), strict=True):
            t.add_row(*row)
        print_table(out, t)
    if shown < n:
        sys.stdout.write(f"... {n - shown} more devices (--all lists every one)\n")


# ------------------------------------------------------------------------------ evaluate
AllOpt = Annotated[
    bool, typer.Option("--all", help=f"List every device (default: the first {SHOWN_ROWS}).")
]
_BREAKDOWN = (
    ("compute s", "compute_s"),
    ("upload s", "upload_s"),
    ("server s", "server_s"),
    ("downlink s", "downlink_s"),
    ("latency s", "latency_s"),
    ("compute J", "compute_j"),
    ("upload J", "upload_j"),
    ("energy J", "energy_j"),
)


@app.command("evaluate")
def evaluate_cmd(
    scenario_file: Annotated[Path, typer.Argument(metavar="SCENARIO", help="Scenario TOML.")],
    allocation_file: Annotated[
        Path,
        typer.Argument(
            metavar="ALLOCATION", help="Allocation file, JSON or .npz (from `solve --out`)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    show_all: AllOpt = False,
) -> None:
    """Cost (J, K, T, E), per-device breakdown and constraint check of an allocation.

    Exits 1 when a constraint is violated.
    """
    scn = _read_scenario(scenario_file)
    alloc = Allocation.load(allocation_file)
    if alloc.matches(scn) is False:
        err.print(
            f"warning: {allocation_file} was solved for another scenario than {scenario_file} "
            "(scenario_sha256 differs); solve this scenario for a matching allocation",
            highlight=False,
            soft_wrap=True,
        )
    ev = evaluate(scn, alloc)
    bd = ev.breakdown
    if as_json:
        doc = ev.summary()
        names = ("id", "bits", *(key for _, key in _BREAKDOWN))
        cols = (scn.devices.ids, alloc.bits, *(getattr(bd, key) for _, key in _BREAKDOWN))
        doc["devices"] = ColumnRows(names, cols)
        sys.stdout.writelines(iter_json(doc, "devices"))
    else:
        columns = [("id", scn.devices.ids, _text), ("bits", alloc.bits, _text)]
        columns += [(h, getattr(bd, key), _g) for h, key in _BREAKDOWN]
        _print_devices("per-device round breakdown", columns, show_all)
        _print_summary(ev.summary())
        for v in ev.violations:
            out.print(f"violated {v}", style="red", highlight=False, soft_wrap=True)
    if ev.violations:
        raise typer.Exit(EXIT_VIOLATION)


def _print_summary(doc: dict[str, Any]) -> None:
    s = Table(show_header=False, box=None)
    s.add_column(style="bold")
    s.add_column(justify="right")
    labels = [
        ("objective", "J (1 = equal baseline)"),
        ("rounds", "rounds K"),
        ("rounds_ceil", "rounds ceil(K)"),
        ("round_latency_s", "round latency T (s)"),
        ("round_energy_j", "round energy E (J)"),
        ("total_latency_s", "total latency K*T (s)"),
        ("total_energy_j", "total energy K*E (J)"),
    ]
    for key, label in labels:
        v = doc.get(key)
        s.add_row(label, "-" if v is None else f"{v:.6g}")
    print_table(out, s)


# ------------------------------------------------------------------------------ solve
# Solver options shared by `solve` and `sweep`.
BitsOpt = Annotated[int | None, typer.Option("--bits", help="Bit width for --solver fixed-bits.")]
CvxSolverOpt = Annotated[
    str | None, typer.Option("--cvx-solver", help="Cone solver for bcd: CLARABEL, ECOS or SCS.")
]
MaxIterOpt = Annotated[int | None, typer.Option("--max-iter", min=1, help="Iteration cap.")]


@app.command("solve")
def solve_cmd(
    scenario_file: Annotated[Path, typer.Argument(metavar="SCENARIO", help="Scenario TOML.")],
    solver: Annotated[
        str, typer.Option("--solver", "-s", help="Solver name (see `sflam-opt solvers`).")
    ] = "bcd",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout.")
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the result (an allocation file): JSON, or columns in binary when the "
            "name ends in .npz (much faster for 100,000s of devices).",
        ),
    ] = None,
    bits: BitsOpt = None,
    cvx_solver: CvxSolverOpt = None,
    max_iter: MaxIterOpt = None,
    show_all: AllOpt = False,
) -> None:
    """Choose bits, power and bandwidth per device to minimize J (exit 3 if infeasible)."""
    from sflam_opt.solvers import get_solver, solve

    with _as_options():
        get_solver(solver)  # unknown names and unwritable outputs fail before any work
    if out_file is not None:
        check_writable(out_file)
    scn = _read_scenario(scenario_file)
    if out_file is not None and out_file.suffix == ".npz" and scn.resource_blocks is not None:
        raise SflamError(
            f"--out {out_file}: resource-block allocations are written as JSON only; "
            "give a .json file name"
        )
    options = _solver_options(bits, cvx_solver, max_iter)
    with _as_options():
        if as_json:
            res = solve(scn, solver=solver, **options)
        else:
            with err.status(f"solving {scn.n_devices} devices with {solver} ..."):
                res = solve(scn, solver=solver, **options)
    doc = _solve_document(scn, res)
    if out_file is not None:
        _write_result(out_file, doc)
    if as_json:
        sys.stdout.writelines(iter_json(doc, "devices"))
    else:
        _render_result(scn, res, doc, show_all)
        if out_file is not None:
            err.print(f"wrote {out_file}", highlight=False)
    if res.status == "infeasible":
        if not as_json:
            err.print(f"infeasible: {res.message}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INFEASIBLE)
    if res.status == "failed":
        if not as_json:
            err.print(f"solver failed: {res.message}", markup=False, highlight=False)
        raise typer.Exit(1)


def _solve_document(scn: Scenario, res: Any) -> dict[str, Any]:
    """The ``solve --json`` document: ``res.to_dict(scn)`` with the scenario's fingerprint.

    ``to_dict`` builds a dict per device (seconds at a million devices); for flat allocations
    the same document is assembled here with the device rows as columns. The fingerprint lets
    `evaluate` and `train --allocation` flag use with another scenario.
    """
    head = {"scenario_sha256": scenario_sha256(scn)}
    alloc, ev = res.allocation, res.evaluation
    if alloc is None or ev is None or alloc.blocks is not None:
        return {**head, **res.to_dict(scn)}
    doc = {**head, **dataclasses.replace(res, evaluation=None).to_dict(scn)}
    info = doc.pop("info", None)
    summary = ev.summary()
    for key in _TOTALS:
        doc[key] = _finite(summary[key])
    bd = ev.breakdown
    doc["devices"] = alloc.device_columns(
        scn.devices.ids,
        rate_bps=bd.rate_bps,
        upload_s=bd.upload_s,
        latency_s=bd.latency_s,
        energy_j=bd.energy_j,
    )
    doc["violations"] = list(ev.violations)
    if info is not None:
        doc["info"] = info
    return doc


_TOTALS = (
    "rounds",
    "rounds_ceil",
    "round_latency_s",
    "round_energy_j",
    "total_latency_s",
    "total_energy_j",
)


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _write_result(path: Path, doc: dict[str, Any]) -> None:
    """Write the solve document as JSON, or as a columnar .npz when the name ends in .npz."""
    rows = doc["devices"]
    if path.suffix == ".npz":
        from sflam_opt.allocation_npz import write_npz

        if not isinstance(rows, ColumnRows):
            raise SflamError(f"--out {path}: this result has no device columns to write as .npz")
        write_npz(path, rows, doc)
        return
    write_stream(path, lambda fh: fh.writelines(p.encode() for p in iter_json(doc, "devices")))


def _solver_options(
    bits: int | None, cvx_solver: str | None, max_iter: int | None
) -> dict[str, Any]:
    """Solver options given on the command line (unset ones keep the solver's defaults)."""
    given = {"bits": bits, "cvx_solver": cvx_solver, "max_iter": max_iter}
    return {k: v for k, v in given.items() if v is not None}


def _render_result(scn: Scenario, res: Any, doc: dict[str, Any], show_all: bool) -> None:
    alloc, ev = res.allocation, res.evaluation
    if alloc is not None and ev is not None:
        bd = ev.breakdown
        columns = [
            ("id", scn.devices.ids, _text),
            ("bits", alloc.bits, _text),
            ("bandwidth", alloc.bandwidth_hz, _si("Hz")),
            ("power W", alloc.power_w, _g),
            ("rate", bd.rate_bps, _si("bit/s")),
            ("upload s", bd.upload_s, _g),
            ("latency s", bd.latency_s, _g),
            ("energy J", bd.energy_j, _g),
        ]
        if alloc.blocks is not None:
            columns.insert(2, ("blocks", alloc.blocks, _blocks_texts))
        _print_devices(f"{res.solver}: {res.status}", columns, show_all)
    _print_summary(doc)
    out.print(f"status {res.status}: {res.message}", markup=False, highlight=False, soft_wrap=True)
    out.print(
        f"backend {res.backend}, {len(res.iterations)} iteration(s), "
        f"solve time {res.solve_time_s:.3f} s",
        highlight=False,
    )


@app.command("solvers")
def solvers_cmd() -> None:
    """List the available solvers."""
    from sflam_opt.solvers import available_solvers

    t = Table(show_header=True)
    t.add_column("solver")
    t.add_column("description")
    for name, desc in available_solvers().items():
        t.add_row(name, desc)
    print_table(out, t)


# ------------------------------------------------------------------------------ sweep
@app.command("sweep")
def sweep_cmd(
    scenario_file: Annotated[Path, typer.Argument(metavar="SCENARIO", help="Scenario TOML.")],
    weights: Annotated[
        str, typer.Option("--weights", help="Latency weights START:STOP:COUNT or a comma list.")
    ] = "0:1:11",
    solver: Annotated[str, typer.Option("--solver", "-s", help="Solver name.")] = "bcd",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("sweep"),
    bits: BitsOpt = None,
    cvx_solver: CvxSolverOpt = None,
    max_iter: MaxIterOpt = None,
) -> None:
    """Solve across latency weights; write the latency-energy Pareto front (CSV + PNG)."""
    from sflam_opt import sweep
    from sflam_opt.solvers import get_solver

    scn = _read_scenario(scenario_file)
    with _as_options():
        get_solver(solver)
        ws = sweep.parse_weights(weights)
    check_writable(out_dir, directory=True)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as prog, _as_options():
        task = prog.add_task(f"sweeping {len(ws)} weights with {solver}", total=len(ws))
        rows = sweep.pareto(
            scn,
            ws,
            solver=solver,
            progress=lambda *_: prog.advance(task),
            **_solver_options(bits, cvx_solver, max_iter),
        )
    csv_path = sweep.write_csv(rows, out_dir / "pareto.csv")
    png_path = sweep.plot_pareto(rows, out_dir / "pareto.png", scenario=scn)
    t = Table(title=f"Pareto front ({solver})")
    for col in ("weight", "status", "J", "total latency s", "total energy J", "rounds"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r['weight']:.3g}",
            r["status"],
            _fmt(r.get("objective")),
            _fmt(r.get("total_latency_s")),
            _fmt(r.get("total_energy_j")),
            _fmt(r.get("rounds")),
        )
    print_table(out, t)
    err.print(f"wrote {csv_path} and {png_path}", highlight=False)
    if not any(r["status"] in sweep.FEASIBLE_STATUSES for r in rows):
        err.print("infeasible: no latency weight has a feasible allocation", highlight=False)
        raise typer.Exit(EXIT_INFEASIBLE)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.6g}"


@app.command(
    "bench",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench(ctx: typer.Context) -> None:
    """Benchmarks: runs `python -m benchmarks ARGS` of the checkout this package comes from."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    checkout = (root / "pyproject.toml").is_file() and (root / "benchmarks/__main__.py").is_file()
    if not checkout:
        raise SflamError(
            "the benchmarks are not installed with the package: they live in benchmarks/ of the "
            "sflam-opt source repository; run `python -m benchmarks` in a git checkout of it"
        )
    path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    cmd = [sys.executable, "-m", "benchmarks", *ctx.args]
    raise typer.Exit(subprocess.run(cmd, env={**os.environ, "PYTHONPATH": path}).returncode)


# `train`, `calibrate` and `memory` live with the trainer. Importing their module does not import
# torch; a command that needs it says so in one line (pip install 'sflam-opt[train]').
register_training_commands(app)


def _verbose_first(argv: list[str]) -> list[str]:
    """Move ``-v``/``--verbose`` given after a subcommand to the front, where the root reads it."""
    try:
        end = argv.index("--")
    except ValueError:
        end = len(argv)
    flags = [a for a in argv[:end] if a in ("-v", "--verbose")]
    rest = [a for a in argv[:end] if a not in ("-v", "--verbose")]
    return flags + rest + argv[end:]


class _NeverRaised(Exception):
    """Stands in for an exception class the installed click does not have."""


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """click's ``ClickException`` and ``NoArgsIsHelpError``, from the click that typer uses.

    Typer re-exports click's ``BadParameter``; its module is click's exceptions module, whether
    typer uses the ``click`` package or a copy of its own. Older click has no
    ``NoArgsIsHelpError`` (its help is then printed inside the command).
    """
    module = sys.modules[typer.BadParameter.__module__]
    return module.ClickException, getattr(module, "NoArgsIsHelpError", _NeverRaised)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs a command and returns its exit code.

    Errors become one line on stderr, never a traceback: an
    :class:`~sflam_opt.errors.SflamError` exits with its ``exit_code`` (2 for bad input, 3 for
    an infeasible problem, 1 for a failed run), a command-line usage error with 2.
    """
    click_error, no_args_help = _click_errors()
    args = _verbose_first(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="sflam-opt", standalone_mode=False)
    except no_args_help as exc:
        text = exc.format_message()  # empty when rich has printed the help already
        if text.strip():
            sys.stdout.write(text + "\n")
        return 0
    except click_error as exc:
        print_error(err, usage_error_line(exc))
        return EXIT_BAD_INPUT
    except typer.Abort:
        err.print("aborted", highlight=False)
        return 130
    except SflamError as exc:
        print_error(err, str(exc))
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except OSError as exc:  # disk full, permission denied: say what, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        print_error(err, f"cannot access{where}: {exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
