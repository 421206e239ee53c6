"""Stochastic b-bit quantizer (formulation §3): unbiasedness, error bound, packing, wire format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sflam_opt.errors import DataError, TrainingConfigError
from sflam_opt.training.quantizer import (
    QuantizedTensor,
    dequantize,
    pack_codes,
    packed_nbytes,
    quantize,
    unpack_codes,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_unbiased_mean_of_many_quantizations_converges_to_x(bits):
    n, trials = 500, 4000
    x = torch.randn(n, generator=_gen(0))
    # Tiling x keeps the tensor's range [lo, hi], hence Delta: each row is an independent
    # quantization of x, and one call does all of them.
    q = quantize(x.repeat(trials, 1), bits, _gen(1))
    mean = dequantize(q).reshape(trials, n).double().mean(0)
    delta = q.delta
    # Each Q(x_i) lies in an interval of width Delta, so by Hoeffding and a union bound over n
    # values, |mean_i - x_i| <= Delta sqrt(ln(2n/alpha) / (2 trials)) for all i w.p. 1 - alpha.
    alpha = 1e-6
    tol = delta * math.sqrt(math.log(2 * n / alpha) / (2 * trials))
    assert tol < delta / 8  # tight enough that rounding to nearest/down (bias ~Delta/4) fails
    assert (mean - x.double()).abs().max().item() <= tol
    # Aggregate bias over all n values is smaller still.
    assert abs((mean - x.double()).mean().item()) <= delta / math.sqrt(n * trials) * 6


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_error_matches_stochastic_rounding_variance_and_bound(bits):
    batch, d, trials = 4, 300, 500
    a = torch.rand(batch, d, generator=_gen(2)) * 6 - 2
    q = quantize(a.repeat(trials, 1, 1), bits, _gen(3))
    err = (dequantize(q).reshape(trials, batch, d) - a).double()
    per_sample = (err**2).sum(-1).mean(0)  # E||Q(a) - a||^2 per sample, shape (batch,)
    delta = q.delta
    assert (per_sample <= d * delta**2 / 4).all()  # formulation §3 bound
    # Exact value for stochastic rounding: Delta^2 sum_i f_i (1 - f_i), f_i = frac((a_i-lo)/Delta).
    frac = torch.frac((a.double() - q.lo) / delta)
    exact = (delta**2 * frac * (1 - frac)).sum(-1)
    torch.testing.assert_close(per_sample, exact, rtol=0.05, atol=0.0)
    # Every value lands on the grid lo + k Delta, one of the two levels around a.
    assert err.abs().max().item() <= delta * (1 + 1e-5)


@settings(max_examples=150, deadline=None)
@given(
    bits=st.integers(1, 16),
    n=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_roundtrip_is_exact_for_every_bit_width(bits, n, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits <= 8 else np.uint16
    codes = rng.integers(0, 2**bits, size=n).astype(dtype)
    payload = pack_codes(codes, bits)
    assert len(payload) == math.ceil(n * bits / 8) == packed_nbytes(n, bits)
    np.testing.assert_array_equal(unpack_codes(payload, n, bits), codes)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), shape=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_quantize_to_bytes_roundtrip(bits, shape):
    x = torch.randn(*shape, generator=_gen(sum(shape) + bits)) * 3
    q = quantize(x, bits, _gen(bits))
    back = QuantizedTensor.from_bytes(q.to_bytes())
    assert back == q
    assert len(q.to_bytes()) == q.header_nbytes + q.nbytes
    assert q.nbytes == math.ceil(x.numel() * bits / 8) + 8
    y = dequantize(back)
    assert y.shape == x.shape and y.dtype == torch.float32
    if q.hi == q.lo:  # one value: constant tensor, reconstructed exactly
        assert torch.equal(y, x)
        return
    codes = torch.round((y - q.lo) / q.delta)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    torch.testing.assert_close(y, q.lo + codes * q.delta, rtol=0, atol=1e-5 * (1 + abs(q.hi)))


def test_known_bit_layout_msb_first_with_zero_padding():
    # 1, 2, 3 at 3 bits: 001 010 011 -> 00101001 1_0000000
    assert pack_codes(np.array([1, 2, 3], dtype=np.uint8), 3) == bytes([0b00101001, 0b10000000])
    # 11 bits: 0x5A5 = 10110100101, 0x001 = 00000000001 -> 10110100 101|00000 000001|00
    packed = pack_codes(np.array([0x5A5, 0x001], dtype=np.uint16), 11)
    assert packed == bytes([0b10110100, 0b10100000, 0b00000100])
    # The 1/2/4-, 8- and 16-bit fast paths use the same MSB-first layout.
    assert pack_codes(np.array([1, 15, 3], dtype=np.uint8), 4) == bytes([0x1F, 0x30])
    assert pack_codes(np.array([3, 0, 1, 2, 1], dtype=np.uint8), 2) == bytes([0b11000110, 0x40])
    assert pack_codes(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], np.uint8), 1) == bytes([0xB0, 0x80])
    assert pack_codes(np.array([7, 200], dtype=np.uint8), 8) == bytes([7, 200])
    assert pack_codes(np.array([0x1234], dtype=np.uint16), 16) == bytes([0x12, 0x34])


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 7, 8, 11, 15, 16])
def test_nbytes_is_packed_codes_plus_two_fp32(bits):
    x = torch.randn(13, 37, generator=_gen(4))
    q = quantize(x, bits, _gen(5))
    assert len(q.payload) == math.ceil(13 * 37 * bits / 8)
    assert q.nbytes == math.ceil(13 * 37 * bits / 8) + 8
    assert q.header_nbytes == 2 + 4 * 2


def test_fp32_passthrough_is_exact_and_carries_no_range():
    x = torch.randn(3, 5, 7, generator=_gen(6))
    q = quantize(x, 32)
    assert q.nbytes == len(q.payload) == 4 * x.numel()
    assert torch.equal(dequantize(q), x)
    assert torch.equal(dequantize(QuantizedTensor.from_bytes(q.to_bytes())), x)
    assert len(q.to_bytes()) == q.header_nbytes + q.nbytes


@pytest.mark.parametrize("bits", [1, 4, 8, 13, 16])
def test_constant_and_empty_tensors(bits):
    x = torch.full((4, 9), -1.25)
    q = quantize(x, bits, _gen(7))
    assert q.lo == q.hi == -1.25
    assert torch.equal(dequantize(q), x)
    empty = quantize(torch.empty(0, 5), bits)
    assert empty.payload == b"" and dequantize(empty).shape == (0, 5)


def test_other_dtypes_and_extreme_values_are_in_range():
    x = torch.tensor([[-1e30, 0.0, 3.0e30]], dtype=torch.float64)
    y = dequantize(quantize(x, 4, _gen(8)))
    assert torch.isfinite(y).all() and y.min() >= -1e30 * 1.0001 and y.max() <= 3.0e30 * 1.0001
    h = torch.randn(64, dtype=torch.float16, generator=_gen(9))
    assert dequantize(quantize(h, 16, _gen(9))).dtype == torch.float32


def test_same_generator_seed_same_payload():
    x = torch.randn(1000, generator=_gen(10))
    assert quantize(x, 5, _gen(11)).payload == quantize(x, 5, _gen(11)).payload
    assert quantize(x, 5, _gen(11)).payload != quantize(x, 5, _gen(12)).payload


@pytest.mark.parametrize("bits", [0, 17, 31, 33, -1, 8.0, True, "8", None])
def test_bad_bits_rejected_with_one_line_message(bits):
    with pytest.raises(TrainingConfigError, match="bits") as info:
        quantize(torch.ones(3), bits)
    assert "\n" not in str(info.value)


def test_non_finite_activations_rejected():
    with pytest.raises(TrainingConfigError, match="non-finite"):
        quantize(torch.tensor([0.0, float("nan")]), 8)
    with pytest.raises(TrainingConfigError, match="non-finite"):
        quantize(torch.tensor([0.0, float("inf")]), 8)


def test_corrupt_buffers_raise_data_error():
    blob = quantize(torch.randn(10, 3), 6, _gen(13)).to_bytes()
    for bad in (blob[:1], blob[:5], blob[:-1], blob + b"\0", bytes([9]) + blob[1:]):
        with pytest.raises(DataError):
            QuantizedTensor.from_bytes(bad)


def test_vit_b32_batch_round_trips_through_the_wire_format():
    # Its speed is a figure of `python -m benchmarks memory` (benchmarks/memory.py), not a timing here.
    x = torch.randn(128, 49, 768, generator=_gen(14))
    for bits in (2, 8):
        q = quantize(x, bits, _gen(15))
        payload = q.to_bytes()
        y = dequantize(QuantizedTensor.from_bytes(payload))
        assert y.shape == x.shape
        assert len(payload) == q.header_nbytes + q.nbytes
        step = (x.max() - x.min()) / (2**bits - 1)
        # Stochastic rounding moves each value to one of its two neighbouring levels.
        assert float((y - x).abs().max()) <= float(step) * (1 + 1e-5)


def _bit_matrix_pack(codes: np.ndarray, bits: int) -> bytes:
    """The former wire format, built from an n x bits bit matrix (reference for the packer)."""
    if bits <= 8:
        matrix = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
    else:
        as_bytes = codes.astype(">u2").view(np.uint8).reshape(-1, 2)
        matrix = np.unpackbits(as_bytes, axis=1)[:, 16 - bits :]
    return np.packbits(matrix).tobytes()


@pytest.mark.parametrize("bits", range(1, 17))
def test_packing_is_bit_exact_with_the_bit_matrix_format(bits):
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits <= 8 else np.uint16
    for n in (0, 1, 7, 8, 9, 63, 1000, 4099):
        codes = rng.integers(0, 2**bits, size=n).astype(dtype)
        payload = pack_codes(codes, bits)
        assert payload == _bit_matrix_pack(codes, bits), (bits, n)
        assert len(payload) == packed_nbytes(n, bits)
        np.testing.assert_array_equal(unpack_codes(payload, n, bits), codes)
