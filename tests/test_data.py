"""Data sets: the bundled digits split and the CIFAR-10 pickle loader on a fake archive."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sflam_opt.errors import DataError, TrainingConfigError
from sflam_opt.training.data import (
    CIFAR10_TEST_FILE,
    CIFAR10_TRAIN_FILES,
    load_cifar10,
    load_dataset,
    load_digits,
)


def write_fake_cifar(root: Path, per_file: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny CIFAR-10 python archive: the 6 standard files, ``per_file`` images each."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_file)]
        with (root / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, fh)
        written[name] = data
    return written


def test_digits_split_is_fixed_stratified_and_scaled():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    # Stratified: every class has ~20 % of its images in the test set.
    tr = np.bincount(a.y_train.numpy(), minlength=10)
    te = np.bincount(a.y_test.numpy(), minlength=10)
    assert np.all(np.abs(te / (tr + te) - 0.2) < 0.01)
    assert (a.image_size, a.in_chans, a.num_classes) == (8, 1, 10)


def test_cifar_loader_reads_the_fake_archive(tmp_path):
    written = write_fake_cifar(tmp_path)
    ds = load_cifar10(tmp_path)
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64 and int(ds.y_train.max()) <= 9
    # Pixel (channel 0, row 0, col 1) of the first training image is byte 1 of its row,
    # standardized with the CIFAR-10 channel statistics.
    raw = written["data_batch_1"][0, 1] / 255.0
    assert float(ds.x_train[0, 0, 0, 1]) == pytest.approx((raw - 0.4914) / 0.2470, abs=1e-6)
    # Channel 1 starts at byte 1024 of the row.
    raw_g = written["data_batch_1"][0, 1024] / 255.0
    assert float(ds.x_train[0, 1, 0, 0]) == pytest.approx((raw_g - 0.4822) / 0.2435, abs=1e-6)
    assert load_dataset("cifar10", tmp_path).x_test.shape == (6, 3, 32, 32)


def test_missing_cifar_file_is_named(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as info:
        load_cifar10(tmp_path)
    assert "\n" not in str(info.value)


def test_corrupt_cifar_files_raise_data_error(tmp_path):
    write_fake_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="corrupt CIFAR-10 file .*test_batch"):
        load_cifar10(tmp_path)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match=r"\(n, 3072\)"):
        load_cifar10(tmp_path)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match="KeyError"):
        load_cifar10(tmp_path)


def test_bad_dataset_arguments(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(TrainingConfigError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(TrainingConfigError, match="unknown 'mnist'"):
        load_dataset("mnist")


def test_resize_is_a_fixed_bilinear_map_and_identity_at_the_same_size():
    from sflam_opt.training.data import resize_images

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = resize_images(x, 224)
    assert y.shape == (2, 3, 224, 224)
    assert torch.equal(y, resize_images(x.clone(), 224))  # no randomness: same on every device
    assert resize_images(x, 32) is x
    # Bilinear interpolation keeps constants and stays within the input's range.
    assert torch.allclose(resize_images(torch.full((1, 1, 8, 8), 0.3), 24), torch.tensor(0.3))
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6


def test_vit_b32_on_cifar_format_data_sends_49_tokens_per_image(tmp_path):
    from sflam_opt.training import TrainConfig, train

    write_fake_cifar(tmp_path, per_file=4)
    res = train(
        TrainConfig(
            protocol="sflam", model="vit-b32", dataset="cifar10", data_dir=str(tmp_path),
            devices=2, rounds=1, local_iters=1, batch_size=2, bits=8, solver="equal",
            alpha=100.0, threads=1,
        )
    )  # fmt: skip
    assert res.spec.image_size == 224 and res.spec.num_patches == 49
    assert res.summary["model_spec"]["activation_elems"] == 37_632
    assert res.scenario.model.activation_elems == 37_632
    # 2 devices x 1 step x (2 images x 37,632 values x 8 bits + the 8-byte range).
    assert res.metrics[0]["traffic"]["up/activations/payload"] == 2 * (2 * 37_632 + 8)
