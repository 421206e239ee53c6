"""SFL-V1 without quantization (``--protocol sfl``): SplitFed, Thapa et al., AAAI 2022.

Every participant n, in parallel (simulated one after another here):

1. receives the global device-side model over the downlink (32 M bits),
2. runs ``tau`` split steps with its own copy of the global server-side model: fp32 activations
   and labels up, fp32 activation gradients down (:func:`~.base.split_step`),
3. sends its device-side model back up (32 M bits).

Then the server averages the device-side models and, separately, its per-device server-side
copies, both with weights ``D_n / sum D`` (FedAvg over the participants).

Simulated cost: formulation section 2 exactly, with ``b_n = 32`` for every device and the
allocation's bandwidth and power (:func:`sflam_opt.costs.breakdown`): per device
``T_n = tau beta c_d / f_n + W_n(32) / R_n + tau beta c_s / f_s + (tau beta d 32 + 32 M) / R_dl``,
``E_n = kappa tau beta c_d f_n^2 + p_n W_n(32) / R_n``; round latency ``max_n T_n``, energy
``sum_n E_n`` over the participants. ``W_n(32)`` includes the formulation's 64 range bits per
mini-batch, which an fp32 link does not send (8 bytes against ``4 beta d`` per batch).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.costs import breakdown
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.base import (
    FedAvgAccumulator,
    Protocol,
    RoundPlan,
    RoundStats,
    StepMeter,
    split_step,
)
from sflam_opt.training.quantizer import FP32_BITS

__all__ = ["SFLProtocol"]


class SFLProtocol(Protocol):
    """SplitFed V1 with fp32 uplink activations."""

    name: ClassVar[str] = "sfl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Working copies for one participant at a time; loaded from the global state per device.
        self._local_device = copy.deepcopy(self.device_model)
        self._local_server = copy.deepcopy(self.server_model)

    def bits_for(self, plan: RoundPlan, device: int) -> int:
        """Uplink bit width of ``device``: always fp32 here."""
        return FP32_BITS

    def run_round(self, plan: RoundPlan) -> RoundStats:
        meter = StepMeter()
        dev_avg, srv_avg = FedAvgAccumulator(), FedAvgAccumulator()
        global_device = self.device_model.state_dict()
        global_server = self.server_model.state_dict()
        sizes = self.data.sizes
        for n in plan.participants.tolist():
            received = self.transport.to_device(n, "model", global_device)
            self._local_device.load_state_dict(received)
            self._local_server.load_state_dict(global_server)
            dev_opt = self.optimizer(self._local_device.parameters())
            srv_opt = self.optimizer(self._local_server.parameters())
            xs, ys = self.batches(plan, n)
            bits = self.bits_for(plan, n)
            gen = self.quant_generator(plan, n) if bits != FP32_BITS else None
            for t in range(self.local_iters):
                split_step(
                    self._local_device,
                    self._local_server,
                    dev_opt,
                    srv_opt,
                    xs[t],
                    ys[t],
                    device_id=n,
                    transport=self.transport,
                    bits=bits,
                    quant_generator=gen,
                    label_dtype=self.data.label_dtype,
                    meter=meter,
                )
            uploaded = self.transport.to_server(n, "model", self._local_device.state_dict())
            dev_avg.add(uploaded, float(sizes[n]))
            srv_avg.add(self._local_server.state_dict(), float(sizes[n]))
        self.device_model.load_state_dict(dev_avg.result(like=global_device))
        self.server_model.load_state_dict(srv_avg.result(like=global_server))
        return meter.stats()

    @classmethod
    def device_costs(
        cls, scenario: Scenario, allocation: Allocation, spec: ModelSpec
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        bits = allocation.bits if cls.quantized else np.full(len(allocation), FP32_BITS)
        bd = breakdown(scenario, Allocation(bits, allocation.bandwidth_hz, allocation.power_w))
        return bd.latency_s, bd.energy_j
