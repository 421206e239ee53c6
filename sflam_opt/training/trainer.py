"""The split-federated trainer: applies an allocation and measures what it does to learning.

:func:`train` partitions a data set over ``N`` devices (Dirichlet, :mod:`.partition`), builds a
split ViT (:mod:`.models`), obtains an allocation (bits, bandwidth, power) and trains with one of
the protocols of :mod:`.protocols` -- SFLAM (arXiv 2504.09114), SFL-V1 (Thapa et al. 2022), FedAvg
or sequential SL -- for a number of rounds. Per round it records the training loss, the test
accuracy of the aggregated model, the average squared norm of the whole-model stochastic gradient,
the bytes that crossed the transport, the simulated round latency and energy of the cost model
(docs/formulation.md §2) and the convergence bound of docs/formulation.md §4 for the bits used.

Cost-model link. The scenario describes what is really trained: its ``[model]`` table comes from
the split model (``d`` = activation values per sample, ``M`` = device parameters, cycles per sample
from the FLOP counts at :data:`CYCLES_PER_FLOP` cycles per FLOP), its ``[training]`` table from
the batch size, local iterations and learning rate, and the device data sizes ``D_n`` from the
partition. Trainer device ``n`` is scenario device ``n`` (matched by position). Devices not
taking part in a round do not count: round latency and energy are those of the participants under
their allocated bandwidth and power (no re-allocation of the idle devices' bandwidth).

Allocation source, in order: ``allocation`` (a file written by ``sflam-opt solve``), else solve
``scenario`` (a file) or ``Scenario.default(devices=N, seed=seed)`` with the ``solver``;
``bits`` then overrides the bits with a uniform width. The ``[convergence]`` table follows
``config.calibration`` (:mod:`.online`): a stored calibration of exactly the configuration trained
(:mod:`.calibration_store`), the online fit of the run's first rounds (docs/formulation.md §4.3,
after which the bits are solved again), or the scenario's own table (for the default scenario
docs/formulation.md §7's ViT-B/32 constants, with an "uncalibrated" warning). The ``[training]`` table's
``learning_rate`` is the effective step ``lr / (1 - momentum)`` (:func:`sflam_opt.bounds.effective_step`).
Non-quantizing protocols use the allocation's bandwidth and power only (:mod:`.protocols`
documents each protocol's cost formulas).

Reproducibility. Every random draw -- partition, participants, mini-batches, quantization noise --
comes from an explicit generator seeded from ``(seed, round, device, purpose)``; a checkpoint
(models, optimizer states, global RNG states, metrics, scenario, allocation, config) is written
atomically after every round, and ``resume`` continues to exactly the result of an uninterrupted
run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import bound, effective_step, rounds_needed
from sflam_opt.errors import (
    AllocationError,
    InfeasibleError,
    SflamError,
    SflamRuntimeError,
    TrainingConfigError,
    TrainingRuntimeError,
)
from sflam_opt.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import solve
from sflam_opt.training.calibration_store import uncalibrated_message
from sflam_opt.training.config import TrainConfig
from sflam_opt.training.data import ImageDataset, load_dataset
from sflam_opt.training.gloo_runner import gloo_protocol, worker_totals
from sflam_opt.training.models import ModelSpec, build_split_model, input_size, model_spec
from sflam_opt.training.online import (
    WARMUP_BITS,
    CalibrationChoice,
    OnlineCalibration,
    choose_calibration,
    summary_entry,
)
from sflam_opt.training.partition import dirichlet_partition, partition_sizes
from sflam_opt.training.protocols import PROTOCOLS, ClientData, Protocol, RoundPlan
from sflam_opt.training.protocols.base import PURPOSE_PARTICIPANTS, round_generator
from sflam_opt.training.quantizer import FP32_BITS, MAX_BITS
from sflam_opt.training.schedule import RoundSchedule, uniform_bits
from sflam_opt.training.transport import InProcessTransport

__all__ = [
    "CHECKPOINT_NAME",
    "CYCLES_PER_FLOP",
    "METRICS_NAME",
    "SUMMARY_NAME",
    "CURVES_NAME",
    "TrainConfig",
    "TrainResult",
    "default_threads",
    "diverged",
    "evaluate_model",
    "load_metrics",
    "model_tables",
    "resolve_allocation",
    "sample_participants",
    "trainer_scenario",
    "train",
]

logger = logging.getLogger(__name__)

#: Cycles per FLOP used to turn the model's FLOPs per sample into the formulation's c_d and c_s.
#: One cycle per FLOP is a scalar in-order core; SIMD devices do several FLOPs per cycle.
CYCLES_PER_FLOP = 1.0

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
_CHECKPOINT_FORMAT = 1
#: Config fields that may differ between a run and its resumption.
_RESUME_FREE = ("rounds", "resume", "out", "transport", "workers", "timeout_s")
_CHECKPOINT_KEYS = (
    "config",
    "round",
    "partition_sizes",
    "scenario",
    "allocation",
    "allocation_info",
    "metrics",
    "protocol",
    "wall_time_s",
    "rng",
)
_EVAL_BATCH = 1024
_SMALL_STEP_FLOPS = 1e9


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    config : TrainConfig
        The configuration trained.
    metrics : list of dict
        One row per round (the lines of ``metrics.jsonl``).
    summary : dict
        Totals and final values (``summary.json``; the ``--json`` output).
    scenario : Scenario
        The scenario the costs and the bound were computed with (model/training tables of the
        trained model, ``D_n`` of the partition).
    allocation : Allocation
        The allocation applied (after any ``bits`` override).
    model : nn.Module
        The final global model (device part then server part).
    spec : ModelSpec
        The trained model's spec.
    """

    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    scenario: Scenario
    allocation: Allocation
    model: nn.Module
    spec: ModelSpec


