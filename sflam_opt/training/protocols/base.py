"""Common machinery of the training protocols: the base class, FedAvg and the sampling kernels.

A protocol (in the spirit of Flower's ``Strategy``) is a device half and a server half
(:mod:`.roles`) that exchange messages only through the transport; :class:`Protocol` puts both in
one process: :meth:`Protocol.run_round` takes the participating devices and returns the round's
training statistics; :meth:`Protocol.device_costs` gives every device's simulated latency and
energy of one round from the cost model of docs/formulation.md §2, and :meth:`Protocol.round_cost`
combines the participants' (max for parallel protocols, sum for sequential ones).

The numeric kernels are free functions, testable without a driver:

- :func:`fedavg` / :class:`FedAvgAccumulator`: weighted average of state dicts (McMahan et al.
  2017), used after every round of SFL-V1 (Thapa et al. 2022, SplitFed) for both the device-side
  and the server-side models, with weights proportional to local data sizes ``D_n``.
- :func:`batch_plan`: which local samples form each of the ``tau`` mini-batches of ``beta``.
- :func:`grad_norms` / :func:`sq_norm_of_norms`: the whole-model squared gradient norm assembled
  from per-tensor norms computed where the gradients live (device or server).
- :func:`round_generator`: an explicit ``torch.Generator`` per (seed, round, device, purpose), so
  every random draw is a pure function of the seed and a resumed run replays exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

__all__ = [
    "PURPOSE_BATCHES",
    "PURPOSE_PARTICIPANTS",
    "PURPOSE_PROBE",
    "PURPOSE_QUANTIZER",
    "ClientData",
    "FedAvgAccumulator",
    "RoundPlan",
    "RoundStats",
    "StepMeter",
    "batch_plan",
    "fedavg",
    "grad_norms",
    "grad_sq_norm",
    "optimizer_params",
    "round_generator",
    "sq_norm_of_norms",
]

logger = logging.getLogger(__name__)

PURPOSE_PARTICIPANTS = 0
PURPOSE_BATCHES = 1
PURPOSE_QUANTIZER = 2
#: Generator purpose of the calibration probe's re-quantization (3 is the trainer's fading).
PURPOSE_PROBE = 4


def round_generator(
    seed: int, round_index: int, device: int, purpose: int, where: torch.device | str = "cpu"
) -> torch.Generator:
    """A fresh generator for one (seed, round, device, purpose), independent of all others.

    The 64-bit seed comes from ``numpy.random.SeedSequence([seed, round, device, purpose])``, so
    nothing depends on how many numbers earlier rounds drew.
    """
    state = np.random.SeedSequence([seed, round_index, device + 1, purpose]).generate_state(
        1, dtype=np.uint64
    )
    gen = torch.Generator(device=where)
    gen.manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def batch_plan(
    n_local: int, batch_size: int, local_iters: int, generator: torch.Generator
) -> Tensor:
    """Indices into a device's local data for ``local_iters`` mini-batches of ``batch_size``.

    Local samples are visited in random order, epoch after epoch (a fresh permutation per epoch),
    and cut into consecutive batches, so every batch has exactly ``batch_size`` samples (as the
    cost model assumes) and no sample repeats within an epoch.

    Returns
    -------
    Tensor of int64, shape (local_iters, batch_size)
    """
    need = batch_size * local_iters
    epochs = -(-need // n_local)
    perms = torch.argsort(torch.rand(epochs, n_local, generator=generator), dim=1)
    return perms.reshape(-1)[:need].reshape(local_iters, batch_size)


@dataclass
class ClientData:
    """Every device's local training data, already on the compute device.

    Attributes
    ----------
    x : list of Tensor
        ``x[n]`` has shape (D_n, C, H, W).
    y : list of Tensor
        ``y[n]`` has shape (D_n,), int64.
    num_classes : int
        Number of classes (labels travel as the narrowest integer type that holds them).
    """

    x: list[Tensor]
    y: list[Tensor]
    num_classes: int

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Local data sizes D_n, shape (N,)."""
        return np.array([t.shape[0] for t in self.y], dtype=np.int64)

    @property
    def label_dtype(self) -> torch.dtype:
        """Wire type of labels: uint8 up to 256 classes, else int32."""
        return torch.uint8 if self.num_classes <= 256 else torch.int32

    @classmethod
    def from_partition(
        cls,
        x: Tensor,
        y: Tensor,
        parts: Sequence[NDArray[np.int64]],
        num_classes: int,
        where: torch.device | str = "cpu",
        hosted: Iterable[int] | None = None,
    ) -> ClientData:
        """Every device's samples ``x[parts[n]], y[parts[n]]`` on ``where``.

        With ``hosted``, only those devices' samples are copied; the others get empty tensors
        (a process that hosts some of the devices).
        """
        keep = set(range(len(parts))) if hosted is None else set(hosted)
        xs, ys = [], []
        for n, p in enumerate(parts):
            idx = torch.from_numpy(np.asarray(p)) if n in keep else torch.zeros(0, dtype=torch.long)
            xs.append(x[idx].to(where))
            ys.append(y[idx].to(where))
        return cls(x=xs, y=ys, num_classes=num_classes)


