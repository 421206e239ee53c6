"""SFL-V1 without quantization (``--protocol sfl``): SplitFed, Thapa et al., AAAI 2022.

Every participant n, in parallel (one after another in one process):

1. receives the global device-side model over the downlink (32 M bits),
2. runs ``tau`` split steps with its own copy of the global server-side model: fp32 activations
   and labels up, fp32 activation gradients down (:class:`~.roles.SplitDevice`),
3. sends its device-side model back up (32 M bits).

Then the server averages the device-side models and, separately, its per-device server-side
copies, both with weights ``D_n / sum D`` (FedAvg over the participants).

Simulated cost: docs/formulation.md §2 exactly, with ``b_n = 32`` for every device and the
allocation's bandwidth and power (:func:`sflam_opt.costs.breakdown`): per device
``T_n = tau beta c_d / f_n + W_n(32) / R_n + tau beta c_s / f_s + (tau beta d 32 + 32 M) / R_dl``,
``E_n = kappa tau beta c_d f_n^2 + p_n W_n(32) / R_n``; round latency ``max_n T_n``, energy
``sum_n E_n`` over the participants. ``W_n(32)`` includes the formulation's 64 range bits per
mini-batch, which an fp32 link does not send (8 bytes against ``4 beta d`` per batch).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import breakdown
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.protocol import Protocol
from sflam_opt.training.protocols.roles import DeviceRole, ServerRole, SplitDevice, SplitFedServer
from sflam_opt.training.quantizer import FP32_BITS

__all__ = ["SFLProtocol"]


class SFLProtocol(Protocol):
    """SplitFed V1 with fp32 uplink activations."""

    name: ClassVar[str] = "sfl"
    device_role: ClassVar[type[DeviceRole]] = SplitDevice
    server_role: ClassVar[type[ServerRole]] = SplitFedServer

    @classmethod
    def device_costs(
        cls, scenario: Scenario, allocation: Allocation, spec: ModelSpec
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        bits = allocation.bits if cls.quantized else np.full(len(allocation), FP32_BITS)
        bd = breakdown(scenario, Allocation(bits, allocation.bandwidth_hz, allocation.power_w))
        return bd.latency_s, bd.energy_j
