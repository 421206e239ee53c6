"""``sflam-opt train``, ``calibrate`` and ``memory``: the trainer's commands.

:func:`register` adds them to the main typer app (``sflam_opt.cli``). The commands only parse
options, call the public API (:func:`sflam_opt.training.train`,
:func:`sflam_opt.training.calibrate.calibrate`,
:func:`sflam_opt.training.memory.measure_device_memory`) and render the result: a rich progress bar
per round on stderr, then a rich table -- or, with ``--json``, the JSON document alone on stdout.
Bad input prints ``error: <one line>`` on stderr and exits with code 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sflam_opt.console import consoles, print_error, print_table
from sflam_opt.errors import SflamError, TrainingConfigError
from sflam_opt.io import atomic_write_text, check_writable
from sflam_opt.training.config import defaults

__all__ = ["register"]

EXIT_BAD_INPUT = 2


_D = defaults()


def _consoles() -> tuple[Console, Console]:
    # Created per command so that CliRunner's captured streams are used in tests.
    return consoles()


#: Modules of the ``train`` extra, by import name.
TRAIN_EXTRA = ("torch", "sklearn")


@contextmanager
def _errors_to_exit(err: Console) -> Iterator[None]:
    try:
        yield
    except SflamError as exc:
        print_error(err, str(exc))
        raise typer.Exit(exc.exit_code) from None
    except ModuleNotFoundError as exc:
        # A core install (no torch, no scikit-learn) has everything but the trainer's commands.
        missing = (exc.name or "").split(".")[0]
        if missing not in TRAIN_EXTRA:
            raise
        print_error(
            err,
            f"this command needs {missing}, which the core install leaves out; "
            "pip install 'sflam-opt[train]'",
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _run_options(
    model: str,
    dataset: str,
    data_dir: Path | None,
    devices: int,
    devices_per_round: int | None,
    alpha: float,
    rounds: int,
) -> dict[str, Any]:
    """The :class:`TrainConfig` fields of what is trained, shared by ``train`` and ``calibrate``."""
    return {
        "model": model,
        "dataset": dataset,
        "data_dir": _path(data_dir),
        "devices": devices,
        "devices_per_round": devices_per_round,
        "alpha": alpha,
        "rounds": rounds,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else "-"
    return str(v)


class _RoundBars:
    """Rich progress bars on stderr, one per run, shown from the first finished round on.

    Nothing is drawn while the trainer sets up, so an early error prints alone.
    """

    def __init__(self, err: Console, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=err,
        )
        self._total = total
        self._tasks: dict[str, Any] = {}

    def update(self, label: str, row: dict[str, Any]) -> None:
        """Show ``row`` (a metrics row) on the bar of run ``label``."""
        if not self._tasks:
            self._progress.start()
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=self._total, status="")
        status = f"acc {100 * row['test_accuracy']:.1f}%  loss {row['train_loss']:.3f}"
        self._progress.update(self._tasks[label], completed=row["round"], status=status)

    def __enter__(self) -> _RoundBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._progress.stop()


# ------------------------------------------------------------------------------ options
# Options shared by `train` and `calibrate`.
ModelOpt = Annotated[str, typer.Option(help="Split ViT preset: vit-tiny, vit-s32, vit-b32.")]
DatasetOpt = Annotated[str, typer.Option(help="digits (bundled) or cifar10.")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="CIFAR-10 python batches (data_batch_1..5, test_batch).")
]
DevicesOpt = Annotated[int, typer.Option("--devices", "-n", help="Devices N.")]
AlphaOpt = Annotated[float, typer.Option(help="Dirichlet concentration of the split.")]
LrOpt = Annotated[float, typer.Option(help="SGD learning rate eta.")]
MomentumOpt = Annotated[float, typer.Option(help="SGD momentum of the local optimizers.")]
BatchOpt = Annotated[int, typer.Option(help="Mini-batch size beta.")]
ItersOpt = Annotated[int, typer.Option(help="Local iterations tau per round.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of everything random.")]
DeviceOpt = Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:K.")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="torch CPU threads (default: 1 for tiny models, else 2).")
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(help="Input side the model sees; images are resized to it (default: preset's)."),
]
DevicesPerRoundOpt = Annotated[
    int | None, typer.Option(help="Participants K per round (default: all N).")
]
CalibrationOpt = Annotated[
    str,
    typer.Option(
        help="Source of the bound's constants: auto (stored if one matches, else online), "
        "stored, online (fit on the first rounds, docs/formulation.md §4.3) or scenario."
    ),
]
FitRoundsOpt = Annotated[
    int | None,
    typer.Option(help="Rounds the online calibration fits on (default 20 %, at least 5)."),
]
CalibrateOpt = Annotated[
    bool,
    typer.Option(
        "--calibrate",
        help="Without a stored calibration of this configuration, calibrate the bound first "
        "(fp32 and 2-bit runs on two other seeds) and save it.",
    ),
]
#: Offset of the seeds ``train --calibrate`` calibrates on, so they differ from the run's own.
CALIBRATION_SEED_OFFSET = 1000


# ------------------------------------------------------------------------------ train
def train_command(
    protocol: Annotated[
        str, typer.Option(help="sflam (quantized SFL-V1), sfl (fp32 SFL-V1), fl or sl.")
    ] = _D["protocol"],
    model: ModelOpt = _D["model"],
    dataset: DatasetOpt = _D["dataset"],
    data_dir: DataDirOpt = None,
    devices: DevicesOpt = _D["devices"],
    devices_per_round: DevicesPerRoundOpt = None,
    alpha: AlphaOpt = _D["alpha"],
    rounds: Annotated[int, typer.Option(help="Training rounds R.")] = _D["rounds"],
    lr: LrOpt = _D["lr"],
    momentum: MomentumOpt = _D["momentum"],
    batch_size: BatchOpt = _D["batch_size"],
    local_iters: ItersOpt = _D["local_iters"],
    bits: Annotated[
        int | None, typer.Option(help="Uniform uplink bits (1..16, 32 = fp32); sflam only.")
    ] = None,
    allocation: Annotated[
        Path | None, typer.Option(help="Allocation JSON from `sflam-opt solve --out`.")
    ] = None,
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML to solve (default: default scenario).")
    ] = None,
    solver: Annotated[str, typer.Option(help="Solver when no --allocation is given.")] = _D[
        "solver"
    ],
    seed: SeedOpt = _D["seed"],
    device: DeviceOpt = _D["device"],
    threads: ThreadsOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory: metrics.jsonl, summary.json, curves.png, checkpoint."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from --out DIR/checkpoint.pt.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out DIR (deletes its files).")
    ] = False,
    pretrained: Annotated[
        bool, typer.Option(help="Start from timm ImageNet weights (vit-s32/vit-b32).")
    ] = False,
    fading: Annotated[
        str, typer.Option(help="Channel fading per round: none or rayleigh (re-solves each round).")
    ] = _D["fading"],
    transport: Annotated[
        str,
        typer.Option(help="inprocess, or gloo (device workers in other processes)."),
    ] = _D["transport"],
    workers: Annotated[
        int, typer.Option(help="Device worker processes K for --transport gloo.")
    ] = _D["workers"],
    timeout_s: Annotated[
        float, typer.Option(help="--transport gloo: seconds a worker may stay silent.")
    ] = _D["timeout_s"],
    weights: Annotated[
        Path | None,
        typer.Option(help="Pretrained timm/torch state-dict file (implies --pretrained)."),
    ] = None,
    image_size: ImageSizeOpt = None,
    calibration: CalibrationOpt = _D["calibration"],
    fit_rounds: FitRoundsOpt = None,
    calibrate: CalibrateOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a split ViT with SFLAM, SFL, FL or SL and measure accuracy, bytes and cost."""
    stdout, err = _consoles()
    with _errors_to_exit(err):
        from sflam_opt.training.config import TrainConfig

        config = TrainConfig(
            protocol=protocol,
            **_run_options(model, dataset, data_dir, devices, devices_per_round, alpha, rounds),
            lr=lr,
            momentum=momentum,
            batch_size=batch_size,
            local_iters=local_iters,
            bits=bits,
            allocation=_path(allocation),
            scenario=_path(scenario),
            solver=solver,
            seed=seed,
            device=device,
            threads=threads,
            out=_path(out),
            resume=resume,
            pretrained=pretrained,
            fading=fading,
            transport=transport,
            workers=workers,
            timeout_s=timeout_s,
            image_size=image_size,
            weights=_path(weights),
            calibration=calibration,
            fit_rounds=fit_rounds,
        )
        result = _run_training(config, err, calibrate=calibrate, overwrite=overwrite)
        summary = result.summary
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
            return
        _print_train_table(stdout, summary, f"sflam-opt train: {protocol}, {model} on {dataset}")
        if out is not None:
            err.print(f"wrote {out}/metrics.jsonl, summary.json, curves.png", highlight=False)


