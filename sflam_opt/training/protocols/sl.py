"""Sequential split learning (``--protocol sl``): vanilla SL, Gupta and Raskar 2018 / Vepakomma et al.

One device-side model travels from device to device (relayed by the server) and one server-side
model is trained continuously. In a round the participants take turns, in the round's order: the
device downloads the current device-side model, runs ``tau`` split steps with the server (fp32
activations and labels up, fp32 activation gradients down, :class:`~.roles.SplitDevice`), and
uploads the device-side model for the next device. The server's optimizer persists across turns
and rounds; each device's optimizer is fresh per turn. No averaging.

Simulated cost. Only one device transmits at a time, so it gets the whole band B at full power
Pmax_n. With ``W_n = tau beta d 32 + 32 M`` uplink bits (fp32, no ranges):

- ``R_n = B log2(1 + Pmax_n g_n / (N0 B))``; upload ``u_n = W_n / R_n``;
- ``T_n = tau beta c_d / f_n + u_n + tau beta c_s / f_s + (tau beta d 32 + 32 M) / R_dl``;
- ``E_n = kappa tau beta c_d f_n^2 + Pmax_n u_n``;
- turns are sequential: round latency ``sum_n T_n``, energy ``sum_n E_n`` over the participants.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import (
    compute_energy_j,
    compute_time_s,
    downlink_time_s,
    rate_bps,
    server_time_s,
)
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.protocol import Protocol
from sflam_opt.training.protocols.roles import (
    DeviceRole,
    SequentialSplitServer,
    ServerRole,
    SplitDevice,
)

__all__ = ["SLProtocol"]


class SLProtocol(Protocol):
    """Vanilla sequential split learning."""

    name: ClassVar[str] = "sl"
    sequential: ClassVar[bool] = True
    device_role: ClassVar[type[DeviceRole]] = SplitDevice
    server_role: ClassVar[type[ServerRole]] = SequentialSplitServer

    @classmethod
    def device_costs(
        cls, scenario: Scenario, allocation: Allocation, spec: ModelSpec
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        m, t = scenario.model, scenario.training
        n = scenario.n_devices
        pmax = scenario.devices.max_power_w
        rate = rate_bps(scenario, np.full(n, scenario.system.bandwidth_hz), pmax)
        upload = (
            t.local_iters * t.batch_size * m.activation_elems * 32.0 + 32.0 * m.device_params
        ) / rate
        latency = (
            compute_time_s(scenario) + upload + server_time_s(scenario) + downlink_time_s(scenario)
        )
        energy = compute_energy_j(scenario) + pmax * upload
        return latency, energy
