"""Non-IID split of a labelled training set over devices (Dirichlet over classes).

The SFLAM paper (arXiv 2504.09114) and SplitFed (Thapa et al., AAAI 2022) evaluate on data split
across clients; the usual non-IID benchmark, used here, draws for every class ``c`` a vector of device
shares ``p_c ~ Dirichlet(alpha * 1_N)`` and deals that class's samples to the devices in those
proportions (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution").
Small ``alpha`` gives each device few classes; large ``alpha`` tends to an IID split. The resulting
sizes are the ``D_n`` of docs/formulation.md §1 (weights ``rho_n`` of FedAvg and of ``Phi_q``).
"""

from __future__ import annotations

import logging

import numpy as np

from sflam_opt.errors import DataError, TrainingConfigError

__all__ = ["dirichlet_partition", "partition_sizes"]

logger = logging.getLogger(__name__)

_MAX_DRAWS = 1000


def dirichlet_partition(
    labels: np.ndarray,
    n_devices: int,
    alpha: float,
    *,
    seed: int = 0,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """Split sample indices over ``n_devices`` with Dirichlet(alpha) class proportions.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        Class label of every training sample.
    n_devices : int
        Number of devices N (>= 1).
    alpha : float
        Dirichlet concentration (> 0). Smaller is more skewed.
    seed : int
        Seed of the ``numpy.random.Generator`` that draws the proportions and shuffles each class.
    min_samples : int
        Every device must receive at least this many samples. A draw that violates it is
        discarded and redrawn from the same generator (so the result is still a pure function of
        the seed), up to 1000 draws.

    Returns
    -------
    list of ndarray of int64
        ``parts[n]`` holds the (sorted) indices of device n. Every index in ``range(n)`` appears in
        exactly one part.

    Raises
    ------
    TrainingConfigError
        If ``n_devices``, ``alpha`` or ``min_samples`` is out of range.
    DataError
        If no draw satisfies ``min_samples`` (too few samples for that many devices).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if int(n_devices) < 1:
        raise TrainingConfigError(f"devices: must be >= 1, got {n_devices}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise TrainingConfigError(f"alpha: must be a finite number > 0, got {alpha}")
    if min_samples < 0:
        raise TrainingConfigError(f"min_samples: must be >= 0, got {min_samples}")
    n = labels.size
    if n < n_devices * min_samples:
        raise DataError(
            f"devices: {n} training samples cannot give {n_devices} devices "
            f"{min_samples} sample(s) each; use fewer devices"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(_MAX_DRAWS):
        owner = np.empty(n, dtype=np.int64)
        for idx in by_class:
            shares = rng.dirichlet(np.full(n_devices, float(alpha)))
            # Cut the shuffled class at the cumulative shares: device n gets the n-th slice.
            cuts = np.round(np.cumsum(shares)[:-1] * idx.size).astype(np.int64)
            owner[rng.permutation(idx)] = np.repeat(
                np.arange(n_devices), np.diff(np.concatenate(([0], cuts, [idx.size])))
            )
        sizes = np.bincount(owner, minlength=n_devices)
        if sizes.min() >= min_samples:
            order = np.argsort(owner, kind="stable")
            return [part.astype(np.int64) for part in np.split(order, np.cumsum(sizes)[:-1])]
    raise DataError(
        f"alpha: no Dirichlet({alpha}) split in {_MAX_DRAWS} draws gives each of {n_devices} "
        f"devices >= {min_samples} samples; raise alpha or use fewer devices"
    )


def partition_sizes(parts: list[np.ndarray]) -> np.ndarray:
    """Local data set sizes ``D_n`` of a partition, shape (N,), int64."""
    return np.array([p.size for p in parts], dtype=np.int64)