def _run_training(config: Any, err: Console, *, calibrate: bool, overwrite: bool) -> Any:
    """Train ``config`` in its claimed run directory, with progress bars and a clean interrupt.

    Ctrl-C or SIGTERM prints where the run stopped and how to continue, then exits 130.
    """
    from sflam_opt.training.rundir import claim_run_dir, interrupted_message, sigterm_interrupts
    from sflam_opt.training.trainer import train

    seen = {"round": 0}

    def on_round(row: dict[str, Any]) -> None:
        seen["round"] = row["round"]
        bars.update(f"{config.protocol} rounds", row)

    with claim_run_dir(config.out, resume=config.resume, overwrite=overwrite):
        try:
            with sigterm_interrupts():
                if calibrate:
                    _calibrate_first(config, err)
                with _RoundBars(err, config.rounds) as bars:
                    return train(config, progress=on_round)
        except KeyboardInterrupt:
            err.print(interrupted_message(config.out, seen["round"]), highlight=False)
            raise typer.Exit(130) from None


def _print_train_table(stdout: Console, summary: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("rounds", summary["rounds"]),
        ("final test accuracy", f"{100 * summary['final_test_accuracy']:.2f} %"),
        ("best test accuracy", f"{100 * summary['best_test_accuracy']:.2f} %"),
        ("uplink bytes", f"{summary['uplink_bytes']:,}"),
        ("downlink bytes", f"{summary['downlink_bytes']:,}"),
        # Sums over every round trained, not per-round figures.
        ("total simulated latency (s)", summary["total_latency_s"]),
        ("total simulated energy (J)", summary["total_energy_j"]),
        ("mean bits", summary["mean_bits"]),
        ("final bound", summary["final_bound"]),
        ("allocation", summary["allocation"].get("source")),
        ("calibration", summary["calibration"]["source"]),
        ("wall time (s)", summary["wall_time_s"]),
    ]
    for name, value in rows:
        table.add_row(name, _fmt(value))
    print_table(stdout, table)


