"""The protocol class: a device half and a server half (:mod:`.roles`) with the cost model.

:class:`Protocol` runs both halves in one process over the given transport. A multi-process
runner (:mod:`sflam_opt.training.distributed`) builds the halves with :meth:`Protocol.make_server`
and :meth:`Protocol.make_device` in different processes instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from torch import nn

from sflam_opt.allocation import Allocation
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.base import ClientData, RoundPlan, RoundStats
from sflam_opt.training.protocols.roles import (
    DeviceRole,
    LocalTraining,
    ServerRole,
    run_round,
)
from sflam_opt.training.transport import Transport

__all__ = ["Protocol"]


class Protocol(ABC):
    """Base class of a training protocol over a split model, both halves in this process.

    Parameters
    ----------
    device_model, server_model : nn.Module
        The global model parts; the server half trains them in place (round after round).
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
    #: The two halves.
    device_role: ClassVar[type[DeviceRole]]
    server_role: ClassVar[type[ServerRole]]

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
        self.transport = transport
        self.hyper = LocalTraining(lr, momentum, batch_size, local_iters)
        self.server = self.make_server(
            device_model, server_model, sizes=data.sizes, transport=transport, hyper=self.hyper
        )
        self.device = self.make_device(
            device_model, server_model, data=data, transport=transport, hyper=self.hyper
        )

    @classmethod
    def make_server(
        cls,
        device_model: nn.Module,
        server_model: nn.Module,
        *,
        sizes: Sequence[int] | NDArray[np.int64],
        transport: Transport,
        hyper: LocalTraining,
    ) -> ServerRole:
        """The server half over the global ``device_model`` and ``server_model``."""
        return cls.server_role(
            device_model, server_model, sizes=sizes, transport=transport, hyper=hyper
        )

    @classmethod
    def make_device(
        cls,
        device_model: nn.Module,
        server_model: nn.Module,
        *,
        data: ClientData,
        transport: Transport,
        hyper: LocalTraining,
    ) -> DeviceRole:
        """The device half (the models are templates; it trains copies)."""
        return cls.device_role(
            device_model,
            server_model,
            data=data,
            transport=transport,
            hyper=hyper,
            quantized=cls.quantized,
        )

    @property
    def device_model(self) -> nn.Module:
        """The global device-side model."""
        return self.server.device_model

    @property
    def server_model(self) -> nn.Module:
        """The global server-side model."""
        return self.server.server_model

    # ---------------------------------------------------------------- training
    def run_round(self, plan: RoundPlan) -> RoundStats:
        """Train one round with ``plan.participants`` and update the global model(s)."""
        return run_round(self.server, self.device, plan)

    def round_extras(self) -> dict[str, Any]:
        """Metrics of the last round beyond the trainer's own (none in one process)."""
        return {}

    def global_model(self) -> nn.Module:
        """The current global model (device part then server part) for evaluation."""
        return self.server.global_model()

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (copies, not live tensors)."""
        return self.server.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.server.load_state_dict(state)

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
