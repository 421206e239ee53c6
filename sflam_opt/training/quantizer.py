"""Stochastic b-bit activation quantizer on torch tensors, over :mod:`sflam_opt.codec`.

The bit packing, :class:`QuantizedTensor` and the wire format live in the torch-free
:mod:`sflam_opt.codec` (its docstring states the format; docs/formulation.md §2-§3 the model),
re-exported here. :func:`quantize` computes the codes with torch ops on the tensor's device and
draws its rounding noise from a ``torch.Generator`` (so a seeded run draws what it always drew),
then packs them with the codec; :func:`dequantize` returns a tensor.

Each activation tensor ``a`` (``d`` values per sample) is quantized over its own range with
``2**b`` levels spaced ``Delta``, unbiased, with ``E||Q(a) - a||^2 <= d Delta**2 / 4`` per sample;
the payload is ``ceil(n * b / 8)`` bytes of codes plus the fp32 range, the ``beta d b + 64`` bits
per mini-batch of docs/formulation.md §2 (:attr:`QuantizedTensor.nbytes`). ``bits == 32`` is an
fp32 passthrough.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sflam_opt.codec import (
    FP32_BITS,
    MAX_BITS,
    QuantizedTensor,
    _check_bits,
    pack_codes,
    packed_nbytes,
    unpack_codes,
)
from sflam_opt.errors import TrainingConfigError

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
    """Stochastically quantize ``x`` to ``bits`` bits over its range and pack the codes.

    The torch twin of :func:`sflam_opt.codec.quantize`: the codes are computed with torch ops on
    ``x``'s device (so the float scratch stays torch memory, as ``sflam-opt memory`` counts it,
    and on the GPU for a GPU tensor) and packed by the codec. Given the same uniform draws both
    give the same bytes (tests/test_codec.py).

    Parameters
    ----------
    x : Tensor, any shape
        Values to send (any float dtype, any device; computed in float32).
    bits : int
        1..16, or 32 for an exact fp32 passthrough.
    generator : torch.Generator, optional
        Source of the rounding randomness (on ``x``'s device); same seed, same codes.

    Returns
    -------
    QuantizedTensor
        Unbiased: ``E[dequantize(quantize(x, b))] == x``.

    Raises
    ------
    TrainingConfigError
        ``bits`` is unsupported, or ``x`` holds NaN or infinite values.
    """
    bits = _check_bits(bits)
    with torch.no_grad():
        flat = x.detach().reshape(-1).to(torch.float32)
        shape = tuple(int(s) for s in x.shape)
        if bits == FP32_BITS:
            payload = flat.cpu().numpy().astype("<f4", copy=False).tobytes()
            return QuantizedTensor(bits=bits, shape=shape, lo=0.0, hi=0.0, payload=payload)
        if flat.numel() == 0:
            return QuantizedTensor(bits=bits, shape=shape, lo=0.0, hi=0.0, payload=b"")
        lo_t, hi_t = torch.aminmax(flat)
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise TrainingConfigError(
                f"x holds non-finite values (range [{lo}, {hi}]) and cannot be quantized; "
                "training diverged: lower the learning rate"
            )
        levels = 2**bits - 1
        if hi > lo:
            # t in [0, levels]; floor(t + U), U ~ U[0, 1), rounds up with probability frac(t).
            t = (flat - lo_t) * (levels / (hi - lo))
            t.add_(torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype))
            codes_t = t.floor_().clamp_(0, levels)
        else:
            codes_t = torch.zeros_like(flat)
        dtype = torch.uint8 if bits <= 8 else torch.int32
        codes = codes_t.to(dtype).cpu().numpy()
        if bits > 8:
            codes = codes.astype(np.uint16)
        return QuantizedTensor(
            bits=bits, shape=shape, lo=lo, hi=hi, payload=pack_codes(codes, bits)
        )


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
    bits = _check_bits(q.bits)
    n = q.numel
    if bits == FP32_BITS:
        values = np.frombuffer(q.payload, dtype="<f4", count=n).astype(np.float32)
        return torch.from_numpy(values).reshape(q.shape).to(device)
    codes = unpack_codes(q.payload, n, bits)
    codes_t = torch.from_numpy(codes.astype(np.int32) if bits > 8 else codes).to(device)
    lo = torch.tensor(q.lo, dtype=torch.float32)
    hi = torch.tensor(q.hi, dtype=torch.float32)
    step = float(hi - lo) / (2**bits - 1)
    out = codes_t.to(torch.float32).mul_(step).add_(lo.to(codes_t.device))
    return out.reshape(q.shape)
