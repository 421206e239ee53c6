"""Allocation JSON round trip and validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sflam_opt import Allocation, AllocationError


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = Allocation(
        rng.integers(1, 17, 7),
        rng.uniform(1, 1e7, 7),
        rng.uniform(0, 1, 7),
        ids=tuple(f"dev{i}" for i in range(7)),
    )
    path = a.save(tmp_path / "a.json")
    assert Allocation.load(path) == a


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "invalid JSON at line 1"),
        ("[]", 'expected a JSON object with a "devices" list'),
        ('{"devices": 5}', 'expected a JSON object with a "devices" list'),
        ('{"devices": []}', '"devices" is empty'),
        ('{"devices": [{"bits": 4, "bandwidth_hz": 1.0}]}', "missing key 'power_w'"),
        (
            '{"devices": [{"bits": 4.5, "bandwidth_hz": 1.0, "power_w": 1}]}',
            "expected a whole number",
        ),
        (
            '{"devices": [{"bits": 4, "bandwidth_hz": "x", "power_w": 1}]}',
            "bandwidth_hz: expected a finite",
        ),
    ],
)
def test_bad_allocation_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(AllocationError) as info:
        Allocation.from_json(text, source="a.json")
    assert expected in str(info.value) and "\n" not in str(info.value)
    # The streamed reader of files says the same (a lone "{" is a truncated file there).
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(AllocationError) as info:
        Allocation.load(tmp_path / "a.json")
    assert (expected if text != "{" else "truncated") in str(info.value)


def test_shape_mismatch_rejected() -> None:
    with pytest.raises(AllocationError, match="equal length"):
        Allocation(np.array([1, 2]), np.array([1.0]), np.array([1.0, 2.0]))


def _alloc(n: int, ids: tuple | None = None) -> Allocation:
    rng = np.random.default_rng(0)
    return Allocation(
        rng.integers(2, 17, n),
        rng.random(n) * 1e6,
        rng.random(n) * 0.2,
        ids,
        scenario_sha256="ab" * 32,
    )


def test_files_are_read_a_chunk_of_rows_at_a_time(tmp_path: Path, monkeypatch) -> None:
    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_READ_CHARS", 200)  # many chunks, rows cut across reads
    a = _alloc(50, tuple(f"dev}}{i}" if i % 3 else i for i in range(50)))
    for name, text in (
        ("indented.json", a.to_json()),
        ("compact.json", json.dumps(a.to_dict())),
        ("spaced.json", json.dumps(a.to_dict(), indent=7)),
    ):
        (tmp_path / name).write_text(text)
        b = Allocation.load(tmp_path / name)
        assert b == a and b.scenario_sha256 == a.scenario_sha256


def test_npz_round_trip_and_kind_told_by_content(tmp_path: Path) -> None:
    a = _alloc(20, tuple(range(20)))
    a.save(tmp_path / "a.npz")
    b = Allocation.load(tmp_path / "a.npz")
    assert b == a and b.scenario_sha256 == a.scenario_sha256 and b.ids == tuple(range(20))
    (tmp_path / "a.npz").rename(tmp_path / "renamed.json")  # the content decides, not the name
    assert Allocation.load(tmp_path / "renamed.json") == a
    named = _alloc(3, ("x", "y", "z"))
    named.save(tmp_path / "s.npz")
    assert Allocation.load(tmp_path / "s.npz").ids == ("x", "y", "z")
    with pytest.raises(AllocationError, match="mix whole numbers and strings"):
        _alloc(2, (1, "y")).save(tmp_path / "m.npz")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t.replace('"bits": 9', '"bits": "9"', 1),
            "devices[{k}].bits: expected a finite",
        ),
        (lambda t: t.replace('"bits": 9', '"bits": 9.5', 1), "devices[{k}].bits: expected a whole"),
        (lambda t: t.replace('"bits": 9,', "", 1), "devices[{k}]: missing key 'bits'"),
        (lambda t: t.replace('"bits": 9', '"bits": 9x', 1), "devices[{k}].bits: invalid JSON"),
        (lambda t: t.replace('"bits": 9', '"bits": 1e999', 1), "devices[{k}].bits: inf is outside"),
        (lambda t: t[: t.index('"bits": 9')], "truncated"),
    ],
)
def test_one_bad_row_among_many_is_named(tmp_path: Path, monkeypatch, edit, expected) -> None:
    import sflam_opt.jsonio as jsonio

    monkeypatch.setattr(jsonio, "_READ_CHARS", 4096)
    a = _alloc(3000)
    bits = a.bits.copy()
    k = 2345
    bits[:] = 4
    bits[k] = 9  # the only row with 9 bits
    a = Allocation(bits, a.bandwidth_hz, a.power_w, scenario_sha256=a.scenario_sha256)
    path = tmp_path / "a.json"
    path.write_text(edit(a.to_json()))
    with pytest.raises(AllocationError) as info:
        Allocation.load(path)
    message = str(info.value)
    assert expected.format(k=k) in message and "\n" not in message, message
    assert message.startswith(f"{path}: ")
    if expected == "truncated":
        assert f"devices[{k}]" in message and "line" in message


def test_corrupt_and_invalid_npz_files_are_one_line(tmp_path: Path) -> None:
    a = _alloc(10, tuple(range(10)))
    a.save(tmp_path / "a.npz")
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.npz").write_bytes(data[:4] + bytes(range(256)) * 4)
    for name in ("cut.npz", "noise.npz"):
        with pytest.raises(AllocationError, match="not a readable .npz allocation") as info:
            Allocation.load(tmp_path / name)
        assert "\n" not in str(info.value)
    bad = dict(np.load(tmp_path / "a.npz"))
    bad["bandwidth_hz"] = bad["bandwidth_hz"].copy()
    bad["bandwidth_hz"][7] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(AllocationError, match=r"bandwidth_hz\[7\]: nan is not a valid"):
        Allocation.load(tmp_path / "nan.npz")
    bad["bandwidth_hz"][7] = 1.0
    del bad["power_w"]
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(AllocationError, match="missing column 'power_w'"):
        Allocation.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(AllocationError, match="not an sflam-opt allocation"):
        Allocation.load(tmp_path / "other.npz")