@dataclass(frozen=True)
class RoundPlan:
    """What one round does.

    Attributes
    ----------
    index : int
        Round number, 1-based.
    participants : ndarray of int64
        Devices taking part, in processing order (the order matters only for sequential SL).
    bits : ndarray of int64, shape (N,)
        Uplink activation bits per device; 32 means fp32 (no quantization).
    seed : int
        Root seed of :func:`round_generator`.
    probe_bits : int
        0, or the width at which the server measures the gradient change quantization causes on
        every participant's first step (docs/formulation.md §4.3); split protocols only.
    """

    index: int
    participants: NDArray[np.int64]
    bits: NDArray[np.int64]
    seed: int
    probe_bits: int = 0


@dataclass(frozen=True)
class RoundStats:
    """Training statistics of one round.

    Attributes
    ----------
    train_loss : float
        Mean mini-batch cross-entropy over every local step of every participant.
    grad_sq_norm : float
        Mean over the same steps of the squared norm of the whole-model stochastic gradient
        (device part + server part).
    steps : int
        Number of local steps.
    probe : tuple of float
        With ``RoundPlan.probe_bits``: per participant, in round order, the squared norm of the
        whole-model gradient change when its first step's activations are quantized at
        ``probe_bits`` (docs/formulation.md §4.3); else empty.
    """

    train_loss: float
    grad_sq_norm: float
    steps: int
    probe: tuple[float, ...] = ()


def grad_sq_norm(params: Iterable[nn.Parameter]) -> Tensor:
    """Sum of squared gradient entries over ``params`` (0-d tensor; parameters without grad skip)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads).square()


def grad_norms(params: Iterable[nn.Parameter]) -> Tensor:
    """Euclidean norm of every parameter's gradient, shape (k,) for the k with a gradient."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.stack(norms) if norms else torch.zeros(0)


def sq_norm_of_norms(parts: Sequence[Tensor]) -> Tensor:
    """Squared norm of all gradients from :func:`grad_norms` of disjoint parameter groups.

    Equals :func:`grad_sq_norm` of the groups' parameters in the same order, bit for bit on the
    CPU (both take the norm of the per-tensor norms).
    """
    norms = torch.cat(list(parts))
    if not norms.numel():
        return torch.zeros(())
    return torch.linalg.vector_norm(norms).square()


def optimizer_params(opt: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters an optimizer updates (cheaper than walking the module tree every step)."""
    return [p for group in opt.param_groups for p in group["params"]]


class StepMeter:
    """Accumulates loss and squared gradient norm over local steps without syncing per step."""

    def __init__(self) -> None:
        self._loss: Tensor | None = None
        self._grad: Tensor | None = None
        self.steps = 0

    def add(self, loss: Tensor, grad_sq: Tensor) -> None:
        """Record one step's loss and squared gradient norm (0-d tensors)."""
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss
        self._grad = grad_sq if self._grad is None else self._grad + grad_sq
        self.steps += 1

    def stats(self) -> RoundStats:
        """Means over the recorded steps."""
        if not self.steps:
            return RoundStats(float("nan"), float("nan"), 0)
        assert self._loss is not None and self._grad is not None
        return RoundStats(
            float(self._loss) / self.steps, float(self._grad) / self.steps, self.steps
        )


class FedAvgAccumulator:
    """Streaming weighted average of state dicts, ``sum_n w_n s_n / sum_n w_n``.

    Every :meth:`add` multiplies into a fresh accumulator tensor, so the result never aliases a
    live parameter. Floating-point entries are averaged (accumulated in float32 or wider);
    integer/bool entries (e.g. counters) are taken from the first state.
    """

    def __init__(self) -> None:
        self._sum: dict[str, Tensor] = {}
        self._total = 0.0

    def add(self, state: Mapping[str, Tensor], weight: float) -> None:
        """Add ``state`` with ``weight`` (> 0)."""
        w = float(weight)
        if not w > 0:
            raise ValueError(f"FedAvg weight must be > 0, got {weight!r}")
        if self._sum and set(state) != set(self._sum):
            raise ValueError("FedAvg states have different keys")
        for key, value in state.items():
            v = value.detach()
            if not v.is_floating_point():
                self._sum.setdefault(key, v.clone())
                continue
            acc_dtype = torch.promote_types(v.dtype, torch.float32)
            if key in self._sum:
                self._sum[key].add_(v.to(acc_dtype), alpha=w)
            else:
                self._sum[key] = v.to(acc_dtype) * w
        self._total += w

    @property
    def total_weight(self) -> float:
        """Sum of the weights added so far."""
        return self._total

    def result(self, like: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The weighted average; cast to the dtypes of ``like`` when given."""
        if not self._total:
            raise ValueError("FedAvg of no states")
        out = {}
        for key, acc in self._sum.items():
            avg = acc / self._total if acc.is_floating_point() else acc.clone()
            if like is not None:
                avg = avg.to(like[key].dtype)
            out[key] = avg
        return out


def fedavg(states: Sequence[Mapping[str, Tensor]], weights: ArrayLike) -> dict[str, Tensor]:
    """Weighted average of state dicts (FedAvg), weights proportional to ``weights``.

    Parameters
    ----------
    states : sequence of mapping of str to Tensor
        State dicts with identical keys and shapes.
    weights : array_like, shape (len(states),)
        Positive weights, e.g. local data sizes D_n.

    Returns
    -------
    dict of str to Tensor
        New tensors (no aliasing of the inputs), in the dtypes of ``states[0]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),):
        raise ValueError(f"fedavg: {len(states)} states but weights of shape {w.shape}")
    acc = FedAvgAccumulator()
    for state, weight in zip(states, w.tolist(), strict=True):
        acc.add(state, weight)
    return acc.result(like=states[0])
