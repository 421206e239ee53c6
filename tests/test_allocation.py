"""Allocation JSON round trip and validation."""

from __future__ import annotations

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
def test_bad_allocation_files(text: str, expected: str) -> None:
    with pytest.raises(AllocationError) as info:
        Allocation.from_json(text, source="a.json")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_shape_mismatch_rejected() -> None:
    with pytest.raises(AllocationError, match="equal length"):
        Allocation(np.array([1, 2]), np.array([1.0]), np.array([1.0, 2.0]))
