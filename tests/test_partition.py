"""Dirichlet non-IID partition: exact cover, seeding, the effect of alpha, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sflam_opt.errors import DataError, TrainingConfigError
from sflam_opt.training.partition import dirichlet_partition, partition_sizes


def _labels(n: int = 1000, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(20, 400),
    classes=st.integers(1, 12),
    devices=st.integers(1, 20),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**31),
)
def test_every_sample_assigned_exactly_once(n, classes, devices, alpha, seed):
    labels = _labels(n, classes, seed)
    parts = dirichlet_partition(labels, devices, alpha, seed=seed, min_samples=0)
    assert len(parts) == devices
    everything = np.concatenate(parts)
    assert np.array_equal(np.sort(everything), np.arange(n))
    assert partition_sizes(parts).sum() == n
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a device


def test_min_samples_is_respected_and_same_seed_same_split():
    labels = _labels(600)
    a = dirichlet_partition(labels, 20, 0.1, seed=3, min_samples=5)
    b = dirichlet_partition(labels, 20, 0.1, seed=3, min_samples=5)
    c = dirichlet_partition(labels, 20, 0.1, seed=4, min_samples=5)
    assert partition_sizes(a).min() >= 5
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def _mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray], classes: int) -> float:
    ent = []
    for p in parts:
        counts = np.bincount(labels[p], minlength=classes).astype(float)
        prob = counts[counts > 0] / counts.sum()
        ent.append(-(prob * np.log(prob)).sum())
    return float(np.mean(ent))


def test_small_alpha_is_more_skewed_than_large_alpha():
    labels = _labels(5000)
    skewed = dirichlet_partition(labels, 20, 0.1, seed=0)
    mild = dirichlet_partition(labels, 20, 1.0, seed=0)
    iid = dirichlet_partition(labels, 20, 1000.0, seed=0)
    h = [_mean_label_entropy(labels, p, 10) for p in (skewed, mild, iid)]
    assert h[0] < h[1] < h[2]
    # alpha -> inf tends to the IID split: every device close to the global mix (ln 10 = 2.303).
    assert h[2] > 0.98 * np.log(10)
    assert h[0] < 0.6 * np.log(10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_devices": 0, "alpha": 0.5}, TrainingConfigError, "devices"),
        ({"n_devices": 5, "alpha": 0.0}, TrainingConfigError, "alpha"),
        ({"n_devices": 5, "alpha": float("nan")}, TrainingConfigError, "alpha"),
        ({"n_devices": 5, "alpha": 0.5, "min_samples": -1}, TrainingConfigError, "min_samples"),
        ({"n_devices": 200, "alpha": 0.5}, DataError, "fewer devices"),
    ],
)
def test_bad_inputs_raise_one_line_errors(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        dirichlet_partition(_labels(100), **kwargs)
    assert "\n" not in str(info.value)


def test_impossible_min_samples_raises_data_error():
    # 30 samples of one class over 10 devices at tiny alpha: some device always gets < 3.
    with pytest.raises(DataError, match="raise alpha"):
        dirichlet_partition(np.zeros(30, dtype=int), 10, 0.01, seed=0, min_samples=3)
