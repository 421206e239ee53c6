"""Stochastic b-bit activation quantizer with dense bit packing: torch over :mod:`sflam_opt.codec`.

The quantizer, the bit packing and the wire format live in the torch-free :mod:`sflam_opt.codec`
(its docstring states the format; docs/formulation.md §2-§3 the model). This module gives the
trainer the same operations on torch tensors: :func:`quantize` draws its rounding noise from a
``torch.Generator`` on the tensor's device, so a seeded run draws what it always drew, and
:func:`dequantize` returns a tensor. Every other name is the codec's, re-exported.

Each activation tensor ``a`` (``d`` values per sample) is quantized over its own range with
``2**b`` levels spaced ``Delta``, unbiased, with ``E||Q(a) - a||^2 <= d Delta**2 / 4`` per sample;
the payload is ``ceil(n * b / 8)`` bytes of codes plus the fp32 range, the ``beta d b + 64`` bits
per mini-batch of docs/formulation.md §2 (:attr:`QuantizedTensor.nbytes`). ``bits == 32`` is an
fp32 passthrough.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sflam_opt import codec
from sflam_opt.codec import (
    FP32_BITS,
    MAX_BITS,
    QuantizedTensor,
    _check_bits,
    pack_codes,
    packed_nbytes,
    unpack_codes,
)

__all__ = [
    "FP32_BITS",
    "MAX_BITS",
    "QuantizedTensor",
    "quantize",
    "dequantize",
    "packed_nbytes",
    "pack_codes",
    "unpack_codes",
]


def quantize(x: Tensor, bits: int, generator: torch.Generator | None = None) -> QuantizedTensor:
    """:func:`sflam_opt.codec.quantize` of a tensor, rounding with torch's generator.

    Parameters
    ----------
    x : Tensor, any shape
        Values to send (any float dtype, any device; computed in float32 on the CPU).
    bits : int
        1..16, or 32 for an exact fp32 passthrough.
    generator : torch.Generator, optional
        Source of the rounding draws, on ``x``'s device (same seed, same codes), advanced exactly
        as the torch quantizer before the codec did: by ``x.numel()`` draws when the range is not
        a single value, else not at all.

    Returns
    -------
    QuantizedTensor
        Unbiased: ``E[dequantize(quantize(x, b))] == x``. Raises ``TrainingConfigError`` for an
        unsupported ``bits`` or non-finite ``x``.
    """
    bits = _check_bits(bits)
    with torch.no_grad():
        values = x.detach().to(torch.float32)

        def uniform(n: int) -> np.ndarray:
            draw = torch.rand(n, generator=generator, device=values.device, dtype=torch.float32)
            return draw.cpu().numpy()

        return codec.quantize(values.cpu().numpy(), bits, uniform)


def dequantize(q: QuantizedTensor, device: torch.device | str | None = None) -> Tensor:
    """Reconstruct ``lo + code * Delta`` as a float32 tensor of the original shape.

    Parameters
    ----------
    q : QuantizedTensor
        Output of :func:`quantize` or :meth:`QuantizedTensor.from_bytes`.
    device : torch.device or str, optional
        Where to put the result (default CPU).

    Returns
    -------
    Tensor, float32, shape ``q.shape``
    """
    return torch.from_numpy(codec.dequantize(q)).to(device)
