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
``bits`` then overrides the bits with a uniform width. The default scenario takes its
``[convergence]`` table from a stored calibration of exactly the configuration trained
(:mod:`.calibration_store`); without one it keeps docs/formulation.md §7's constants (which describe
ViT-B/32) and the run warns that the bound is uncalibrated. The ``[training]`` table's
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
from sflam_opt.training.calibration_store import find_calibration, uncalibrated_message
from sflam_opt.training.config import TrainConfig
from sflam_opt.training.data import ImageDataset, load_dataset
from sflam_opt.training.gloo_runner import gloo_protocol, worker_totals
from sflam_opt.training.models import ModelSpec, build_split_model, input_size, model_spec
from sflam_opt.training.partition import dirichlet_partition, partition_sizes
from sflam_opt.training.protocols import PROTOCOLS, ClientData, Protocol, RoundPlan
from sflam_opt.training.protocols.base import PURPOSE_PARTICIPANTS, round_generator
from sflam_opt.training.quantizer import FP32_BITS, MAX_BITS
from sflam_opt.training.schedule import RoundSchedule
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


def resolve_allocation(
    config: TrainConfig, spec: ModelSpec, sizes: NDArray[np.int64]
) -> tuple[Scenario, Allocation, dict[str, Any]]:
    """The scenario to cost rounds with and the allocation to apply (module docstring).

    Returns
    -------
    (Scenario, Allocation, dict)
        The dict says where the allocation came from (``source``, ``solver``, ``status``...).
    """
    n = config.devices
    convergence = "scenario"
    if config.scenario is not None:
        base = Scenario.from_toml(config.scenario)
    else:
        base = Scenario.default(devices=n, seed=config.seed)
        calibrated = find_calibration(config)
        if calibrated is not None:
            base = base.replace(convergence=calibrated.convergence)
            convergence = calibrated.label
        else:
            logger.warning(uncalibrated_message(config))
            convergence = "uncalibrated: docs/formulation.md §7 constants"
    scenario = trainer_scenario(base, spec, config, sizes)
    info: dict[str, Any]
    if config.allocation is not None:
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
        info = {
            "source": f"allocation:{config.allocation}",
            "solver": None,
            "status": None,
            "convergence": convergence,
        }
    else:
        result = solve(scenario, solver=config.solver)
        if result.status in ("infeasible", "failed") or result.allocation is None:
            raise (InfeasibleError if result.status == "infeasible" else SflamRuntimeError)(
                f"scenario: solver {config.solver!r} returned {result.status}: {result.message}"
            )
        alloc = result.allocation
        source = f"scenario:{config.scenario}" if config.scenario else "default-scenario"
        info = {
            "source": source,
            "solver": config.solver,
            "status": result.status,
            "objective": float(result.objective),
            "convergence": convergence,
        }
    if config.bits is not None:
        alloc = Allocation(
            np.full(n, config.bits, dtype=np.int64), alloc.bandwidth_hz, alloc.power_w, alloc.ids
        )
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
    for key, value in config.to_dict().items():
        if key not in _RESUME_FREE and saved.get(key) != value:
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
    threads = config.threads
    if threads is None:
        shape = model_spec(
            config.model,
            num_classes=data.num_classes,
            image_size=input_size(config.model, data.image_size, config.image_size),
            in_chans=data.in_chans,
        )
        threads = default_threads(shape, config.batch_size)
    with _torch_threads(threads), ExitStack() as stack:
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
        device_model.to(where)
        server_model.to(where)
        protocol_cls = PROTOCOLS[config.protocol]

        ckpt: dict[str, Any] | None = None
        if config.resume:
            assert out is not None
            ckpt, scenario, allocation, info = _restore(config, out / CHECKPOINT_NAME, sizes)
        else:
            scenario, allocation, info = resolve_allocation(config, spec, sizes)

        if config.transport == "gloo":
            protocol = stack.enter_context(
                gloo_protocol(
                    config, protocol_cls, device_model, server_model, sizes=sizes, threads=threads
                )
            )
        else:
            protocol = protocol_cls(
                device_model,
                server_model,
                data=_client_data(data, parts, where),
                transport=InProcessTransport(config.devices, where, where),
                lr=config.lr,
                momentum=config.momentum,
                batch_size=config.batch_size,
                local_iters=config.local_iters,
            )
        transport = protocol.transport
        metrics: list[dict[str, Any]] = []
        prior_wall = 0.0
        if ckpt is not None:
            protocol.load_state_dict(ckpt["protocol"])
            metrics = list(ckpt["metrics"])
            prior_wall = float(ckpt["wall_time_s"])
            _set_rng_state(ckpt["rng"])

        bits = _bits_used(protocol_cls, allocation)
        schedule = RoundSchedule(config, scenario, allocation, info, protocol_cls, spec)
        if ckpt is not None:
            schedule.load_state_dict(ckpt.get("schedule"))
        x_test, y_test = data.x_test.to(where), data.y_test.to(where)
        k = config.participants_per_round
        # Checkpoint entries that do not change from round to round.
        fixed = {
            "format": _CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "scenario": scenario.to_toml(),
            "allocation": allocation.to_json(),
            "allocation_info": dict(info),
            "partition_sizes": sizes.tolist(),
        }

        for r in range(len(metrics) + 1, config.rounds + 1):
            participants = sample_participants(config.seed, r, config.devices, k)
            planned = schedule.round(r, participants)
            bits = planned.bits
            transport.meter.reset()
            try:
                stats = protocol.run_round(RoundPlan(r, participants, bits, config.seed))
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
            test_loss, test_acc = evaluate_model(protocol.global_model(), x_test, y_test)
            latency, energy = protocol_cls.round_cost(
                planned.latency_s, planned.energy_j, planned.index
            )
            row: dict[str, Any] = {
                "round": r,
                "train_loss": stats.train_loss,
                "grad_sq_norm": stats.grad_sq_norm,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                **transport.meter.summary(),
                "latency_s": latency,
                "energy_j": energy,
                "bound": float(bound(scenario, bits, r)),
                "participants": participants.tolist(),
                **planned.row,
                **protocol.round_extras(),
            }
            metrics.append(row)
            if out is not None:
                fixed["wall_time_s"] = prior_wall + time.perf_counter() - started
                _save_checkpoint(
                    out / CHECKPOINT_NAME,
                    {
                        **fixed,
                        "round": r,
                        "protocol": protocol.state_dict(),
                        "metrics": metrics,
                        "rng": _rng_state(),
                        "schedule": schedule.state_dict(),
                    },
                )
                _write_outputs(out, metrics)
            logger.info(
                "round %d/%d: loss %.4f, test accuracy %.4f",
                r,
                config.rounds,
                stats.train_loss,
                test_acc,
            )
            if progress is not None:
                progress(row)

        wall_time = prior_wall + time.perf_counter() - started
        summary = _summary(
            config, metrics, spec, scenario, bits, info, wall_time, protocol_cls.quantized
        )
        summary.update(worker_totals(metrics))
        if summary["diverged"]:
            logger.warning(
                "%s diverged: the training loss of the last rounds is over twice the first "
                "round's and ln(%d), a uniform guess's (try a lower --lr)",
                config.protocol,
                spec.num_classes,
            )
        if out is not None:
            atomic_write_json(out / SUMMARY_NAME, summary)
            from sflam_opt.training.plots import plot_curves

            plot_curves(metrics, out / CURVES_NAME, title=f"{config.protocol} / {config.model}")
        model = protocol.global_model()
    return TrainResult(config, metrics, summary, scenario, allocation, model, spec)


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
