"""Shared machinery of the benchmarks: profiles, output files, machine description, measurement.

Every benchmark section writes its raw rows as CSV and a JSON document (data + metadata: command,
profile, seeds, machine, date, elapsed time) into ``<out>/figures/``; :mod:`benchmarks.report`
renders ``<out>/results.md`` from those files only, so the report never holds a number that the
code did not just write to disk.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sflam_opt.io import atomic_write_json, atomic_write_text
from sflam_opt.training.config import TrainConfig

__all__ = [
    "run_spawned",
    "PROFILES",
    "REPO",
    "BenchContext",
    "Profile",
    "checkout_env",
    "finite_mean",
    "jsonable",
    "machine_info",
    "median",
    "peak_memory",
    "rss_peak",
    "read_csv",
    "read_json",
    "utc_now",
    "write_csv",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Sub-directory of the output directory holding figures, CSV and JSON.
FIGURES = "figures"
#: The repository root (the checkout these benchmarks run from).
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Profile:
    """Sizes of every benchmark; ``all`` reproduces the published results, ``quick`` is for CI.

    Attributes
    ----------
    name : str
        ``"all"``, ``"quick"`` or a custom label (tests).
    seed : int
        Root seed: default scenarios are ``Scenario.default(N, seed)``, the optimality instances
        use seeds ``seed .. seed + optimality_instances - 1``.
    repeats : int
        Timed repetitions per speed-ladder point (the median is reported).
    speed_time_cap_s : float
        A speed-ladder point whose solve exceeds this many seconds is not repeated.
    bcd_sizes, fast_sizes : tuple of int
        Device counts N of the speed ladder for the BCD methods and for ``fast``.
    bcd_methods : tuple of str
        BCD methods of the speed ladder and the BCD trace: ``"bcd"`` as shipped and
        ``"bcd-pure"``, pure block descent (:data:`benchmarks.solve.VARIANTS`).
    cold_runs : bool
        Also time each speed-ladder point's first solve in a fresh process.
    bits_milp_max_devices : int
        Largest N at which the bits-block method table times the MILP.
    optimality_instances : int
        Random small scenarios compared against ``exact``.
    optimality_solvers : tuple of str
        Solvers and baselines whose gap to ``exact`` is measured.
    savings_sizes : tuple of int
        N of the savings table (default scenario).
    savings_solvers, savings_baselines : tuple of str
        Optimizers and the baselines they are compared with.
    bcd_max_savings_n : int
        Largest N at which ``bcd`` runs in the savings table (its time grows fastest).
    pareto_devices : int
        N of the Pareto-front scenario.
    pareto_weights : tuple of float
        Latency weights omega of the Pareto sweep.
    pareto_solver : str
        Solver used for the Pareto sweep.
    bcd_trace_sizes : tuple of int
        N of the default scenarios whose BCD iterations are traced (plus constrained variants).
    train_alphas : tuple of float
        Dirichlet concentrations of the non-IID split.
    train_protocols : tuple of str
        Training protocols compared.
    train_seeds : tuple of int
        Seeds of every training configuration.
    train_rounds : int
        Rounds per training run.
    train_devices : int
        Devices in every training run.

        Rounds, devices, lr, momentum, batch size and local steps default to those of
        ``sflam-opt train`` (:class:`sflam_opt.training.config.TrainConfig`), so the benchmark
        trains the configuration users run and whose convergence bound is calibrated
        (``sflam_opt/training/calibrations/``).
    train_target : float
        Test accuracy whose first crossing defines "rounds to target".
    train_lr, train_lr_sl : float
        SGD learning rate of every protocol but SL, and of SL (sequential SL diverges at the
        parallel protocols' rate).
    train_momentum : float
        SGD momentum of the local optimizers.
    train_batch_size, train_local_iters : int
        Mini-batch size and local steps per round.
    train_solver : str
        Solver giving bandwidth, power and SFLAM's bits.
    train_workers : int
        Parallel training processes (runs are independent; one torch thread each).
    train_uniform_bits : tuple of int
        Uniform uplink bit widths compared with the solver's bits (32 = fp32).
    train_bits_alpha : float
        Dirichlet alpha of the bits comparison.
    calibration_seed, calibration_bits
        Held-out seed and uniform bit widths of the run that calibrates the bound's constants
        (``sflam_opt.training.calibrate``) at ``train_bits_alpha``.
    cifar_rounds, cifar_lr, cifar_batch_size
        Rounds, learning rate and batch of the optional CIFAR-10 ViT-B/32 run (GPU only).
    memory_batches : tuple of int
        Batch sizes of the memory benchmark.
    memory_model : str
        Model preset of the memory benchmark.
    """

    name: str
    seed: int = 0
    repeats: int = 3
    speed_time_cap_s: float = 60.0
    bcd_sizes: tuple[int, ...] = (10, 100, 1000)
    fast_sizes: tuple[int, ...] = (10, 100, 1000, 10_000, 100_000)
    bcd_methods: tuple[str, ...] = ("bcd", "bcd-pure")
    cold_runs: bool = True
    bits_milp_max_devices: int = 300
    optimality_instances: int = 200
    optimality_solvers: tuple[str, ...] = (
        "fast",
        "bcd",
        "bcd-pure",
        "equal",
        "fixed-bits",
        "bandwidth-only",
        "power-only",
        "bits-only",
    )
    savings_sizes: tuple[int, ...] = (10, 50, 200, 1000)
    savings_solvers: tuple[str, ...] = ("fast", "bcd")
    savings_baselines: tuple[str, ...] = (
        "equal",
        "fixed-bits",
        "bandwidth-only",
        "power-only",
        "bits-only",
    )
    bcd_max_savings_n: int = 1000
    pareto_devices: int = 10
    pareto_weights: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 3).tolist())
    pareto_solver: str = "fast"
    bcd_trace_sizes: tuple[int, ...] = (10, 50)
    train_alphas: tuple[float, ...] = (0.1, 0.5, 1.0)
    train_protocols: tuple[str, ...] = ("sflam", "sfl", "fl", "sl")
    train_seeds: tuple[int, ...] = (0, 1, 2)
    train_rounds: int = TrainConfig.rounds
    train_devices: int = TrainConfig.devices
    train_target: float = 0.9
    train_lr: float = TrainConfig.lr
    train_lr_sl: float = 0.02
    train_momentum: float = TrainConfig.momentum
    train_batch_size: int = TrainConfig.batch_size
    train_local_iters: int = TrainConfig.local_iters
    train_solver: str = "fast"
    train_workers: int = 2
    train_uniform_bits: tuple[int, ...] = (2, 4, 8, 32)
    train_bits_alpha: float = 0.5
    calibration_seed: int = 100
    calibration_bits: tuple[int, ...] = (2, 4)
    cifar_rounds: int = 20
    cifar_lr: float = 0.01
    cifar_batch_size: int = 32
    memory_batches: tuple[int, ...] = (8, 32, 128)
    memory_model: str = "vit-b32"

    def replace(self, **changes: Any) -> Profile:
        """A copy with some sizes changed (used by tests to shrink a profile further)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view, recorded in every output JSON."""
        return jsonable(dataclasses.asdict(self))


PROFILES: dict[str, Profile] = {
    "all": Profile("all"),
    "quick": Profile(
        "quick",
        repeats=3,
        bcd_sizes=(10,),
        fast_sizes=(10, 100, 1000, 10_000),
        optimality_instances=20,
        savings_sizes=(10, 50),
        bcd_max_savings_n=10,
        pareto_weights=(0.0, 0.25, 0.5, 0.75, 1.0),
        bcd_trace_sizes=(10,),
        train_alphas=(0.5,),
        train_seeds=(0,),
        train_rounds=4,
        train_uniform_bits=(2, 32),
        calibration_bits=(2,),
        memory_batches=(8,),
    ),
}


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is simply "not installed"
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def checkout_env() -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``.

    Child processes started with it (``python -m benchmarks.<module>``) import the same
    ``benchmarks`` and ``sflam_opt`` as the parent, whatever directory they start in.
    """
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x)
    return {**os.environ, "PYTHONPATH": path}