def _calibrate_first(config: Any, err: Console) -> None:
    """``train --calibrate``: calibrate and save the bound of ``config`` unless one is stored."""
    from sflam_opt.training.calibrate import calibrate_config
    from sflam_opt.training.calibration_store import find_calibration, save_calibration

    if find_calibration(config) is not None:
        return
    seeds = tuple(config.seed + CALIBRATION_SEED_OFFSET + i for i in range(2))
    with _RoundBars(err, config.rounds) as bars:
        result = calibrate_config(
            config,
            seeds=seeds,
            progress=lambda label, row: bars.update(f"calibrate {label}", row),
        )
    path = save_calibration(result["entry"])
    err.print(f"saved the bound's calibration to {path}", highlight=False)


# ------------------------------------------------------------------------------ calibrate
def _parse_ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(tok) for tok in text.split(",") if tok.strip())
    except ValueError:
        raise TrainingConfigError(
            f"{name}: invalid list {text!r}; give comma-separated whole numbers, e.g. 2,3"
        ) from None


def calibrate_command(
    model: ModelOpt = _D["model"],
    dataset: DatasetOpt = _D["dataset"],
    data_dir: DataDirOpt = None,
    devices: DevicesOpt = _D["devices"],
    devices_per_round: DevicesPerRoundOpt = None,
    alpha: AlphaOpt = _D["alpha"],
    rounds: Annotated[int, typer.Option(help="Rounds of every calibration run.")] = _D["rounds"],
    lr: LrOpt = _D["lr"],
    momentum: MomentumOpt = _D["momentum"],
    batch_size: BatchOpt = _D["batch_size"],
    local_iters: ItersOpt = _D["local_iters"],
    image_size: ImageSizeOpt = None,
    bits: Annotated[str, typer.Option(help="Bit widths of the quantized runs, e.g. 2,3.")] = "2",
    target_rounds: Annotated[
        int | None, typer.Option(help="K of the epsilon rule (default: --rounds).")
    ] = None,
    seeds: Annotated[
        str, typer.Option(help="Calibration seeds, e.g. 100,101 (two or more add a margin).")
    ] = "100,101",
    device: DeviceOpt = _D["device"],
    threads: ThreadsOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the calibrated scenario TOML here.")
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save", help="Store it so `train` uses it for this configuration automatically."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimates as JSON.")] = False,
) -> None:
    """Estimate the bound's A, Phi0 and q from short runs; write a calibrated scenario."""
    stdout, err = _consoles()
    with _errors_to_exit(err):
        from sflam_opt.training.calibrate import calibrate_config, calibration_scenario

        widths = _parse_ints(bits, "bits")
        if out is not None:
            check_writable(out)
        from sflam_opt.training.config import TrainConfig

        config = TrainConfig(
            **_run_options(model, dataset, data_dir, devices, devices_per_round, alpha, rounds),
            lr=lr,
            momentum=momentum,
            batch_size=batch_size,
            local_iters=local_iters,
            image_size=image_size,
            device=device,
            threads=threads,
        )
        with _RoundBars(err, rounds) as bars:
            result = calibrate_config(
                config,
                seeds=_parse_ints(seeds, "seeds"),
                bits=widths,
                target_rounds=target_rounds,
                progress=lambda label, row: bars.update(f"calibrate {label}", row),
            )
        if out is not None:
            atomic_write_text(out, calibration_scenario(result).to_toml())
            err.print(f"wrote {out}", highlight=False)
        if save:
            from sflam_opt.training.calibration_store import save_calibration

            err.print(f"saved to {save_calibration(result['entry'])}", highlight=False)
        public = {k: v for k, v in result.items() if k != "scenario"}
        if as_json:
            typer.echo(json.dumps(public, indent=2))
            return
        table = Table(title=f"sflam-opt calibrate: {model} on {dataset}")
        table.add_column("constant")
        table.add_column("value", justify="right")
        for key in ("a", "phi0", "q", "epsilon", "margin", "f_w0", "f_inf", "a_measured"):
            table.add_row(key, _fmt(result[key]))
        for b, floor in result["floors"].items():
            table.add_row(f"gradient floor at {b} bits", _fmt(floor))
        print_table(stdout, table)


