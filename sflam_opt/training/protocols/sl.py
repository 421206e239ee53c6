"""Sequential split learning (``--protocol sl``): vanilla SL, Gupta and Raskar 2018 / Vepakomma et al.

One device-side model travels from device to device (relayed by the server) and one server-side
model is trained continuously. In a round the participants take turns, in the round's order: the
device downloads the current device-side model, runs ``tau`` split steps with the server (fp32
activations and labels up, fp32 activation gradients down, :func:`~.base.split_step`), and
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

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

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
from sflam_opt.training.protocols.base import Protocol, RoundPlan, RoundStats, StepMeter, split_step
from sflam_opt.training.quantizer import FP32_BITS

__all__ = ["SLProtocol"]


class SLProtocol(Protocol):
    """Vanilla sequential split learning."""

    name: ClassVar[str] = "sl"
    sequential: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local_device = copy.deepcopy(self.device_model)
        self._server_opt = self.optimizer(self.server_model.parameters())

    def run_round(self, plan: RoundPlan) -> RoundStats:
        meter = StepMeter()
        for n in plan.participants.tolist():
            state = self.device_model.state_dict()
            self._local_device.load_state_dict(self.transport.to_device(n, "model", state))
            dev_opt = self.optimizer(self._local_device.parameters())
            xs, ys = self.batches(plan, n)
            for t in range(self.local_iters):
                split_step(
                    self._local_device,
                    self.server_model,
                    dev_opt,
                    self._server_opt,
                    xs[t],
                    ys[t],
                    device_id=n,
                    transport=self.transport,
                    bits=FP32_BITS,
                    quant_generator=None,
                    label_dtype=self.data.label_dtype,
                    meter=meter,
                )
            uploaded = self.transport.to_server(n, "model", self._local_device.state_dict())
            self.device_model.load_state_dict(uploaded)
        return meter.stats()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["server_opt"] = copy.deepcopy(self._server_opt.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._server_opt.load_state_dict(state["server_opt"])

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
