"""The torch-free codec: golden bytes from the torch implementation it replaced, and no torch."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from sflam_opt import codec
from sflam_opt.errors import DataError

torch = pytest.importorskip("torch")

from sflam_opt.training.quantizer import dequantize, quantize  # noqa: E402
from sflam_opt.training.transport import encode  # noqa: E402

# sha256 prefixes printed by the torch quantizer and transport before they became wrappers over
# sflam_opt.codec (commit 52c3a2e), for x below and torch.Generator().manual_seed(bits).
GOLDEN = {
    1: ("b33cdb0b73dbdc8c", "19e97c294b2fb67b"),
    2: ("f01e05d71d06639a", "2c097227f0513353"),
    3: ("734137851ec181d8", "1ec4b958855bf184"),
    4: ("389b298210a45a5c", "7494ea2144485832"),
    5: ("fcd78ca4ad1cf0bc", "052355fdf3391036"),
    6: ("53a9270475a6e41e", "721378924646d9d1"),
    7: ("8765fc8cb5b6f988", "4d4c32c17683f19b"),
    8: ("dbd2fa112f00e6d3", "fcecc8bf2d0955e9"),
    9: ("26cd6578250fc42b", "26cded05dd2d6ab1"),
    10: ("bea4df0cc52ff419", "fa3aa4461e9de564"),
    11: ("5460000061154f0c", "4045df33da78432a"),
    12: ("cf85ca08e0d6150f", "5f9d8829b6372019"),
    13: ("203faf7eb5e079d3", "771f3f42aa3a5a2a"),
    14: ("5cbc4220ad125dc2", "61fa8ad5a676e54a"),
    15: ("7c8008b8b7ef051e", "eb469dbdae81cbea"),
    16: ("0cbd481f4b7fe570", "9c180fde0c86eb5a"),
    32: ("f42abee7135050f8", "0021ad3a34f1dc7e"),
}
GOLDEN_STATE = ("86ce10cbd9411e0a", 577, 678)


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _x():
    return torch.from_numpy(np.random.default_rng(5).normal(size=(7, 13)).astype(np.float32))


@pytest.mark.parametrize("bits", sorted(GOLDEN))
def test_quantized_bytes_and_values_are_those_of_the_former_torch_quantizer(bits):
    q = quantize(_x(), bits, torch.Generator().manual_seed(bits))
    assert (_h(q.to_bytes()), _h(dequantize(q).numpy().tobytes())) == GOLDEN[bits]
    # The numpy side decodes the same bytes to the same values.
    back = codec.QuantizedTensor.from_bytes(q.to_bytes())
    assert _h(codec.dequantize(back).tobytes()) == GOLDEN[bits][1]


def test_state_frame_is_that_of_the_former_transport():
    x = _x()
    state = {
        "w": x,
        "b": torch.arange(5, dtype=torch.int64),
        "m": torch.tensor([True, False]),
        "u": torch.tensor([1, 2], dtype=torch.uint8),
        "h": x[:2].to(torch.float16),
        "q": quantize(x, 5, torch.Generator().manual_seed(9)),
    }
    f = encode(state)
    assert (_h(f.data), f.payload_nbytes, len(f.data)) == GOLDEN_STATE
    # The same frame built from numpy arrays alone, and decoded without torch.
    arrays = {
        k: (v if isinstance(v, codec.QuantizedTensor) else v.numpy()) for k, v in state.items()
    }
    assert codec.encode(arrays).data == f.data
    got = codec.decode(f.data)
    assert list(got) == list(state)
    np.testing.assert_array_equal(got["b"], np.arange(5))
    assert got["m"].dtype == np.bool_ and got["u"].dtype == np.uint8
    np.testing.assert_array_equal(got["h"], x[:2].to(torch.float16).float().numpy())


@pytest.mark.parametrize("bits", [1, 3, 7, 8, 11, 16, 32])
def test_the_numpy_and_torch_quantizers_are_twins(bits):
    """Given torch's uniform draws, codec.quantize packs exactly what the torch quantizer does."""
    rng = np.random.default_rng(bits)
    for shape, scale in (((9, 31), 1.0), ((4000,), 1e-3), ((2, 3, 5), 1e3)):
        x = torch.from_numpy(rng.normal(scale=scale, size=shape).astype(np.float32))
        for values in (x, torch.relu(x), x.to(torch.float64)):
            q = quantize(values, bits, torch.Generator().manual_seed(1))
            gen = torch.Generator().manual_seed(1)
            draws = lambda n, gen=gen: torch.rand(n, generator=gen).numpy()  # noqa: E731
            twin = codec.quantize(values.numpy(), bits, draws)
            assert twin.to_bytes() == q.to_bytes()
            np.testing.assert_array_equal(codec.dequantize(twin), dequantize(q).numpy())


def test_numpy_generator_quantizes_reproducibly_and_unbiased():
    x = np.random.default_rng(1).normal(size=4000).astype(np.float32)
    a = codec.quantize(x, 3, np.random.default_rng(7))
    assert a == codec.quantize(x, 3, np.random.default_rng(7))
    assert a != codec.quantize(x, 3, np.random.default_rng(8))
    mean = np.mean(
        [codec.dequantize(codec.quantize(x, 2, np.random.default_rng(s))) for s in range(200)],
        axis=0,
    )
    assert np.abs(mean - x).max() < 0.25 * a.delta * 3


def test_decode_turns_every_truncation_into_a_data_error():
    f = codec.encode(
        {"a": np.ones((3, 2), np.float32), "q": codec.quantize(np.arange(9.0), 4)}
    ).data
    for cut in range(len(f)):
        with pytest.raises(DataError):
            codec.decode(f[:cut])
    with pytest.raises(DataError, match="dtype"):
        codec.encode(np.array(["a"]))


def test_codec_and_the_flower_decoder_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from sflam_opt import codec\n"
        "f = codec.encode({'0': codec.quantize(np.ones(5), 4, np.random.default_rng(0))})\n"
        "print(codec.dequantize(codec.decode(f.data)['0']).sum())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == 5.0
