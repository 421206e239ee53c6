"""The packed-update codec, numpy only: quantize, pack bits, frame (docs/formulation.md §2-§3).

This module is the one wire format of sflam-opt. The trainer's activation quantizer
(:mod:`sflam_opt.training.quantizer`), its link (:mod:`sflam_opt.training.transport`, also used by
the gloo transport) and the Flower integration (:mod:`sflam_opt.integrations.flower`) are thin
layers over it; it imports no torch, so a Flower server without torch decodes updates.

Quantizer. Each tensor ``a`` (``n`` values) is quantized over its own range ``[lo, hi]`` with
``2**b`` levels spaced ``Delta = (hi - lo) / (2**b - 1)``. A value at ``t = (a - lo) / Delta``
levels is sent as ``floor(t)`` with probability ``1 - frac(t)`` and as ``floor(t) + 1`` with
probability ``frac(t)``, so ``E[Q(a)] = a`` and each value's error variance is
``Delta**2 frac(t) (1 - frac(t)) <= Delta**2 / 4``.

Bit packing. The integer codes are packed densely, most significant bit first, into exactly
``ceil(n * b / 8)`` bytes, plus ``lo`` and ``hi`` as two float32 numbers: the ``beta d b + 64``
bits of docs/formulation.md §2 (:attr:`QuantizedTensor.nbytes`). :meth:`QuantizedTensor.to_bytes`
prepends a per-tensor header (bit width and shape). ``bits == 32`` is an fp32 passthrough: the
payload is the raw little-endian float32 values and no range is sent.

Frames. :func:`encode` turns a message into one self-describing frame, :func:`decode` turns it
back. The first byte is a tag:

- ``Q``: a :class:`QuantizedTensor` (``to_bytes()``);
- ``F``: a float array sent as fp32 (the ``to_bytes()`` of its 32-bit passthrough);
- ``I``: an integer or bool array: dtype code (:data:`INT_DTYPES` order), ndim, uint32 dims, raw
  little-endian values;
- ``S``: a state dict: uint32 count, then per entry uint16 name length, UTF-8 name, uint32 frame
  length and the entry's frame.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from sflam_opt.errors import DataError, TrainingConfigError

__all__ = [
    "FP32_BITS",
    "INT_DTYPES",
    "MAX_BITS",
    "Frame",
    "QuantizedTensor",
    "Uniform",
    "decode",
    "dequantize",
    "encode",
    "pack_codes",
    "packed_nbytes",
    "quantize",
    "sendable_bits",
    "unpack_codes",
]

FP32_BITS = 32
MAX_BITS = 16
#: Integer dtypes an ``I`` frame carries, in wire-code order (``numpy`` dtype strings).
INT_DTYPES = ("u1", "i1", "<i2", "<i4", "<i8", "?")
_RANGE_NBYTES = 8  # lo and hi as two float32 numbers
_HEADER = struct.Struct("<BB")  # bits, ndim; then ndim little-endian uint32 dimensions
_DIM = struct.Struct("<I")
_RANGE = struct.Struct("<ff")
_TAG_QUANT = b"Q"
_TAG_FLOAT = b"F"
_TAG_INT = b"I"
_TAG_STATE = b"S"
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

#: Source of the stochastic rounding: a numpy ``Generator`` or ``n -> n`` float32 draws in [0, 1).
Uniform: TypeAlias = np.random.Generator | Callable[[int], np.ndarray]


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
        truncated = f"quantized tensor buffer of {len(view)} bytes is truncated; resend the tensor"
        if len(view) < _HEADER.size:
            raise DataError(truncated)
        bits, ndim = _HEADER.unpack_from(view, 0)
        if not sendable_bits(bits):
            raise DataError(f"quantized tensor header has bits={bits}; the buffer is corrupt")
        offset = _HEADER.size + _DIM.size * ndim
        if len(view) < offset:
            raise DataError(truncated)
        shape = tuple(_DIM.unpack_from(view, _HEADER.size + _DIM.size * i)[0] for i in range(ndim))
        lo = hi = 0.0
        if bits != FP32_BITS:
            if len(view) < offset + _RANGE.size:
                raise DataError(truncated)
            lo, hi = _RANGE.unpack_from(view, offset)
            offset += _RANGE.size
        expected = packed_nbytes(math.prod(shape), bits)
        if len(view) - offset != expected:
            raise DataError(
                f"quantized tensor payload has {len(view) - offset} bytes but shape {shape} at "
                f"{bits} bits needs {expected}; the buffer is corrupt"
            )
        return cls(bits=bits, shape=shape, lo=lo, hi=hi, payload=bytes(view[offset:]))


def sendable_bits(bits: int) -> bool:
    """True when the codec can send ``bits`` (1..16, or 32 as the fp32 passthrough)."""
    return 1 <= bits <= MAX_BITS or bits == FP32_BITS


def _check_bits(bits: object) -> int:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, int | np.integer)
        or not sendable_bits(int(bits))
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


def _uniform(rng: Uniform | None, n: int) -> np.ndarray:
    if rng is None:
        rng = np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng.random(n, dtype=np.float32)
    return np.asarray(rng(n), dtype=np.float32).reshape(n)


def quantize(x: np.ndarray, bits: int, rng: Uniform | None = None) -> QuantizedTensor:
    """Stochastically quantize ``x`` to ``bits`` bits over its range and pack the codes.

    Parameters
    ----------
    x : ndarray, any shape
        Values to send (float or integer; computed in float32).
    bits : int
        1..16, or 32 for an exact fp32 passthrough.
    rng : numpy Generator or callable, optional
        Source of the rounding randomness: a ``Generator`` (same seed, same codes), or a callable
        ``n -> ndarray`` of ``n`` float32 draws in [0, 1) (the trainer passes torch's generator
        this way). It is drawn from only when the range is not a single value. Default: fresh
        entropy.

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
    arr = np.asarray(x)
    shape = tuple(int(s) for s in arr.shape)
    flat = arr.reshape(-1).astype(np.float32, copy=False)
    if bits == FP32_BITS:
        payload = flat.astype("<f4", copy=False).tobytes()
        return QuantizedTensor(bits=bits, shape=shape, lo=0.0, hi=0.0, payload=payload)
    if flat.size == 0:
        return QuantizedTensor(bits=bits, shape=shape, lo=0.0, hi=0.0, payload=b"")
    lo32, hi32 = flat.min(), flat.max()
    lo, hi = float(lo32), float(hi32)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise TrainingConfigError(
            f"x holds non-finite values (range [{lo}, {hi}]) and cannot be quantized; "
            "training diverged: lower the learning rate"
        )
    levels = 2**bits - 1
    if hi > lo:
        # t in [0, levels]; floor(t + U), U ~ U[0, 1), rounds up with probability frac(t). The
        # scale is rounded to float32 first, as a float32 tensor times a Python float is in torch.
        t = (flat - lo32) * np.float32(levels / (hi - lo))
        t += _uniform(rng, flat.size)
        np.floor(t, out=t)
        np.clip(t, 0, levels, out=t)
    else:
        t = np.zeros(flat.size, dtype=np.float32)
    codes = t.astype(np.uint8 if bits <= 8 else np.uint16)
    return QuantizedTensor(bits=bits, shape=shape, lo=lo, hi=hi, payload=pack_codes(codes, bits))


