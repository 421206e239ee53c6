"""Device and server halves of the training protocols, and the one round loop that drives them.

A protocol is a pair of roles that talk only through a :class:`~sflam_opt.training.transport.Transport`:

- a :class:`DeviceRole` runs a participant's local work: it receives the model, runs ``tau``
  local steps (for split protocols, sending activations and labels up and back-propagating the
  activation gradients that come down), then uploads the model and its step statistics;
- a :class:`ServerRole` owns the global model(s): it sends the model down, answers every split
  step with the activation gradients, receives the uploads and averages them (FedAvg), or, for
  sequential split learning, passes the device model on to the next participant.

A participant's turn is the same sequence for every protocol::

    server.begin(n); device.begin(n)
    for t in range(tau): device.forward(t); server.step(n, t); device.backward(t)
    device.end(); server.end(n)

:func:`run_round` plays the turns of a round in one process, participant after participant (the
in-process simulation). :func:`server_lanes` gives the server's side of the same turns as lanes
that a multi-process runner interleaves, one lane per process hosting devices; the device side
runs :func:`device_turns`. Everything order-dependent on the server (FedAvg sums, the round's mean
loss) is accumulated in the round's participant order whatever order the turns finish in, so a
round's result does not depend on how the turns were scheduled.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn import functional as F

from sflam_opt.training.models import FullModel
from sflam_opt.training.protocols.base import (
    PURPOSE_BATCHES,
    PURPOSE_QUANTIZER,
    ClientData,
    FedAvgAccumulator,
    RoundPlan,
    RoundStats,
    StepMeter,
    batch_plan,
    grad_norms,
    grad_sq_norm,
    optimizer_params,
    round_generator,
    sq_norm_of_norms,
)
from sflam_opt.training.quantizer import FP32_BITS, QuantizedTensor, dequantize, quantize
from sflam_opt.training.transport import Transport

__all__ = [
    "DeviceRole",
    "FedAvgServer",
    "LocalDevice",
    "LocalTraining",
    "SequentialSplitServer",
    "ServerRole",
    "SplitDevice",
    "SplitFedServer",
    "Turn",
    "device_turns",
    "run_round",
    "server_lanes",
]


@dataclass(frozen=True)
class LocalTraining:
    """Hyper-parameters of local training.

    Attributes
    ----------
    lr : float
        SGD learning rate eta.
    momentum : float
        SGD momentum of the local optimizers (reset every turn: optimizer state is local).
    batch_size, local_iters : int
        beta and tau.
    """

    lr: float
    momentum: float
    batch_size: int
    local_iters: int

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh SGD optimizer."""
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)


# ------------------------------------------------------------------------------ device side


class DeviceRole(ABC):
    """The device half: local training of the participants this process hosts.

    Parameters
    ----------
    device_model, server_model : nn.Module
        Templates of the model parts (copied; their weights are replaced by every download).
    data : ClientData
        Local data; only the hosted devices' entries are read.
    transport : Transport
        The link to the server.
    hyper : LocalTraining
        Local training options.
    quantized : bool
        Whether uplink activations use the round plan's bits (else fp32).
    """

    def __init__(
        self,
        device_model: nn.Module,
        server_model: nn.Module,
        *,
        data: ClientData,
        transport: Transport,
        hyper: LocalTraining,
        quantized: bool,
    ) -> None:
        self.data = data
        self.transport = transport
        self.hyper = hyper
        self.quantized = quantized
        self.where = next(device_model.parameters()).device
        self.device = -1

    def batches(self, plan: RoundPlan, device: int) -> tuple[Tensor, Tensor]:
        """Images (tau, beta, C, H, W) and labels (tau, beta) of ``device`` in this round."""
        gen = round_generator(plan.seed, plan.index, device, PURPOSE_BATCHES)
        h = self.hyper
        idx = batch_plan(self.data.y[device].shape[0], h.batch_size, h.local_iters, gen)
        idx = idx.to(self.where)
        return self.data.x[device][idx], self.data.y[device][idx]

    @abstractmethod
    def begin(self, plan: RoundPlan, device: int) -> None:
        """Start ``device``'s turn: receive the model, draw the batches."""

    @abstractmethod
    def forward(self, t: int) -> None:
        """First half of local step ``t`` (everything before waiting for the server)."""

    def backward(self, t: int) -> None:  # noqa: B027 (optional hook)
        """Second half of local step ``t`` (after the server answered); nothing by default."""

    @abstractmethod
    def end(self) -> None:
        """Finish the turn: upload the model and the step statistics."""