# ------------------------------------------------------------------------------------------
# Helpers (free functions, testable on their own)


def sample_participants(seed: int, round_index: int, n_devices: int, k: int) -> NDArray[np.int64]:
    """The ``k`` participants of a round, in processing order (a seeded random permutation)."""
    gen = round_generator(seed, round_index, -1, PURPOSE_PARTICIPANTS)
    return torch.randperm(n_devices, generator=gen)[:k].numpy().astype(np.int64)


def evaluate_model(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode, no grad."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, x.shape[0], _EVAL_BATCH):
            logits = model(x[start : start + _EVAL_BATCH])
            target = y[start : start + _EVAL_BATCH]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    return loss_sum / n, correct / n


def model_tables(spec: ModelSpec, config: TrainConfig) -> dict[str, dict[str, Any]]:
    """The ``[model]`` and ``[training]`` tables describing what ``config`` trains."""
    return {
        "model": {
            "activation_elems": int(spec.activation_elems),
            "device_cycles_per_sample": float(spec.device_flops_per_sample * CYCLES_PER_FLOP),
            "server_cycles_per_sample": float(spec.server_flops_per_sample * CYCLES_PER_FLOP),
            "device_params": int(spec.device_params),
        },
        "training": {
            "batch_size": int(config.batch_size),
            "local_iters": int(config.local_iters),
            "learning_rate": effective_step(config.lr, config.momentum),
        },
    }


def trainer_scenario(
    base: Scenario, spec: ModelSpec, config: TrainConfig, sizes: NDArray[np.int64]
) -> Scenario:
    """``base`` with the ``[model]``/``[training]`` tables and ``D_n`` of what is trained."""
    if base.n_devices != len(sizes):
        raise TrainingConfigError(
            f"scenario: has {base.n_devices} devices but --devices is {len(sizes)}; "
            f"trainer device n is scenario device n, so give --devices {base.n_devices}"
        )
    devices = dataclasses.replace(base.devices, samples=np.asarray(sizes, dtype=np.int64))
    return base.replace(**model_tables(spec, config), devices=devices)


def _check_bits(bits: NDArray[np.int64]) -> None:
    ok = ((bits >= 1) & (bits <= MAX_BITS)) | (bits == FP32_BITS)
    if not ok.all():
        n = int(np.flatnonzero(~ok)[0])
        raise TrainingConfigError(
            f"bits: device {n} has bits={int(bits[n])}, which the quantizer cannot send; "
            f"use widths in 1..{MAX_BITS} or 32 ([bits] of the scenario, or --bits)"
        )


def _base_scenario(config: TrainConfig, choice: CalibrationChoice) -> tuple[Scenario, str]:
    """The scenario before the trained model's tables, and its ``convergence`` label."""
    if config.scenario is not None:
        base = Scenario.from_toml(config.scenario)
    else:
        base = Scenario.default(devices=config.devices, seed=config.seed)
    if choice.stored is not None:
        return base.replace(convergence=choice.stored.convergence), choice.stored.label
    if choice.source == "online":
        return base, "online: docs/formulation.md §4.3"
    if config.scenario is not None:
        return base, "scenario"
    logger.warning(uncalibrated_message(config))
    return base, "uncalibrated: docs/formulation.md §7 constants"


def _check_model(config: TrainConfig, base: Scenario, spec: ModelSpec) -> None:
    """Refuse an allocation solved for another model; say when the scenario's model is replaced."""
    have, want = int(base.model.activation_elems), int(spec.activation_elems)
    if have == want:
        return
    if config.allocation is not None:
        if Allocation.load(config.allocation).matches(base):
            raise AllocationError(
                f"allocation: {config.allocation} was solved for activation_elems={have} but "
                f"{config.model} sends activation_elems={want} values per sample; solve again "
                "without --allocation (train re-solves the scenario for the trained model)"
            )
    elif config.scenario is not None:
        logger.warning(
            "scenario %s describes another model (activation_elems=%d, the trained %s has %d): "
            "its [model] table is replaced by the trained model's and the bits are solved for it",
            config.scenario,
            have,
            config.model,
            want,
        )


def _file_allocation(config: TrainConfig, base: Scenario) -> Allocation:
    """The ``--allocation`` file, checked against ``--devices``."""
    assert config.allocation is not None
    n = config.devices
    alloc = Allocation.load(config.allocation)
    if alloc.matches(base) is False:
        logger.warning(
            "allocation %s was solved for another scenario than the one trained "
            "(scenario_sha256 differs)",
            config.allocation,
        )
    if len(alloc) != n:
        raise AllocationError(
            f"allocation: {config.allocation} has {len(alloc)} devices but --devices is {n}; "
            "solve a scenario with that many devices"
        )
    if config.scenario is None:
        # Matched to the default scenario's devices by position, not by id.
        alloc = Allocation(alloc.bits, alloc.bandwidth_hz, alloc.power_w)
    return alloc


def solve_allocation(scenario: Scenario, config: TrainConfig) -> tuple[Allocation, dict[str, Any]]:
    """Solve ``scenario`` with ``config.solver``; the allocation and its ``status``/``objective``.

    Raises
    ------
    InfeasibleError, SflamRuntimeError
        The solver found the scenario infeasible, or failed.
    """
    result = solve(scenario, solver=config.solver)
    if result.status in ("infeasible", "failed") or result.allocation is None:
        raise (InfeasibleError if result.status == "infeasible" else SflamRuntimeError)(
            f"scenario: solver {config.solver!r} returned {result.status}: {result.message}"
        )
    return result.allocation, {"status": result.status, "objective": float(result.objective)}


def resolve_allocation(
    config: TrainConfig,
    spec: ModelSpec,
    sizes: NDArray[np.int64],
    choice: CalibrationChoice | None = None,
) -> tuple[Scenario, Allocation, dict[str, Any]]:
    """The scenario to cost rounds with and the allocation to apply (module docstring).

    Parameters
    ----------
    choice : CalibrationChoice, optional
        Where the bound's constants come from (default: :func:`choose_calibration`).

    Returns
    -------
    (Scenario, Allocation, dict)
        The dict says where the allocation came from (``source``, ``solver``, ``status``...).
    """
    choice = choose_calibration(config) if choice is None else choice
    base, convergence = _base_scenario(config, choice)
    _check_model(config, base, spec)
    scenario = trainer_scenario(base, spec, config, sizes)
    info: dict[str, Any]
    if config.allocation is not None:
        alloc = _file_allocation(config, base)
        info = {"source": f"allocation:{config.allocation}", "solver": None, "status": None}
    else:
        alloc, solved = solve_allocation(scenario, config)
        source = f"scenario:{config.scenario}" if config.scenario else "default-scenario"
        info = {"source": source, "solver": config.solver, **solved}
    info["convergence"] = convergence
    if config.bits is not None:
        alloc = uniform_bits(alloc, config.bits)
        info["bits_override"] = int(config.bits)
    if PROTOCOLS[config.protocol].quantized:
        _check_bits(alloc.bits)
    return scenario, alloc, info


def default_threads(spec: ModelSpec, batch_size: int) -> int:
    """torch CPU threads for a model: 1 when a mini-batch step is small, else up to 2.

    Below about 1 GFLOP per mini-batch step, thread hand-off costs more than it saves (measured on
    vit-tiny: 1 thread is as fast idle and ~5x faster on a loaded 2-core machine than 2 threads).
    """
    work = (spec.device_flops_per_sample + spec.server_flops_per_sample) * batch_size
    if work < _SMALL_STEP_FLOPS:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _torch_device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingConfigError(
            f"device: {name!r} requested but CUDA is not available here; use --device cpu"
        )
    if dev.type not in ("cpu", "cuda"):
        raise TrainingConfigError(f"device: {name!r} is not supported; use cpu or cuda")
    return dev


def _rng_state() -> dict[str, Any]:
    # The trainer draws only from explicit generators; the global states are saved so that any
    # third-party code using them (e.g. dropout) also resumes exactly.
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingConfigError(
            f"resume: no checkpoint at {path}; run once without --resume to start training"
        )
    try:
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: truncated, foreign, wrong torch version
        raise TrainingConfigError(
            f"resume: cannot read checkpoint {path} ({type(err).__name__}); delete it and "
            "start again without --resume"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise TrainingConfigError(
            f"resume: {path} is not a sflam-opt training checkpoint; start without --resume"
        )
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise TrainingConfigError(
            f"resume: {path} lacks {', '.join(missing)}; delete it and start without --resume"
        )
    return ckpt


def _restore(
    config: TrainConfig, path: Path, sizes: NDArray[np.int64]
) -> tuple[dict[str, Any], Scenario, Allocation, dict[str, Any]]:
    """Load and check a checkpoint; returns it with its scenario, allocation and source info."""
    ckpt = _load_checkpoint(path)
    saved = ckpt["config"]
    default = TrainConfig.__dataclass_fields__
    for key, value in config.to_dict().items():
        # Options added after a checkpoint was written take their default there.
        if key not in _RESUME_FREE and saved.get(key, default[key].default) != value:
            raise TrainingConfigError(
                f"resume: {path} was written with --{key.replace('_', '-')} {saved.get(key)!r}, "
                f"not {value!r}; rerun with the original options or drop --resume"
            )
    if ckpt["round"] > config.rounds:
        raise TrainingConfigError(
            f"rounds: checkpoint {path} already has {ckpt['round']} rounds; give --rounds >= "
            f"{ckpt['round']}"
        )
    if list(ckpt["partition_sizes"]) != sizes.tolist():
        raise TrainingConfigError(
            f"resume: the data partition differs from {path}'s (another data set version?); "
            "start without --resume"
        )
    scenario = Scenario.from_toml_string(ckpt["scenario"], source=str(path))
    allocation = Allocation.from_json(ckpt["allocation"], source=str(path))
    return ckpt, scenario, allocation, dict(ckpt["allocation_info"])


def _bits_used(protocol: type[Protocol], allocation: Allocation) -> NDArray[np.int64]:
    if protocol.quantized:
        return allocation.bits.astype(np.int64)
    return np.full(len(allocation), FP32_BITS, dtype=np.int64)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def diverged(
    train_losses: list[float], num_classes: int, window: float = 0.1, factor: float = 2.0
) -> bool:
    """Whether a run ended far worse than where it started and than guessing.

    Parameters
    ----------
    train_losses : list of float
        Mean training cross-entropy per round.
    num_classes : int
        Classes C; a uniform prediction has cross-entropy ``ln C``.
    window : float
        Fraction of the last rounds averaged (at least one round).
    factor : float
        How many times worse counts as diverged; early rounds of a healthy run can rise above
        the first round's loss by tens of percent before falling, so a plain rise is not enough.

    Returns
    -------
    bool
        ``True`` when the mean loss over the last rounds is ``factor`` times above both the
        first round's and ``ln C`` (for instance split learning on very skewed data, whose device model is pulled
        from device to device). Such runs can stay finite, so the non-finite check misses them.
    """
    if len(train_losses) < 2:
        return False
    k = max(1, int(round(window * len(train_losses))))
    start = max(train_losses[0], math.log(num_classes))
    return float(np.mean(train_losses[-k:])) > factor * start


def _summary(
    config: TrainConfig,
    metrics: list[dict[str, Any]],
    spec: ModelSpec,
    scenario: Scenario,
    bits: NDArray[np.int64],
    info: Mapping[str, Any],
    wall_time_s: float,
    quantized: bool,
) -> dict[str, Any]:
    last = metrics[-1] if metrics else {}
    acc = [m["test_accuracy"] for m in metrics]
    grad = [m["grad_sq_norm"] for m in metrics]
    return {
        "protocol": config.protocol,
        "model": config.model,
        "dataset": config.dataset,
        "devices": config.devices,
        "devices_per_round": config.participants_per_round,
        "rounds": len(metrics),
        "final_test_accuracy": last.get("test_accuracy"),
        "best_test_accuracy": max(acc) if acc else None,
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": last.get("train_loss"),
        "diverged": diverged([m["train_loss"] for m in metrics], spec.num_classes),
        "uplink_bytes": int(sum(m["uplink_bytes"] for m in metrics)),
        "downlink_bytes": int(sum(m["downlink_bytes"] for m in metrics)),
        "uplink_payload_bytes": int(sum(m["uplink_payload_bytes"] for m in metrics)),
        "downlink_payload_bytes": int(sum(m["downlink_payload_bytes"] for m in metrics)),
        "total_latency_s": float(sum(m["latency_s"] for m in metrics)),
        "total_energy_j": float(sum(m["energy_j"] for m in metrics)),
        "mean_grad_sq_norm": float(np.mean(grad)) if grad else None,
        "final_bound": last.get("bound"),
        "bits": bits.tolist() if quantized else None,
        "mean_bits": float(np.mean(bits)) if quantized else None,
        "bound_rounds_needed": _finite(float(rounds_needed(scenario, bits))),
        "allocation": dict(info),
        "model_spec": {
            "activation_elems": spec.activation_elems,
            "device_params": spec.device_params,
            "server_params": spec.server_params,
            "device_flops_per_sample": spec.device_flops_per_sample,
            "server_flops_per_sample": spec.server_flops_per_sample,
            "cycles_per_flop": CYCLES_PER_FLOP,
        },
        "seed": config.seed,
        "wall_time_s": wall_time_s,
    }


def _write_outputs(out: Path, metrics: list[dict[str, Any]]) -> None:
    atomic_write_text(out / METRICS_NAME, "".join(json.dumps(m) + "\n" for m in metrics))


# ------------------------------------------------------------------------------------------
# The driver


@dataclass
class _Run:
    """What the round loop of one :func:`train` call works with."""

    config: TrainConfig
    spec: ModelSpec
    protocol_cls: type[Protocol]
    protocol: Any
    schedule: RoundSchedule
    online: OnlineCalibration | None
    allocation: Allocation
    x_test: Tensor
    y_test: Tensor


def train(
    config: TrainConfig, *, progress: Callable[[dict[str, Any]], None] | None = None
) -> TrainResult:
    """Train ``config.rounds`` rounds of ``config.protocol`` and measure them.

    Parameters
    ----------
    config : TrainConfig
        Every option (validated on construction).
    progress : callable, optional
        Called with each round's metrics row right after the round (and its checkpoint).

    Returns
    -------
    TrainResult

    Raises
    ------
    SflamError
        Bad options, data, scenario or allocation files, an infeasible scenario, or a checkpoint
        that does not match ``config`` (one-line messages).
    """
    started = time.perf_counter()
    where = _torch_device(config.device)
    out = Path(config.out) if config.out else None
    data = load_dataset(config.dataset, config.data_dir)
    threads = config.threads if config.threads is not None else _threads_for(config, data)
    with _torch_threads(threads), ExitStack() as stack:
        parts, sizes, models, spec = _build(config, data, where)
        choice = choose_calibration(config)
        ckpt: dict[str, Any] | None = None
        if config.resume:
            assert out is not None
            ckpt, scenario, allocation, info = _restore(config, out / CHECKPOINT_NAME, sizes)
        else:
            scenario, allocation, info = resolve_allocation(config, spec, sizes, choice)
        protocol = _make_protocol(config, stack, models, data, parts, sizes, threads, where)
        run = _start_run(config, spec, protocol, scenario, allocation, info, choice, data, where)
        metrics: list[dict[str, Any]] = []
        prior_wall = 0.0
        if ckpt is not None:
            protocol.load_state_dict(ckpt["protocol"])
            metrics = list(ckpt["metrics"])
            prior_wall = float(ckpt["wall_time_s"])
            _set_rng_state(ckpt["rng"])
            _replay_fit(run, metrics)
            run.schedule.load_state_dict(ckpt.get("schedule"))
        # Checkpoint entries that do not change from round to round.
        fixed = {
            "format": _CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "scenario": scenario.to_toml(),
            "allocation": allocation.to_json(),
            "allocation_info": dict(info),
            "partition_sizes": sizes.tolist(),
        }
        bits = _bits_used(run.protocol_cls, allocation)
        for r in range(len(metrics) + 1, config.rounds + 1):
            row, bits = _train_round(run, r)
            metrics.append(row)
            if run.online is not None and run.online.due(r):
                _apply_fit(run)
            if out is not None:
                fixed["wall_time_s"] = prior_wall + time.perf_counter() - started
                _checkpoint(out, fixed, run, r, metrics)
            if progress is not None:
                progress(row)
        wall_time = prior_wall + time.perf_counter() - started
        summary = _finish(run, metrics, bits, choice, wall_time, out)
        model = protocol.global_model()
    return TrainResult(
        config, metrics, summary, run.schedule.scenario, run.schedule.static, model, spec
    )


def _threads_for(config: TrainConfig, data: ImageDataset) -> int:
    shape = model_spec(
        config.model,
        num_classes=data.num_classes,
        image_size=input_size(config.model, data.image_size, config.image_size),
        in_chans=data.in_chans,
    )
    return default_threads(shape, config.batch_size)


def _build(
    config: TrainConfig, data: ImageDataset, where: torch.device
) -> tuple[list[np.ndarray], NDArray[np.int64], tuple[nn.Module, nn.Module], ModelSpec]:
    """The partition, its sizes, the split model (on ``where``) and its spec."""
    parts = dirichlet_partition(
        data.y_train.numpy(), config.devices, config.alpha, seed=config.seed
    )
    sizes = partition_sizes(parts)
    if config.batch_size > int(sizes.min()):
        logger.warning(
            "batch-size %d is larger than the smallest device's data (%d samples); its "
            "mini-batches hold all it has",
            config.batch_size,
            int(sizes.min()),
        )
    device_model, server_model, spec = build_split_model(
        config.model,
        num_classes=data.num_classes,
        image_size=input_size(config.model, data.image_size, config.image_size),
        in_chans=data.in_chans,
        pretrained=config.pretrained,
        seed=config.seed,
        weights_path=config.weights,
    )
    return parts, sizes, (device_model.to(where), server_model.to(where)), spec


def _make_protocol(
    config: TrainConfig,
    stack: ExitStack,
    models: tuple[nn.Module, nn.Module],
    data: ImageDataset,
    parts: list[np.ndarray],
    sizes: NDArray[np.int64],
    threads: int,
    where: torch.device,
) -> Any:
    """The protocol in this process, or over gloo workers (closed with ``stack``)."""
    protocol_cls = PROTOCOLS[config.protocol]
    if config.transport == "gloo":
        return stack.enter_context(
            gloo_protocol(config, protocol_cls, *models, sizes=sizes, threads=threads)
        )
    return protocol_cls(
        *models,
        data=_client_data(data, parts, where),
        transport=InProcessTransport(config.devices, where, where),
        lr=config.lr,
        momentum=config.momentum,
        batch_size=config.batch_size,
        local_iters=config.local_iters,
    )


def _start_run(
    config: TrainConfig,
    spec: ModelSpec,
    protocol: Any,
    scenario: Scenario,
    allocation: Allocation,
    info: dict[str, Any],
    choice: CalibrationChoice,
    data: ImageDataset,
    where: torch.device,
) -> _Run:
    """The round loop's state: the schedule (with the online warm-up when there is one)."""
    protocol_cls = PROTOCOLS[config.protocol]
    online = OnlineCalibration(config, scenario) if choice.source == "online" else None
    warmup = None
    own_bits = config.allocation is None and config.bits is None
    if online is not None and own_bits and protocol_cls.quantized:
        warmup = (online.rounds, WARMUP_BITS)
    schedule = RoundSchedule(config, scenario, allocation, info, protocol_cls, spec, warmup)
    x_test, y_test = data.x_test.to(where), data.y_test.to(where)
    return _Run(config, spec, protocol_cls, protocol, schedule, online, allocation, x_test, y_test)


def _train_round(run: _Run, r: int) -> tuple[dict[str, Any], NDArray[np.int64]]:
    """Train round ``r``; its metrics row and the bits it used."""
    config, protocol = run.config, run.protocol
    participants = sample_participants(
        config.seed, r, config.devices, config.participants_per_round
    )
    planned = run.schedule.round(r, participants)
    probe = run.online.probing(r) if run.online is not None else 0
    protocol.transport.meter.reset()
    plan = RoundPlan(r, participants, planned.bits, config.seed, probe)
    try:
        stats = protocol.run_round(plan)
    except TrainingRuntimeError:  # already says what failed (e.g. a lost worker)
        raise
    except SflamError as exc:  # options were checked before the loop: non-finite values
        raise TrainingRuntimeError(
            f"lr: training failed in round {r} ({exc}); lower --lr (now {config.lr})"
        ) from None
    if not math.isfinite(stats.train_loss):
        raise TrainingRuntimeError(
            f"lr: training diverged in round {r} (loss {stats.train_loss}); lower --lr "
            f"(now {config.lr})"
        )
    test_loss, test_acc = evaluate_model(protocol.global_model(), run.x_test, run.y_test)
    latency, energy = run.protocol_cls.round_cost(
        planned.latency_s, planned.energy_j, planned.index
    )
    fitting = run.online is not None and run.online.constants is None
    row: dict[str, Any] = {
        "round": r,
        "train_loss": stats.train_loss,
        "grad_sq_norm": stats.grad_sq_norm,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        **protocol.transport.meter.summary(),
        "latency_s": latency,
        "energy_j": energy,
        # No constants are in force during the online fit rounds (docs/formulation.md §4.3).
        "bound": None if fitting else float(bound(run.schedule.scenario, planned.bits, r)),
        "participants": participants.tolist(),
        **planned.row,
        **protocol.round_extras(),
    }
    if fitting:
        assert run.online is not None
        row["calibration"] = run.online.record(r, stats.train_loss, stats.grad_sq_norm, stats.probe)
    logger.info(
        "round %d/%d: loss %.4f, test accuracy %.4f", r, config.rounds, stats.train_loss, test_acc
    )
    return row, planned.bits


def _apply_fit(run: _Run) -> None:
    """Fit the online constants and apply them (and, unless the bits are given, their bits)."""
    assert run.online is not None
    constants = run.online.fit()
    if constants is None:  # not supported yet: the warm-up goes on, the next round tries again
        return
    scenario = run.schedule.scenario.replace(convergence=constants.as_convergence())
    info = dict(run.schedule.info)
    alloc = run.allocation
    if run.config.allocation is None and not run.schedule.dynamic:
        alloc, solved = solve_allocation(scenario, run.config)
        info.update(solved)
    info["convergence"] = f"online: fitted on rounds 1..{constants.fit_rounds}"
    run.schedule.recalibrate(scenario, alloc, info)


def _replay_fit(run: _Run, metrics: list[dict[str, Any]]) -> None:
    """On resume: rebuild the online fit from the finished rounds' rows."""
    if run.online is None or not metrics:
        return
    run.online.replay(metrics)
    if run.online.constants is not None:
        run.online.constants = None
        _apply_fit(run)


def _checkpoint(
    out: Path, fixed: dict[str, Any], run: _Run, r: int, metrics: list[dict[str, Any]]
) -> None:
    _save_checkpoint(
        out / CHECKPOINT_NAME,
        {
            **fixed,
            "round": r,
            "protocol": run.protocol.state_dict(),
            "metrics": metrics,
            "rng": _rng_state(),
            "schedule": run.schedule.state_dict(),
        },
    )
    _write_outputs(out, metrics)


def _finish(
    run: _Run,
    metrics: list[dict[str, Any]],
    bits: NDArray[np.int64],
    choice: CalibrationChoice,
    wall_time: float,
    out: Path | None,
) -> dict[str, Any]:
    """The summary, the end-of-run warnings, and the output files."""
    config, spec, scenario = run.config, run.spec, run.schedule.scenario
    summary = _summary(
        config,
        metrics,
        spec,
        scenario,
        bits,
        run.schedule.info,
        wall_time,
        run.protocol_cls.quantized,
    )
    summary.update(worker_totals(metrics))
    summary["calibration"] = summary_entry(choice, scenario, run.online)
    if summary["diverged"]:
        logger.warning(
            "%s diverged: the training loss of the last rounds is over twice the first "
            "round's and ln(%d), a uniform guess's (try a lower --lr)",
            config.protocol,
            spec.num_classes,
        )
    _warn_above_bound(metrics)
    if run.online is not None and run.online.constants is None:
        logger.warning(
            "online calibration: no round supported a fit, so every round was a warm-up round "
            "(bounds null); %s",
            run.online.unsupported,
        )
    if out is not None:
        atomic_write_json(out / SUMMARY_NAME, summary)
        from sflam_opt.training.plots import plot_curves

        plot_curves(metrics, out / CURVES_NAME, title=f"{config.protocol} / {config.model}")
    return summary


def _warn_above_bound(metrics: list[dict[str, Any]]) -> None:
    """Warn when the running mean of the squared gradient norm ends above its bound."""
    if not metrics or metrics[-1].get("bound") is None:
        return
    running = float(np.mean([m["grad_sq_norm"] for m in metrics]))
    if running > metrics[-1]["bound"]:
        logger.warning(
            "the running mean of the squared gradient norm (%.4g) ends above its convergence "
            "bound (%.4g): the bound's constants do not hold for this run",
            running,
            metrics[-1]["bound"],
        )


def _client_data(data: ImageDataset, parts: list[np.ndarray], where: torch.device) -> ClientData:
    return ClientData.from_partition(data.x_train, data.y_train, parts, data.num_classes, where)


def load_metrics(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` of a run directory."""
    path = Path(out) / METRICS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SflamError(f"out: cannot read {path}: {err.strerror}") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]
