"""SFLAM (``--protocol sflam``): SFL-V1 with b_n-bit quantized uplink activations.

SFLAM (arXiv 2504.09114) keeps the ViT's embedding layer on each device and the transformer
blocks on the server, and quantizes the uplink activations with per-device bits chosen together
with bandwidth and power. Training is SplitFed V1 (Thapa et al. 2022, :mod:`.sfl`) except that
device n sends ``Q_{b_n}(a)`` -- stochastic uniform quantization over the tensor's range,
docs/formulation.md §3 -- and the server trains on the dequantized activations; activation
gradients come back in fp32. ``b_n = 32`` is a plain fp32 uplink.

Simulated cost: docs/formulation.md §2 with the allocation's bits, bandwidth and power
(:func:`sflam_opt.costs.breakdown`); round latency ``max_n T_n`` and energy ``sum_n E_n`` over the
participants. The measured uplink payload per device and round equals ``W_n(b_n) / 8`` bytes up to
the packing of the last byte; frames add the quantizer's per-tensor header (bit width and shape).
"""

from __future__ import annotations

from typing import ClassVar

from sflam_opt.training.protocols.sfl import SFLProtocol

__all__ = ["SFLAMProtocol"]


class SFLAMProtocol(SFLProtocol):
    """SplitFed V1 with per-device quantized uplink activations."""

    name: ClassVar[str] = "sflam"
    #: Device n sends ``plan.bits[n]``-bit activations (the allocation's, or ``--bits``).
    quantized: ClassVar[bool] = True