def dequantize(q: QuantizedTensor) -> np.ndarray:
    """Reconstruct ``lo + code * Delta`` as float32 values of the original shape.

    Parameters
    ----------
    q : QuantizedTensor
        Output of :func:`quantize` or :meth:`QuantizedTensor.from_bytes`.

    Returns
    -------
    ndarray, float32, shape ``q.shape``
    """
    bits = _check_bits(q.bits)
    n = q.numel
    if bits == FP32_BITS:
        return np.frombuffer(q.payload, dtype="<f4", count=n).astype(np.float32).reshape(q.shape)
    lo32 = np.float32(q.lo)
    step = np.float32(float(np.float32(q.hi) - lo32) / (2**bits - 1))
    out = unpack_codes(q.payload, n, bits).astype(np.float32)
    out *= step
    out += lo32
    return out.reshape(q.shape)


@dataclass(frozen=True)
class Frame:
    """One encoded message.

    Attributes
    ----------
    data : bytes
        The bytes that cross the link.
    payload_nbytes : int
        The part of ``data`` docs/formulation.md §2 counts (values, packed codes and ranges);
        ``len(data) - payload_nbytes`` is framing.
    """

    data: bytes
    payload_nbytes: int


def _array_frame(a: np.ndarray) -> Frame:
    code = next((i for i, d in enumerate(INT_DTYPES) if a.dtype == np.dtype(d)), None)
    if code is None:
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"codec: cannot send an array of dtype {a.dtype}")
        q = quantize(a, FP32_BITS)
        return Frame(_TAG_FLOAT + q.to_bytes(), q.nbytes)
    raw = np.ascontiguousarray(a).astype(INT_DTYPES[code], copy=False).tobytes()
    head = _TAG_INT + _U8.pack(code) + _U8.pack(a.ndim) + b"".join(_U32.pack(s) for s in a.shape)
    return Frame(head + raw, len(raw))


