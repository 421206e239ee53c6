"""Common machinery of the training protocols: the base class, FedAvg and the split step.

A protocol (in the spirit of Flower's ``Strategy``) owns the global model(s) and runs one round at
a time: :meth:`Protocol.run_round` takes the participating devices and returns the round's training
statistics; :meth:`Protocol.device_costs` gives every device's simulated latency and energy of one
round from the cost model of formulation section 2, and :meth:`Protocol.round_cost` combines the
participants' (max for parallel protocols, sum for sequential ones).

The numeric kernels are free functions, testable without a driver:

- :func:`fedavg` / :class:`FedAvgAccumulator`: weighted average of state dicts (McMahan et al.
  2017), used after every round of SFL-V1 (Thapa et al. 2022, SplitFed) for both the device-side
  and the server-side models, with weights proportional to local data sizes ``D_n``.
- :func:`batch_plan`: which local samples form each of the ``tau`` mini-batches of ``beta``.
- :func:`split_step`: one SFL mini-batch step across the transport: device forward, (quantized)
  activations and labels up, server forward/backward, activation gradient down, device backward.
- :func:`round_generator`: an explicit ``torch.Generator`` per (seed, round, device, purpose), so
  every random draw is a pure function of the seed and a resumed run replays exactly.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from sflam_opt.allocation import Allocation
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import FullModel, ModelSpec
from sflam_opt.training.quantizer import FP32_BITS, QuantizedTensor, dequantize, quantize
from sflam_opt.training.transport import Transport

__all__ = [
    "PURPOSE_BATCHES",
    "PURPOSE_PARTICIPANTS",
    "PURPOSE_QUANTIZER",
    "ClientData",
    "FedAvgAccumulator",
    "Protocol",
    "RoundPlan",
    "RoundStats",
    "StepMeter",
    "batch_plan",
    "fedavg",
    "grad_sq_norm",
    "optimizer_params",
    "round_generator",
    "split_step",
]

logger = logging.getLogger(__name__)

PURPOSE_PARTICIPANTS = 0
PURPOSE_BATCHES = 1
PURPOSE_QUANTIZER = 2


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
    """

    index: int
    participants: NDArray[np.int64]
    bits: NDArray[np.int64]
    seed: int


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
    """

    train_loss: float
    grad_sq_norm: float
    steps: int


def grad_sq_norm(params: Iterable[nn.Parameter]) -> Tensor:
    """Sum of squared gradient entries over ``params`` (0-d tensor; parameters without grad skip)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads).square()


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


