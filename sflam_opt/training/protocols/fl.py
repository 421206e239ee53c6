"""Federated averaging with the whole model on every device (``--protocol fl``), McMahan et al. 2017.

Every participant downloads the global model (device part and server part), runs ``tau`` local
SGD steps of ``beta`` samples on it, and uploads it; the server averages the uploads with weights
``D_n / sum D``. Nothing is split, so no activations or gradients cross the link.

Simulated cost, from the primitives of docs/formulation.md §2 with the allocation's bandwidth B_n
and power p_n (bits are irrelevant), for the whole model of ``M_full = M + M_s`` parameters and
``c_full = c_d + c_s`` cycles per sample:

- rate ``R_n = B_n log2(1 + p_n g_n / (N0 B_n))``; upload ``u_n = 32 M_full / R_n``;
- device compute ``t_n = tau beta c_full / f_n``; download ``t_dl = 32 M_full / R_dl``;
- ``T_n = t_n + u_n + t_dl``; ``E_n = kappa tau beta c_full f_n^2 + p_n u_n``;
- round latency ``max_n T_n``, energy ``sum_n E_n`` over the participants.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import rate_bps
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.protocol import Protocol
from sflam_opt.training.protocols.roles import DeviceRole, FedAvgServer, LocalDevice, ServerRole

__all__ = ["FLProtocol"]


class FLProtocol(Protocol):
    """FedAvg of the whole (unsplit) model."""

    name: ClassVar[str] = "fl"
    device_role: ClassVar[type[DeviceRole]] = LocalDevice
    server_role: ClassVar[type[ServerRole]] = FedAvgServer

    @classmethod
    def device_costs(
        cls, scenario: Scenario, allocation: Allocation, spec: ModelSpec
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        m, t, s = scenario.model, scenario.training, scenario.system
        full_params = m.device_params + spec.server_params
        full_cycles = (
            t.local_iters * t.batch_size * (m.device_cycles_per_sample + m.server_cycles_per_sample)
        )
        f = scenario.devices.cpu_hz
        rate = rate_bps(scenario, allocation.bandwidth_hz, allocation.power_w)
        upload = 32.0 * full_params / rate
        latency = full_cycles / f + upload + 32.0 * full_params / s.downlink_bps
        energy = s.kappa * full_cycles * f * f + allocation.power_w * upload
        return latency, energy