def encode(message: QuantizedTensor | np.ndarray | Mapping[str, object]) -> Frame:
    """Serialize a message into one frame (module docstring).

    Parameters
    ----------
    message : QuantizedTensor, ndarray or mapping of str to either
        Float arrays are sent as fp32; integer and bool arrays (:data:`INT_DTYPES`) as their raw
        values; a mapping as the frames of its entries, in order, with their names.

    Returns
    -------
    Frame

    Raises
    ------
    DataError
        A type or dtype the format cannot carry.
    """
    if isinstance(message, QuantizedTensor):
        return Frame(_TAG_QUANT + message.to_bytes(), message.nbytes)
    if isinstance(message, np.ndarray | np.generic):
        return _array_frame(np.asarray(message))
    if isinstance(message, Mapping):
        parts = [_TAG_STATE, _U32.pack(len(message))]
        payload = 0
        for name, value in message.items():
            key = str(name).encode("utf-8")
            sub = encode(value)  # type: ignore[arg-type]
            parts += [_U16.pack(len(key)), key, _U32.pack(len(sub.data)), sub.data]
            payload += sub.payload_nbytes
        return Frame(b"".join(parts), payload)
    raise DataError(f"codec: cannot send a message of type {type(message).__name__}")


def _decode_int(view: memoryview) -> np.ndarray:
    code, ndim = view[1], view[2]
    if code >= len(INT_DTYPES):
        raise DataError(f"transport: integer frame has unknown dtype code {code}")
    shape = tuple(_U32.unpack_from(view, 3 + 4 * i)[0] for i in range(ndim))
    arr = np.frombuffer(view[3 + 4 * ndim :], dtype=INT_DTYPES[code]).copy()
    if arr.size != math.prod(shape):
        raise DataError(f"transport: integer frame of shape {shape} has {arr.size} values")
    return arr.reshape(shape)


def _decode_state(view: memoryview) -> dict[str, object]:
    (count,) = _U32.unpack_from(view, 1)
    pos, out = 5, {}
    for _ in range(count):
        (klen,) = _U16.unpack_from(view, pos)
        name = bytes(view[pos + 2 : pos + 2 + klen]).decode("utf-8")
        pos += 2 + klen
        (flen,) = _U32.unpack_from(view, pos)
        if pos + 4 + flen > len(view):
            raise DataError(f"transport: state frame entry {name!r} is truncated")
        out[name] = decode(view[pos + 4 : pos + 4 + flen])
        pos += 4 + flen
    if pos != len(view):
        raise DataError(f"transport: state frame has {len(view) - pos} trailing bytes")
    return out


def decode(data: bytes | memoryview) -> QuantizedTensor | np.ndarray | dict[str, object]:
    """Inverse of :func:`encode`.

    A ``Q`` frame decodes to the :class:`QuantizedTensor` itself (dequantizing is the receiver's
    business), an ``F`` frame to a float32 array, an ``I`` frame to an array of its dtype, an
    ``S`` frame to a dict in the sent order.

    Raises
    ------
    DataError
        A malformed or truncated frame.
    """
    view = memoryview(data)
    if not view:
        raise DataError("transport: empty frame")
    tag = bytes(view[:1])
    try:
        if tag == _TAG_QUANT:
            return QuantizedTensor.from_bytes(view[1:])
        if tag == _TAG_FLOAT:
            q = QuantizedTensor.from_bytes(view[1:])
            if q.bits != FP32_BITS:
                raise DataError(f"transport: float frame carries {q.bits}-bit codes, not fp32")
            return np.frombuffer(q.payload, dtype="<f4", count=q.numel).reshape(q.shape).copy()
        if tag == _TAG_INT:
            return _decode_int(view)
        if tag == _TAG_STATE:
            return _decode_state(view)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"transport: corrupt {tag.decode('latin-1')!r} frame ({exc})") from None
    raise DataError(f"transport: unknown frame tag {tag!r}")
