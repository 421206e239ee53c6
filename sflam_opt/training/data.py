"""Image classification data sets for the trainer: scikit-learn digits and CIFAR-10.

``digits`` (default) is scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, no
download), split once into train/test with a fixed stratified split, scaled to [0, 1]. ``cifar10``
reads the standard "CIFAR-10 python version" pickles (``data_batch_1`` .. ``data_batch_5`` and
``test_batch``, each a dict with ``b"data"``, uint8 of shape (n, 3072), and ``b"labels"``) from a
directory; nothing is downloaded. The SFLAM paper (arXiv 2504.09114) trains ViTs on CIFAR-10.

Images are float32 tensors of shape (n, C, H, W); labels are int64 of shape (n,).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sflam_opt.errors import DataError, TrainingConfigError

__all__ = [
    "DATASETS",
    "ImageDataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "resize_images",
]

logger = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
# Per-channel mean/std of the CIFAR-10 training set, the usual normalization constants.
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class ImageDataset:
    """A train/test pair of image tensors.

    Attributes
    ----------
    name : str
        ``"digits"`` or ``"cifar10"``.
    x_train, x_test : torch.Tensor
        float32 images, shape (n, C, H, W).
    y_train, y_test : torch.Tensor
        int64 labels in ``[0, num_classes)``, shape (n,).
    num_classes : int
        Number of classes.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def in_chans(self) -> int:
        """Image channels C."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image side H (= W)."""
        return int(self.x_train.shape[2])


def load_digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits with a fixed stratified train/test split.

    Parameters
    ----------
    test_fraction : float
        Share of each class held out for testing (default 0.2: 1437 train, 360 test images).
    split_seed : int
        Seed of the split. Fixed by default so every run and protocol sees the same test set.

    Returns
    -------
    ImageDataset
        Images of shape (n, 1, 8, 8) scaled from 0..16 to [0, 1].
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise TrainingConfigError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return ImageDataset(
        name="digits",
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_te)),
        num_classes=10,
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python pickle; returns uint8 (n, 3072) and int64 (n,)."""
    if not path.is_file():
        raise DataError(
            f"--data-dir: missing CIFAR-10 file {path}; expected data_batch_1..5 and test_batch "
            "from cifar-10-python.tar.gz"
        )
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
        raise DataError(
            f"--data-dir: corrupt CIFAR-10 file {path} ({type(err).__name__}: {err}); "
            "re-extract cifar-10-python.tar.gz"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(
            f"--data-dir: corrupt CIFAR-10 file {path}: data shape {data.shape}, labels shape "
            f"{labels.shape}; expected (n, 3072) and (n,)"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"--data-dir: corrupt CIFAR-10 file {path}: labels outside 0..9")
    return data, labels


def _cifar_images(data: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    mean = torch.tensor(_CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_cifar10(data_dir: str | Path) -> ImageDataset:
    """CIFAR-10 from the python pickle batches in ``data_dir``.

    Parameters
    ----------
    data_dir : path
        Directory holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

    Returns
    -------
    ImageDataset
        Images of shape (n, 3, 32, 32), per-channel standardized.

    Raises
    ------
    DataError
        Naming the first missing or corrupt file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(
            f"--data-dir: {root} is not a directory; pass the extracted cifar-10-batches-py"
        )
    train = [_read_cifar_batch(root / name) for name in CIFAR10_TRAIN_FILES]
    x_te, y_te = _read_cifar_batch(root / CIFAR10_TEST_FILE)
    x_tr = np.concatenate([x for x, _ in train])
    y_tr = np.concatenate([y for _, y in train])
    return ImageDataset(
        name="cifar10",
        x_train=_cifar_images(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=_cifar_images(x_te),
        y_test=torch.from_numpy(y_te),
        num_classes=10,
    )


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``x`` (B, C, H, W) resized to (B, C, size, size); ``x`` itself if already that size.

    Bilinear interpolation with ``align_corners=False`` and no antialiasing: a fixed linear map
    with no randomness, so every device (and the test set) sees the same pixels, and gradients
    flow through it. Used to bring CIFAR-10's 32 px images to a ViT preset's 224 px.
    """
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )


def load_dataset(name: str, data_dir: str | Path | None = None) -> ImageDataset:
    """Load a data set by name (``"digits"`` or ``"cifar10"``; the latter needs ``data_dir``)."""
    if name == "digits":
        return load_digits()
    if name == "cifar10":
        if data_dir is None:
            raise TrainingConfigError(
                "--data-dir: --dataset cifar10 needs --data-dir DIR holding data_batch_1..5 "
                "and test_batch"
            )
        return load_cifar10(data_dir)
    raise TrainingConfigError(f"dataset: unknown {name!r}; choose one of {', '.join(DATASETS)}")