def machine_info() -> dict[str, Any]:
    """What the results were measured on: CPU, cores, RAM, OS, Python and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        import torch

        threads = torch.get_num_threads()
        cuda = bool(torch.cuda.is_available())
    except ImportError:
        threads, cuda = None, False
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "cvxpy": _version("cvxpy"),
        "clarabel": _version("clarabel"),
        "torch": _version("torch"),
        "torch_threads": threads,
        "cuda": cuda,
        "sflam_opt": _version("sflam-opt") or _package_version(),
        "git_commit": _git_commit(),
        "load_avg_1m": load,
    }


def _package_version() -> str:
    import sflam_opt

    return sflam_opt.__version__


def jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars/arrays converted, non-finite floats written as null."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _cell(v: Any) -> str:
    if isinstance(v, float | np.floating) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    v = jsonable(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) as CSV with the given column order.

    Missing values and nan are written as empty cells, infinities as ``inf``/``-inf``; lists and
    dicts as JSON.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_csv`; numeric cells (and ``inf``) become int/float,
    empty cells None."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: _parse(v) for k, v in r.items()} for r in rows]


def _parse(v: str) -> Any:
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_json(path: Path) -> Any:
    """Parse a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def finite_mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite values (None when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(xs)) if xs else None


def median(values: Iterable[float]) -> float:
    """Median of finite values (nan when there are none)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return float(np.median(arr)) if arr.size else float("nan")


def _rss_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    # Linux >= 4.0: writing 5 resets the VmHWM high-water mark to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_peak(fn: Callable[[], T]) -> tuple[T, float | None]:
    """Run ``fn`` once; return its result and the rise of the resident-set high-water mark (MiB).

    Costs nothing during the call (Linux ``/proc/self/clear_refs`` + ``VmHWM``); None where
    unsupported. Memory the allocator already held from earlier work is not counted again.
    """
    rss0 = _rss_kib("VmRSS") if _reset_rss_peak() else None
    result = fn()
    hwm = _rss_kib("VmHWM") if rss0 is not None else None
    return result, None if hwm is None or rss0 is None else max(hwm - rss0, 0) / 1024


def peak_memory(fn: Callable[[], T]) -> tuple[T, dict[str, float | None]]:
    """Run ``fn`` once and measure its peak memory.

    Returns
    -------
    (result, memory)
        ``memory["traced_peak_mib"]``: peak of Python and numpy allocations made during the call
        (``tracemalloc``; native allocations of compiled solvers such as Clarabel are not seen);
        ``memory["rss_peak_delta_mib"]``: rise of the process's resident-set high-water mark over
        its resident size at the start (Linux only, None elsewhere). The RSS figure sees native
        memory too but under-counts memory the allocator already held from earlier work.
    """
    rss0 = _rss_kib("VmRSS") if _reset_rss_peak() else None
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    hwm = _rss_kib("VmHWM") if rss0 is not None else None
    return result, {
        "traced_peak_mib": (peak - base) / 2**20,
        "rss_peak_delta_mib": None if hwm is None or rss0 is None else max(hwm - rss0, 0) / 1024,
    }


Progress = Callable[[str, float], None]


def _no_progress(label: str, advance: float) -> None:
    return None


@dataclass
class BenchContext:
    """Where a benchmark writes, with what sizes, and how it reports progress.

    Attributes
    ----------
    out_dir : Path
        Root output directory (``results.md`` goes here, data and figures in ``figures/``).
    profile : Profile
        Sizes.
    command : str
        The exact command line that produced the outputs (recorded under every figure).
    progress : callable
        ``progress(label, advance)``: called with a short description and the fraction of the
        current section completed since the last call.
    cifar10_dir : Path, optional
        CIFAR-10 directory for the optional ViT-B/32 training run.
    """

    out_dir: Path
    profile: Profile
    command: str
    progress: Progress = _no_progress
    cifar10_dir: Path | None = None
    written: list[Path] = field(default_factory=list)
    load_at_start: float | None = None

    def __post_init__(self) -> None:
        try:
            self.load_at_start = round(os.getloadavg()[0], 2)
        except OSError:
            self.load_at_start = None

    @property
    def figures(self) -> Path:
        """``<out>/figures``, created on first use."""
        p = Path(self.out_dir) / FIGURES
        p.mkdir(parents=True, exist_ok=True)
        return p

    def csv(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
        """Write ``figures/<name>.csv``."""
        path = write_csv(self.figures / f"{name}.csv", rows, columns)
        self.written.append(path)
        return path

    def json(self, name: str, obj: Any) -> Path:
        """Write ``figures/<name>.json``."""
        path = atomic_write_json(self.figures / f"{name}.json", jsonable(obj), indent=1)
        self.written.append(path)
        return path

    def text(self, name: str, text: str) -> Path:
        """Write ``<out>/<name>`` (the report)."""
        path = atomic_write_text(Path(self.out_dir) / name, text)
        self.written.append(path)
        return path

    def figure_path(self, name: str) -> Path:
        """Path of ``figures/<name>.png``; the caller saves the PNG there."""
        path = self.figures / f"{name}.png"
        self.written.append(path)
        return path

    def meta(self, section: str, started: float, started_utc: str, **extra: Any) -> dict[str, Any]:
        """Metadata block stored in each section's JSON."""
        return {
            "section": section,
            "command": self.command,
            "profile": self.profile.to_dict(),
            "started_utc": started_utc,
            "elapsed_s": time.perf_counter() - started,
            "machine": {**machine_info(), "load_avg_1m_at_start": self.load_at_start},
            **extra,
        }


def run_spawned(
    fn: Callable[..., T],
    jobs: Sequence[tuple[Any, ...]],
    workers: int,
    done: Callable[[int], Any],
    order: Sequence[int] | None = None,
) -> list[T]:
    """``fn(*jobs[i])`` for every job, over ``workers`` spawned processes; results in job order.

    Spawned, not forked: each worker is a fresh interpreter (no forked torch state), so a job
    measures what one process would. ``order`` is the submission order (longest first, so the
    pool does not end waiting on one job); ``done(i)`` is called as job ``i`` finishes. One
    worker runs the jobs in this process.
    """
    order = range(len(jobs)) if order is None else order
    results: dict[int, T] = {}
    if workers <= 1:
        for i in order:
            results[i] = fn(*jobs[i])
            done(i)
    else:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = {pool.submit(fn, *jobs[i]): i for i in order}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                done(i)
    return [results[i] for i in range(len(jobs))]