class SplitDevice(DeviceRole):
    """Device half of SFL-V1, SFLAM and SL: the device part of a split model.

    Step ``t`` computes ``a = f_d(x)`` and sends ``Q_b(a)`` (``b < 32``) or ``a`` (fp32) with the
    labels; the server returns ``dL/da`` at what it received (fp32), which the device
    back-propagates through ``f_d`` -- the gradient at the quantized point stands in for the one
    at ``a`` (straight-through), as in SFLAM. The upload carries the device model and, as
    ``"stats"``, the per-tensor gradient norms of every step (for the round's gradient statistic).
    """

    def __init__(self, device_model: nn.Module, server_model: nn.Module, **kwargs: Any) -> None:
        super().__init__(device_model, server_model, **kwargs)
        self.model = copy.deepcopy(device_model)

    def begin(self, plan: RoundPlan, device: int) -> None:
        self.device = device
        self.model.load_state_dict(self.transport.recv("down", device, "model"))
        self.opt = self.hyper.optimizer(self.model.parameters())
        self.xs, self.ys = self.batches(plan, device)
        self.bits = int(plan.bits[device]) if self.quantized else FP32_BITS
        self.gen = (
            round_generator(plan.seed, plan.index, device, PURPOSE_QUANTIZER, self.where)
            if self.bits != FP32_BITS
            else None
        )
        self.norms: list[Tensor] = []

    def forward(self, t: int) -> None:
        self.acts = self.model(self.xs[t])
        payload: Tensor | QuantizedTensor
        if self.bits == FP32_BITS:
            payload = self.acts.detach()
        else:
            payload = quantize(self.acts.detach(), self.bits, generator=self.gen)
        self.transport.send("up", self.device, "activations", payload)
        self.transport.send("up", self.device, "labels", self.ys[t].to(self.data.label_dtype))

    def backward(self, t: int) -> None:
        grad = self.transport.recv("down", self.device, "gradients")
        assert isinstance(grad, Tensor)
        self.opt.zero_grad(set_to_none=True)
        self.acts.backward(grad)
        self.norms.append(grad_norms(optimizer_params(self.opt)))
        self.opt.step()

    def end(self) -> None:
        self.transport.send("up", self.device, "model", self.model.state_dict())
        stats = {str(t): norms for t, norms in enumerate(self.norms)}
        self.transport.send("up", self.device, "stats", stats)


class LocalDevice(DeviceRole):
    """Device half of FedAvg: ``tau`` local SGD steps on the whole model, nothing split.

    The upload carries the model and, as ``"stats"``, every step's loss and squared gradient norm.
    """

    def __init__(self, device_model: nn.Module, server_model: nn.Module, **kwargs: Any) -> None:
        super().__init__(device_model, server_model, **kwargs)
        self.model = FullModel(copy.deepcopy(device_model), copy.deepcopy(server_model))

    def begin(self, plan: RoundPlan, device: int) -> None:
        self.device = device
        self.model.load_state_dict(self.transport.recv("down", device, "model"))
        self.opt = self.hyper.optimizer(self.model.parameters())
        self.xs, self.ys = self.batches(plan, device)
        self.losses: list[Tensor] = []
        self.grads: list[Tensor] = []

    def forward(self, t: int) -> None:
        loss = F.cross_entropy(self.model(self.xs[t]), self.ys[t])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.losses.append(loss.detach())
        self.grads.append(grad_sq_norm(optimizer_params(self.opt)))
        self.opt.step()

    def end(self) -> None:
        self.transport.send("up", self.device, "model", self.model.state_dict())
        stats = {"loss": torch.stack(self.losses), "grad_sq": torch.stack(self.grads)}
        self.transport.send("up", self.device, "stats", stats)


# ------------------------------------------------------------------------------ server side


@dataclass
class Turn:
    """Server-side record of one participant's turn, kept until it is folded in, in order.

    Attributes
    ----------
    model, opt : nn.Module and Optimizer, optional
        The turn's copy of the server model and its optimizer (SFL-V1 / SFLAM).
    losses : list of Tensor
        Loss of every split step (0-d).
    norms : list of Tensor
        Per-tensor gradient norms of the server parameters at every split step.
    upload, stats : mapping of str to Tensor, optional
        The device's uploaded model and step statistics.
    """

    model: nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    losses: list[Tensor] = field(default_factory=list)
    norms: list[Tensor] = field(default_factory=list)
    upload: Mapping[str, Tensor] | None = None
    stats: Mapping[str, Tensor] | None = None