# ------------------------------------------------------------------------------ memory
def memory_command(
    model: Annotated[str, typer.Option(help="Split ViT preset.")] = "vit-b32",
    batch: Annotated[int, typer.Option(help="Mini-batch size.")] = 32,
    protocol: Annotated[str, typer.Option(help="sflam (device part only) or fl (whole model).")] = (
        "sflam"
    ),
    bits: Annotated[int, typer.Option(help="Uplink bits for sflam.")] = 8,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: preset's).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurement as JSON.")] = False,
) -> None:
    """Measure the device's peak memory of one training step (SFLAM vs whole-model FL)."""
    stdout, err = _consoles()
    with _errors_to_exit(err):
        from sflam_opt.training.memory import measure_device_memory

        with err.status(f"measuring one training step of {model} in a subprocess ..."):
            result = measure_device_memory(
                model, batch, protocol, image_size=image_size, seed=seed, bits=bits
            )
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        table = Table(title=f"device memory: {model}, batch {batch}, {protocol}")
        table.add_column("quantity")
        table.add_column("MB", justify="right")
        table.add_row("measured peak", _fmt(result["device_peak_mb"]))
        table.add_row("analytic total", _fmt(result["analytic_mb"]))
        for key, value in result["breakdown_mb"].items():
            table.add_row(f"  {key}", _fmt(value))
        print_table(stdout, table)
        err.print(f"method: {result['method']}", highlight=False)


_COMMANDS: dict[str, Callable[..., None]] = {
    "train": train_command,
    "calibrate": calibrate_command,
    "memory": memory_command,
}


def register(app: typer.Typer) -> None:
    """Add ``train``, ``calibrate`` and ``memory`` to ``app``."""
    for name, func in _COMMANDS.items():
        app.command(name)(func)
