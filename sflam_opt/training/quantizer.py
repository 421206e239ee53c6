"""Stochastic b-bit activation quantizer with dense bit packing (docs/formulation.md §3).

Each activation tensor ``a`` (``d`` values per sample, ``n`` values in all) is quantized over its
own range ``[lo, hi]`` with ``2**b`` levels spaced ``Delta = (hi - lo) / (2**b - 1)``. A value at
``t = (a - lo) / Delta`` levels is sent as ``floor(t)`` with probability ``1 - frac(t)`` and as
``floor(t) + 1`` with probability ``frac(t)``, so ``E[Q(a)] = a`` and each value's error variance is
``Delta**2 frac(t) (1 - frac(t)) <= Delta**2 / 4``, i.e. ``E||Q(a) - a||^2 <= d Delta**2 / 4`` per
sample.

Wire format. The payload is the integer codes packed densely, most significant bit first, into
exactly ``ceil(n * b / 8)`` bytes, plus ``lo`` and ``hi`` as two float32 numbers: the
``beta d b + 64`` bits per mini-batch of docs/formulation.md §2 (:attr:`QuantizedTensor.nbytes`). On top of
that, :meth:`QuantizedTensor.to_bytes` prepends a small *per-tensor header* (the bit width and the
shape, :attr:`QuantizedTensor.header_nbytes` bytes) that a real link would need once per tensor but
that the formulation leaves out. ``bits == 32`` is an fp32 passthrough: the payload is the raw
little-endian float32 values and no range is sent.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sflam_opt.errors import DataError, TrainingConfigError

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

FP32_BITS = 32
MAX_BITS = 16
_RANGE_NBYTES = 8  # lo and hi as two float32 numbers
_HEADER = struct.Struct("<BB")  # bits, ndim; then ndim little-endian uint32 dimensions
_DIM = struct.Struct("<I")
_RANGE = struct.Struct("<ff")


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantized tensor as it travels uplink.

    Attributes
    ----------
    bits : int
        Bits per value, 1..16, or 32 for the fp32 passthrough.
    shape : tuple of int
        Shape of the original tensor.
    lo, hi : float
        Quantization range (float32 values); both 0.0 for the fp32 passthrough, which sends none.
    payload : bytes
        Packed codes, ``ceil(numel * bits / 8)`` bytes (raw float32 values for ``bits == 32``).
    """

    bits: int
    shape: tuple[int, ...]
    lo: float
    hi: float
    payload: bytes

    @property
    def numel(self) -> int:
        """Number of values in the original tensor."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes sent for this tensor by docs/formulation.md §2: packed codes plus the fp32 range."""
        return len(self.payload) + (0 if self.bits == FP32_BITS else _RANGE_NBYTES)

    @property
    def header_nbytes(self) -> int:
        """Size of the per-tensor header of :meth:`to_bytes` (bits and shape), bytes."""
        return _HEADER.size + _DIM.size * len(self.shape)

    @property
    def delta(self) -> float:
        """Quantization step ``(hi - lo) / (2**bits - 1)``; 0.0 for the fp32 passthrough."""
        if self.bits == FP32_BITS:
            return 0.0
        return float(np.float32(self.hi) - np.float32(self.lo)) / (2**self.bits - 1)

    def to_bytes(self) -> bytes:
        """Serialise: header (bits, ndim, uint32 dims), then ``lo, hi`` (fp32), then payload.

        ``len(q.to_bytes()) == q.header_nbytes + q.nbytes``.
        """
        parts = [_HEADER.pack(self.bits, len(self.shape))]
        parts += [_DIM.pack(s) for s in self.shape]
        if self.bits != FP32_BITS:
            parts.append(_RANGE.pack(self.lo, self.hi))
        parts.append(self.payload)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantizedTensor:
        """Parse the output of :meth:`to_bytes`.

        Raises
        ------
        DataError
            The buffer is truncated, too long, or has an invalid bit width.
        """
        view = memoryview(data)
        if len(view) < _HEADER.size:
            raise DataError(
                f"quantized tensor buffer of {len(view)} bytes is truncated; resend the tensor"
            )
        bits, ndim = _HEADER.unpack_from(view, 0)
        if not (1 <= bits <= MAX_BITS or bits == FP32_BITS):
            raise DataError(f"quantized tensor header has bits={bits}; the buffer is corrupt")
        offset = _HEADER.size + _DIM.size * ndim
        if len(view) < offset:
            raise DataError(
                f"quantized tensor buffer of {len(view)} bytes is truncated; resend the tensor"
            )
        shape = tuple(_DIM.unpack_from(view, _HEADER.size + _DIM.size * i)[0] for i in range(ndim))
        lo = hi = 0.0
        if bits != FP32_BITS:
            if len(view) < offset + _RANGE.size:
                raise DataError(
                    f"quantized tensor buffer of {len(view)} bytes is truncated; resend the tensor"
                )
            lo, hi = _RANGE.unpack_from(view, offset)
            offset += _RANGE.size
        expected = packed_nbytes(math.prod(shape), bits)
        if len(view) - offset != expected:
            raise DataError(
                f"quantized tensor payload has {len(view) - offset} bytes but shape {shape} at "
                f"{bits} bits needs {expected}; the buffer is corrupt"
            )
        return cls(bits=bits, shape=shape, lo=lo, hi=hi, payload=bytes(view[offset:]))