def split_step(
    device_model: nn.Module,
    server_model: nn.Module,
    device_opt: torch.optim.Optimizer,
    server_opt: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    device_id: int,
    transport: Transport,
    bits: int,
    quant_generator: torch.Generator | None,
    label_dtype: torch.dtype,
    meter: StepMeter,
) -> None:
    """One split-learning mini-batch step across the transport (SFL-V1 / SL inner step).

    The device computes activations ``a = f_d(x)`` and sends ``Q_b(a)`` (``bits < 32``) or ``a``
    (fp32) with the labels; the server computes the loss at what it received, steps its model and
    returns ``dL/da`` (fp32); the device back-propagates it through ``f_d`` -- the gradient at the
    quantized point stands in for the one at ``a`` (straight-through), as in SFLAM.
    """
    acts = device_model(x)
    payload: Tensor | QuantizedTensor
    if bits == FP32_BITS:
        payload = acts.detach()
    else:
        payload = quantize(acts.detach(), bits, generator=quant_generator)
    received = transport.to_server(device_id, "activations", payload)
    labels = transport.to_server(device_id, "labels", y.to(label_dtype))
    assert isinstance(labels, Tensor)
    if isinstance(received, QuantizedTensor):
        server_in = dequantize(received, device=acts.device)
    else:
        assert isinstance(received, Tensor)
        server_in = received
    server_in.requires_grad_(True)
    loss = F.cross_entropy(server_model(server_in), labels.long())
    server_opt.zero_grad(set_to_none=True)
    loss.backward()
    assert server_in.grad is not None
    grad = transport.to_device(device_id, "gradients", server_in.grad)
    assert isinstance(grad, Tensor)
    device_opt.zero_grad(set_to_none=True)
    acts.backward(grad)
    meter.add(loss, grad_sq_norm(optimizer_params(device_opt) + optimizer_params(server_opt)))
    server_opt.step()
    device_opt.step()


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Protocol(ABC):
    """Base class of a training protocol over a split model.

    Parameters
    ----------
    device_model, server_model : nn.Module
        The global model parts; the protocol trains them in place (round after round).
    data : ClientData
        Local data of every device.
    transport : Transport
        The device <-> server link; everything exchanged goes through it.
    lr : float
        SGD learning rate eta.
    momentum : float
        SGD momentum of the local optimizers (reset every round: optimizer state is local).
    batch_size, local_iters : int
        beta and tau.
    """

    #: Name used by ``--protocol``.
    name: ClassVar[str] = ""
    #: Whether uplink activations are quantized with the allocation's bits.
    quantized: ClassVar[bool] = False
    #: Whether participants run one after another (round latency = sum, not max).
    sequential: ClassVar[bool] = False

    def __init__(
        self,
        device_model: nn.Module,
        server_model: nn.Module,
        *,
        data: ClientData,
        transport: Transport,
        lr: float,
        momentum: float,
        batch_size: int,
        local_iters: int,
    ) -> None:
        self.device_model = device_model
        self.server_model = server_model
        self.data = data
        self.transport = transport
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.local_iters = local_iters
        self.where = next(device_model.parameters()).device

    # ---------------------------------------------------------------- training
    @abstractmethod
    def run_round(self, plan: RoundPlan) -> RoundStats:
        """Train one round with ``plan.participants`` and update the global model(s)."""

    def global_model(self) -> nn.Module:
        """The current global model (device part then server part) for evaluation."""
        return FullModel(self.device_model, self.server_model)

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh local SGD optimizer."""
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def batches(self, plan: RoundPlan, device: int) -> tuple[Tensor, Tensor]:
        """Images (tau, beta, C, H, W) and labels (tau, beta) of ``device`` in this round."""
        gen = round_generator(plan.seed, plan.index, device, PURPOSE_BATCHES)
        idx = batch_plan(self.data.y[device].shape[0], self.batch_size, self.local_iters, gen)
        idx = idx.to(self.where)
        return self.data.x[device][idx], self.data.y[device][idx]

    def quant_generator(self, plan: RoundPlan, device: int) -> torch.Generator:
        """The generator of device ``device``'s quantization noise in this round."""
        return round_generator(plan.seed, plan.index, device, PURPOSE_QUANTIZER, self.where)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (copies, not live tensors)."""
        return {"device": _state_copy(self.device_model), "server": _state_copy(self.server_model)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.device_model.load_state_dict(state["device"])
        self.server_model.load_state_dict(state["server"])

    # ---------------------------------------------------------------- simulated cost
    @classmethod
    @abstractmethod
    def device_costs(
        cls, scenario: Scenario, allocation: Allocation, spec: ModelSpec
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Simulated latency (s) and energy (J) of one round for every device, shape (N,) each.

        ``scenario`` carries the trained model's ``[model]`` and ``[training]`` tables;
        ``allocation`` gives bandwidth and power (and, for quantized protocols, bits).
        """

    @classmethod
    def round_cost(
        cls, latency_s: NDArray[np.float64], energy_j: NDArray[np.float64], participants: ArrayLike
    ) -> tuple[float, float]:
        """Round latency (max, or sum when sequential) and energy (sum) over ``participants``."""
        idx = np.asarray(participants, dtype=np.int64)
        lat = latency_s[idx]
        return float(lat.sum() if cls.sequential else lat.max()), float(energy_j[idx].sum())