class ServerRole(ABC):
    """The server half: owns the global model(s), answers split steps, aggregates.

    Parameters
    ----------
    device_model, server_model : nn.Module
        The global model parts, trained in place round after round.
    sizes : array_like of int, shape (N,)
        Local data sizes D_n (FedAvg weights).
    transport : Transport
        The link to the devices.
    hyper : LocalTraining
        Local training options (the server's optimizers use the same).
    """

    #: Whether :meth:`step` exchanges messages (split protocols) or does nothing (FedAvg).
    splits: ClassVar[bool] = True

    def __init__(
        self,
        device_model: nn.Module,
        server_model: nn.Module,
        *,
        sizes: Sequence[int] | NDArray[np.int64],
        transport: Transport,
        hyper: LocalTraining,
    ) -> None:
        self.device_model = device_model
        self.server_model = server_model
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.transport = transport
        self.hyper = hyper

    # ---------------------------------------------------------------- a round
    def start_round(self, plan: RoundPlan) -> None:
        """Prepare a round of ``plan.participants``."""
        self.meter = StepMeter()
        self._order = plan.participants.tolist()
        self._next = 0
        self._turns: dict[int, Turn] = {}
        self._finished: set[int] = set()

    @abstractmethod
    def begin(self, plan: RoundPlan, device: int) -> None:
        """Start ``device``'s turn: send it the model."""

    def step(self, device: int, t: int) -> None:  # noqa: B027 (optional hook)
        """Answer split step ``t`` of ``device``; nothing by default."""

    def end(self, device: int) -> None:
        """Receive ``device``'s upload; fold in every finished turn that is next in order."""
        turn = self._turns[device]
        turn.upload = self.transport.recv("up", device, "model")
        turn.stats = self.transport.recv("up", device, "stats")
        self._finished.add(device)
        while self._next < len(self._order) and self._order[self._next] in self._finished:
            n = self._order[self._next]
            self.fold(n, self._turns.pop(n))
            self._next += 1

    @abstractmethod
    def fold(self, device: int, turn: Turn) -> None:
        """Add a finished turn to the round's aggregates (called in participant order)."""

    def finish_round(self) -> RoundStats:
        """Update the global model(s) from the round's aggregates; the round's statistics."""
        if self._next != len(self._order):
            raise RuntimeError("server: round finished before every participant uploaded")
        return self.meter.stats()

    # ---------------------------------------------------------------- split steps
    def split_step(
        self, device: int, model: nn.Module, opt: torch.optim.Optimizer, turn: Turn
    ) -> None:
        """Server side of one split step: loss at the received activations, step, send dL/da."""
        received = self.transport.recv("up", device, "activations")
        labels = self.transport.recv("up", device, "labels")
        assert isinstance(labels, Tensor)
        where = next(model.parameters()).device
        if isinstance(received, QuantizedTensor):
            server_in = dequantize(received, device=where)
        else:
            assert isinstance(received, Tensor)
            server_in = received
        server_in.requires_grad_(True)
        loss = F.cross_entropy(model(server_in), labels.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert server_in.grad is not None
        turn.losses.append(loss.detach())
        turn.norms.append(grad_norms(optimizer_params(opt)))
        self.transport.send("down", device, "gradients", server_in.grad)
        opt.step()

    def add_split_stats(self, turn: Turn) -> None:
        """Record a split turn's steps: server losses, device + server gradient norms."""
        assert turn.stats is not None
        for t, (loss, norms) in enumerate(zip(turn.losses, turn.norms, strict=True)):
            self.meter.add(loss, sq_norm_of_norms([turn.stats[str(t)], norms]))

    # ---------------------------------------------------------------- the global model
    def global_model(self) -> nn.Module:
        """The current global model (device part then server part) for evaluation."""
        return FullModel(self.device_model, self.server_model)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (copies, not live tensors)."""
        return {"device": _state_copy(self.device_model), "server": _state_copy(self.server_model)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.device_model.load_state_dict(state["device"])
        self.server_model.load_state_dict(state["server"])


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class SplitFedServer(ServerRole):
    """Server half of SFL-V1 / SFLAM: a copy of the server model per participant, then FedAvg.

    Every participant trains against its own copy of the global server-side model (fresh
    optimizer); after the round the device-side uploads and the server-side copies are averaged
    separately, both with weights ``D_n / sum D``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: list[nn.Module] = [copy.deepcopy(self.server_model)]

    def start_round(self, plan: RoundPlan) -> None:
        super().start_round(plan)
        self._dev_avg, self._srv_avg = FedAvgAccumulator(), FedAvgAccumulator()
        self._global_device = self.device_model.state_dict()
        self._global_server = self.server_model.state_dict()

    def begin(self, plan: RoundPlan, device: int) -> None:
        self.transport.send("down", device, "model", self._global_device)
        model = self._pool.pop() if self._pool else copy.deepcopy(self.server_model)
        model.load_state_dict(self._global_server)
        self._turns[device] = Turn(model, self.hyper.optimizer(model.parameters()))

    def step(self, device: int, t: int) -> None:
        turn = self._turns[device]
        assert turn.model is not None and turn.opt is not None
        self.split_step(device, turn.model, turn.opt, turn)

    def fold(self, device: int, turn: Turn) -> None:
        assert turn.upload is not None and turn.model is not None
        weight = float(self.sizes[device])
        self._dev_avg.add(turn.upload, weight)
        self._srv_avg.add(turn.model.state_dict(), weight)
        self.add_split_stats(turn)
        self._pool.append(turn.model)

    def finish_round(self) -> RoundStats:
        stats = super().finish_round()
        self.device_model.load_state_dict(self._dev_avg.result(like=self._global_device))
        self.server_model.load_state_dict(self._srv_avg.result(like=self._global_server))
        return stats


class SequentialSplitServer(ServerRole):
    """Server half of sequential SL: one server model and optimizer, the device model passed on.

    Turns must run one after another (``Protocol.sequential``): each participant downloads the
    device model the previous one uploaded. The server's optimizer persists across turns and rounds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_opt = self.hyper.optimizer(self.server_model.parameters())

    def begin(self, plan: RoundPlan, device: int) -> None:
        self.transport.send("down", device, "model", self.device_model.state_dict())
        self._turns[device] = Turn()

    def step(self, device: int, t: int) -> None:
        self.split_step(device, self.server_model, self.server_opt, self._turns[device])

    def fold(self, device: int, turn: Turn) -> None:
        assert turn.upload is not None
        self.device_model.load_state_dict(turn.upload)
        self.add_split_stats(turn)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["server_opt"] = copy.deepcopy(self.server_opt.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.server_opt.load_state_dict(state["server_opt"])


class FedAvgServer(ServerRole):
    """Server half of FedAvg: sends the whole model, averages the uploads with ``D_n / sum D``."""

    splits: ClassVar[bool] = False

    def start_round(self, plan: RoundPlan) -> None:
        super().start_round(plan)
        self._avg = FedAvgAccumulator()
        self._global = self.global_model()
        self._global_state = self._global.state_dict()

    def begin(self, plan: RoundPlan, device: int) -> None:
        self.transport.send("down", device, "model", self._global_state)
        self._turns[device] = Turn()

    def fold(self, device: int, turn: Turn) -> None:
        assert turn.upload is not None and turn.stats is not None
        self._avg.add(turn.upload, float(self.sizes[device]))
        for loss, grad in zip(turn.stats["loss"], turn.stats["grad_sq"], strict=True):
            self.meter.add(loss, grad)

    def finish_round(self) -> RoundStats:
        stats = super().finish_round()
        self._global.load_state_dict(self._avg.result(like=self._global_state))
        return stats


# ------------------------------------------------------------------------------ round loops


def run_round(server: ServerRole, device: DeviceRole, plan: RoundPlan) -> RoundStats:
    """One round with both halves in this process, participant after participant."""
    server.start_round(plan)
    for n in plan.participants.tolist():
        server.begin(plan, n)
        device.begin(plan, n)
        for t in range(device.hyper.local_iters):
            device.forward(t)
            server.step(n, t)
            device.backward(t)
        device.end()
        server.end(n)
    return server.finish_round()


def device_turns(device: DeviceRole, plan: RoundPlan, hosted: Iterable[int]) -> None:
    """The device side of a round for the ``hosted`` participants, in the round's order."""
    for n in hosted:
        device.begin(plan, n)
        for t in range(device.hyper.local_iters):
            device.forward(t)
            device.backward(t)
        device.end()


def server_lanes(
    server: ServerRole, plan: RoundPlan, lanes: Sequence[Sequence[int]]
) -> list[Iterator[None]]:
    """The server side of a round as one resumable lane per group of participants.

    Each lane serves its participants' turns in order and pauses after every receive, so a
    caller that advances the lanes in turn overlaps the groups' device work (a group being the
    devices one process hosts). Call :meth:`ServerRole.start_round` first and
    :meth:`ServerRole.finish_round` once every lane is exhausted.
    """

    def lane(devices: Sequence[int]) -> Iterator[None]:
        for n in devices:
            server.begin(plan, n)
            if server.splits:
                for t in range(server.hyper.local_iters):
                    server.step(n, t)
                    yield
            server.end(n)
            yield

    return [lane(devices) for devices in lanes]
