"""Options of the split-federated trainer (:class:`TrainConfig`), importable without torch.

The CLI reads the defaults from here to build ``sflam-opt train --help`` without importing torch
(about 2.5 s); validation imports the registries of protocols, models and data sets on first use.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sflam_opt.errors import TrainingConfigError

__all__ = ["CALIBRATIONS", "FADING_MODELS", "TRANSPORTS", "TrainConfig", "defaults"]

#: Values of ``fading``: none, or block Rayleigh fading redrawn every round.
FADING_MODELS = ("none", "rayleigh")

#: ``--transport`` choices.
TRANSPORTS = ("inprocess", "gloo")

#: ``--calibration`` choices: where the bound's constants come from (:mod:`.online`).
CALIBRATIONS = ("auto", "stored", "online", "scenario")


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``sflam-opt train``; invalid values raise :class:`TrainingConfigError`.

    Attributes
    ----------
    protocol : str
        ``"sflam"`` (quantized SFL-V1), ``"sfl"`` (fp32 SFL-V1), ``"fl"`` (FedAvg) or ``"sl"``.
    model : str
        Split ViT preset (:data:`sflam_opt.training.models.PRESETS`).
    dataset : str
        ``"digits"`` or ``"cifar10"`` (needs ``data_dir``).
    data_dir : str, optional
        Directory of the CIFAR-10 python batches.
    devices : int
        Devices N the training set is split over.
    devices_per_round : int, optional
        Participants K per round, drawn uniformly without replacement (default: all N).
    alpha : float
        Dirichlet concentration of the non-IID split (smaller = more skewed).
    rounds : int
        Rounds R.
    lr : float
        SGD learning rate eta (the ``[training] learning_rate``).
    momentum : float
        SGD momentum of the local optimizers, in [0, 1).
    batch_size : int
        Mini-batch size beta.
    local_iters : int
        Local iterations tau (mini-batches per participant per round).
    bits : int, optional
        Uniform uplink bits (1..16, or 32 = fp32) overriding the allocation's; ``sflam`` only.
    allocation : str, optional
        Allocation JSON file (``sflam-opt solve --out``).
    scenario : str, optional
        Scenario TOML file to solve (or to cost ``allocation`` with); must have N devices.
    solver : str
        Solver used when no ``allocation`` is given.
    seed : int
        Seed of the partition, model initialisation, sampling, quantization and default scenario.
    device : str
        torch device, ``"cpu"`` or ``"cuda"`` / ``"cuda:K"``.
    threads : int, optional
        torch CPU threads during training (default: :func:`sflam_opt.training.trainer.default_threads`).
    out : str, optional
        Output directory (metrics, summary, curves, checkpoint); nothing is written without it.
    resume : bool
        Continue from ``out/checkpoint.pt``.
    pretrained : bool
        Start from timm ImageNet weights (vit-s32 / vit-b32 only; needs the timm extra).
    fading : str
        ``"none"`` or ``"rayleigh"``: redraw every device's gain each round (block Rayleigh
        fading around its path loss) and re-solve the round (:mod:`sflam_opt.training.schedule`).
    transport : str
        ``"inprocess"`` (every device and the server in this process) or ``"gloo"`` (device
        workers in other processes, :mod:`sflam_opt.training.distributed`).
    workers : int
        Device worker processes K with ``transport="gloo"`` (each hosts a fixed share of the
        devices); at most ``devices``.
    timeout_s : float
        With ``transport="gloo"``: longest wait for any message or for the workers to start,
        seconds; a worker silent for longer is lost.
    image_size : int, optional
        Side (pixels) the model sees; images are resized to it on the device (default: the
        preset's size when the data are smaller, e.g. 224 for vit-b32 on CIFAR-10's 32 px).
    weights : str, optional
        Local timm or torch state-dict file of the preset's pretrained weights (implies
        ``pretrained``).
    calibration : str
        Source of the bound's constants: ``"auto"``, ``"stored"``, ``"online"`` or
        ``"scenario"`` (:mod:`sflam_opt.training.online`, docs/formulation.md §4.3).
    fit_rounds : int, optional
        Rounds R the online calibration fits on (default 20 % of ``rounds``, at least 5).
    """

    protocol: str = "sflam"
    model: str = "vit-tiny"
    dataset: str = "digits"
    data_dir: str | None = None
    devices: int = 20
    devices_per_round: int | None = None
    alpha: float = 0.5
    rounds: int = 80
    lr: float = 0.15
    momentum: float = 0.5
    batch_size: int = 16
    local_iters: int = 10
    bits: int | None = None
    allocation: str | None = None
    scenario: str | None = None
    solver: str = "fast"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    out: str | None = None
    resume: bool = False
    pretrained: bool = False
    fading: str = "none"
    transport: str = "inprocess"
    workers: int = 2
    timeout_s: float = 60.0
    image_size: int | None = None
    weights: str | None = None
    calibration: str = "auto"
    fit_rounds: int | None = None

    def __post_init__(self) -> None:
        if self.weights is not None:
            object.__setattr__(self, "pretrained", True)
        for name in ("data_dir", "allocation", "scenario", "out", "weights"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        self._validate()

    def _validate(self) -> None:
        import torch

        from sflam_opt.training.data import DATASETS
        from sflam_opt.training.models import PRESETS
        from sflam_opt.training.protocols import PROTOCOLS
        from sflam_opt.training.quantizer import FP32_BITS, MAX_BITS

        def bad(name: str, value: Any, fix: str) -> TrainingConfigError:
            # Named as the command-line option (--devices-per-round), not the field.
            option = "--" + name.replace("_", "-")
            return TrainingConfigError(f"{option}: invalid value {value!r}; {fix}")

        if self.protocol not in PROTOCOLS:
            raise bad("protocol", self.protocol, f"choose one of {', '.join(PROTOCOLS)}")
        if self.model not in PRESETS:
            raise bad("model", self.model, f"choose one of {', '.join(PRESETS)}")
        if self.dataset not in DATASETS:
            raise bad("dataset", self.dataset, f"choose one of {', '.join(DATASETS)}")
        if self.dataset == "cifar10" and not self.data_dir:
            raise TrainingConfigError(
                "--data-dir: --dataset cifar10 needs --data-dir DIR holding data_batch_1..5 and "
                "test_batch"
            )
        for name in ("devices", "rounds", "batch_size", "local_iters"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise bad(name, value, "give a whole number >= 1")
        k = self.devices_per_round
        if k is not None and (not _is_int(k) or not 1 <= k <= self.devices):
            raise bad(
                "devices_per_round", k, f"give a whole number in 1..{self.devices} (--devices)"
            )
        if not _is_num(self.alpha) or not (math.isfinite(self.alpha) and self.alpha > 0):
            raise bad("alpha", self.alpha, "give a Dirichlet concentration > 0, e.g. 0.5")
        if not _is_num(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", self.lr, "give a learning rate > 0, e.g. 0.1")
        if not _is_num(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", self.momentum, "give a momentum in [0, 1)")
        if self.bits is not None:
            if not _is_int(self.bits) or not (1 <= self.bits <= MAX_BITS or self.bits == FP32_BITS):
                raise bad("bits", self.bits, f"give a bit width in 1..{MAX_BITS} or 32 (fp32)")
            if not PROTOCOLS[self.protocol].quantized:
                raise TrainingConfigError(
                    f"bits: --protocol {self.protocol} sends fp32 activations; --bits applies "
                    "to --protocol sflam only"
                )
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", self.seed, "give a whole number >= 0")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad("threads", self.threads, "give a whole number >= 1")
        if not isinstance(self.solver, str) or not self.solver:
            raise bad("solver", self.solver, "name a solver, e.g. fast")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise bad("device", self.device, "use cpu, cuda or cuda:K") from None
        if self.fading not in FADING_MODELS:
            raise bad("fading", self.fading, f"choose one of {', '.join(FADING_MODELS)}")
        if self.fading != "none" and self.allocation is not None:
            raise TrainingConfigError(
                f"fading: --fading {self.fading} re-solves every round with --solver; drop "
                "--allocation"
            )
        if self.transport not in TRANSPORTS:
            raise bad("transport", self.transport, f"choose one of {', '.join(TRANSPORTS)}")
        if not _is_int(self.workers) or self.workers < 1:
            raise bad("workers", self.workers, "give a whole number >= 1")
        if self.transport == "gloo" and self.workers > self.devices:
            raise bad("workers", self.workers, f"give at most --devices ({self.devices}) workers")
        if not _is_num(self.timeout_s) or not (
            math.isfinite(self.timeout_s) and self.timeout_s > 0
        ):
            raise bad("timeout_s", self.timeout_s, "give a timeout in seconds > 0, e.g. 60")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise bad("image_size", self.image_size, "give a side length in pixels, e.g. 224")
        if self.weights is not None and not os.path.isfile(self.weights):
            raise bad("weights", self.weights, "give an existing timm or torch state-dict file")
        if self.calibration not in CALIBRATIONS:
            raise bad("calibration", self.calibration, f"choose one of {', '.join(CALIBRATIONS)}")
        if self.fit_rounds is not None and (not _is_int(self.fit_rounds) or self.fit_rounds < 5):
            raise bad("fit_rounds", self.fit_rounds, "give a whole number >= 5")
        if self.resume and not self.out:
            raise TrainingConfigError("resume: --resume needs --out DIR holding checkpoint.pt")

    @property
    def participants_per_round(self) -> int:
        """K, the number of devices per round."""
        return self.devices if self.devices_per_round is None else self.devices_per_round

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return dataclasses.asdict(self)


def defaults() -> dict[str, Any]:
    """The default value of every :class:`TrainConfig` field, by name."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}