def _check_bits(bits: object) -> int:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, int | np.integer)
        or not (1 <= bits <= MAX_BITS or bits == FP32_BITS)
    ):
        raise TrainingConfigError(
            f"bits={bits!r} is not a supported bit width; use an integer in 1..{MAX_BITS} or "
            f"{FP32_BITS} (fp32 passthrough)"
        )
    return int(bits)


def packed_nbytes(numel: int, bits: int) -> int:
    """Payload bytes of ``numel`` values at ``bits`` bits, ``ceil(numel * bits / 8)``.

    Excludes the 8 bytes of the range (see :attr:`QuantizedTensor.nbytes`).
    """
    return (numel * _check_bits(bits) + 7) // 8


def _byte_spans(bits: int) -> list[tuple[int, int, int]]:
    """(code j, byte k, shift) for every code of a group of 8 and every byte it touches.

    A group of 8 codes fills exactly ``bits`` bytes. Code j occupies stream bits
    ``[j bits, (j + 1) bits)``, MSB first; its overlap with byte k is moved into place by a left
    shift of ``8 k + 8 - (j + 1) bits`` (negative: right shift).
    """
    spans = []
    for j in range(8):
        start, end = j * bits, (j + 1) * bits
        for k in range(start // 8, (end - 1) // 8 + 1):
            spans.append((j, k, 8 * k + 8 - end))
    return spans


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integer codes densely, MSB first, into ``ceil(len * bits / 8)`` bytes.

    Groups of 8 codes fill exactly ``bits`` bytes; every output byte is the OR of the (shifted)
    codes it overlaps, computed one (code, byte) column at a time over all groups, so the scratch
    beyond the output is one column of codes (``len / 8`` values).

    Parameters
    ----------
    codes : ndarray of unsigned int, shape (n,)
        Values in ``[0, 2**bits)``; ``uint8`` for ``bits <= 8``, ``uint16`` otherwise.
    bits : int
        Bits per code, 1..16.

    Returns
    -------
    bytes
    """
    bits = _check_bits(bits)
    dtype = np.uint8 if bits <= 8 else np.uint16
    codes = np.ascontiguousarray(codes).astype(dtype, copy=False).reshape(-1)
    if bits == 8:
        return codes.tobytes()
    if bits == 16:
        return codes.astype(">u2", copy=False).tobytes()
    full = codes.size // 8
    out = np.zeros((full + (codes.size % 8 > 0), bits), dtype=np.uint8)
    tail = np.zeros(8, dtype=dtype)
    tail[: codes.size - 8 * full] = codes[8 * full :]
    groups = codes[: 8 * full].reshape(full, 8)
    for j, k, shift in _byte_spans(bits):
        col = groups[:, j]
        part = col << dtype(shift) if shift >= 0 else col >> dtype(-shift)
        out[:full, k] |= part.astype(np.uint8)  # keeps the low 8 bits
        if full < out.shape[0]:
            t = tail[j] << dtype(shift) if shift >= 0 else tail[j] >> dtype(-shift)
            out[full, k] |= np.uint8(t & dtype(0xFF))
    return out.reshape(-1)[: packed_nbytes(codes.size, bits)].tobytes()


def unpack_codes(payload: bytes, numel: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``numel`` codes as ``uint8`` (bits <= 8) or ``uint16``."""
    bits = _check_bits(bits)
    buf = np.frombuffer(payload, dtype=np.uint8)
    if bits == 8:
        return buf[:numel].copy()
    if bits == 16:
        return buf[: 2 * numel].view(">u2").astype(np.uint16)
    dtype = np.uint8 if bits <= 8 else np.uint16
    groups = -(-numel // 8)
    padded = np.zeros(groups * bits, dtype=np.uint8)
    padded[: min(buf.size, padded.size)] = buf[: padded.size]
    cols = padded.reshape(groups, bits)
    out = np.zeros((groups, 8), dtype=dtype)
    for j, k, shift in _byte_spans(bits):
        byte = cols[:, k].astype(dtype)
        out[:, j] |= byte >> dtype(shift) if shift >= 0 else byte << dtype(-shift)
    out &= dtype(2**bits - 1)
    return out.reshape(-1)[:numel]


def quantize(x: Tensor, bits: int, generator: torch.Generator | None = None) -> QuantizedTensor:
    """Stochastically quantize ``x`` to ``bits`` bits over its range and pack the codes.

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
