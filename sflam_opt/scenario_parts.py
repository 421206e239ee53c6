"""The parts of a scenario: its TOML sections, bit set and device vectors, with their valid ranges.

Field metadata drives validation (:mod:`sflam_opt.scenario_parser`); the ranges are the physical
limits of ``docs/formulation.md`` §11. :class:`sflam_opt.scenario.Scenario` bundles these parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.numeric import FloatArray

__all__ = [
    "BITS_KEYS",
    "BLOCK_KEYS",
    "DEVICE_KEYS",
    "DEVICE_RANGES",
    "INT_FIELDS",
    "SECTIONS",
    "BitsSpec",
    "ConstraintParams",
    "ConvergenceParams",
    "Devices",
    "ModelParams",
    "ObjectiveParams",
    "ResourceBlocks",
    "SystemParams",
    "TrainingParams",
    "gain_db_from_distance",
]


def gain_db_from_distance(distance_m: FloatArray | float) -> FloatArray:
    """Path-loss channel gain in dB, ``-(128.1 + 37.6 log10(d / 1 km))`` (docs/formulation.md §1).

    Parameters
    ----------
    distance_m : float or ndarray, shape (N,)
        Device-to-base-station distance in metres (> 0).

    Returns
    -------
    ndarray, shape (N,)
        Channel power gain in dB (negative).
    """
    d = np.asarray(distance_m, dtype=np.float64)
    return -(128.1 + 37.6 * np.log10(d / 1000.0))


# --------------------------------------------------------------------------------------------
# Sections. Field metadata drives validation: "min" is an exclusive lower bound unless
# "inclusive" is set; "max" is inclusive. The ranges are physical limits (the table in the
# Scenario docstring); inside them every solver works without overflow.
# --------------------------------------------------------------------------------------------


def _f(lo: float | None = 0.0, *, inclusive: bool = False, hi: float | None = None, unit: str = ""):
    return field(metadata={"min": lo, "inclusive": inclusive, "max": hi, "unit": unit})


@dataclass(frozen=True)
class SystemParams:
    """``[system]``: the shared uplink and the server."""

    bandwidth_hz: float = _f(1e3, inclusive=True, hi=1e11, unit="Hz")
    noise_dbm_per_hz: float = _f(-200.0, inclusive=True, hi=-100.0, unit="dBm/Hz")
    downlink_bps: float = _f(1e3, inclusive=True, hi=1e13, unit="bit/s")
    server_cycles_per_s: float = _f(1e6, inclusive=True, hi=1e16, unit="cycles/s")
    kappa: float = _f(0.0, inclusive=True, hi=1e-20, unit="(effective switched capacitance)")


@dataclass(frozen=True)
class ModelParams:
    """``[model]``: the split model (device part = patch embedding)."""

    activation_elems: int = _f(1, inclusive=True, hi=1e12, unit="values per sample")
    device_cycles_per_sample: float = _f(0.0, inclusive=True, hi=1e15, unit="cycles")
    server_cycles_per_sample: float = _f(0.0, inclusive=True, hi=1e15, unit="cycles")
    device_params: int = _f(0, inclusive=True, hi=1e12, unit="parameters")


@dataclass(frozen=True)
class TrainingParams:
    """``[training]``: mini-batch size, local iterations per round and learning rate."""

    batch_size: int = _f(1, inclusive=True, hi=1e6, unit="samples")
    local_iters: int = _f(1, inclusive=True, hi=1e6, unit="mini-batches per round")
    learning_rate: float = _f(hi=1e9)


@dataclass(frozen=True)
class ConvergenceParams:
    """``[convergence]``: constants of the bound of docs/formulation.md §4."""

    a: float = _f(hi=1e9)
    phi0: float = _f(0.0, inclusive=True, hi=1e9)
    q: float = _f(0.0, inclusive=True, hi=1e9)
    epsilon: float = _f(hi=1e9)


@dataclass(frozen=True)
class ObjectiveParams:
    """``[objective]``: weight omega of latency against energy, in [0, 1]."""

    latency_weight: float = _f(0.0, inclusive=True, hi=1.0)


@dataclass(frozen=True)
class ConstraintParams:
    """``[constraints]`` (optional): round deadline (s) and per-device energy cap (J) per round."""

    round_deadline_s: float | None = _f(hi=1e9, unit="s")
    device_energy_j: float | None = _f(hi=1e9, unit="J")


@dataclass(frozen=True)
class ResourceBlocks:
    """``[system] resource_blocks`` and ``block_hz`` (optional): the band as M equal blocks.

    Per-device block gains live in :attr:`Devices.block_gain_db`; the model is described in
    ``docs/formulation.md`` §10.
    """

    count: int
    block_hz: float


@dataclass(frozen=True)
class BitsSpec:
    """``[bits]``: allowed bit widths, sorted, unique, integers in [1, 32]."""

    levels: tuple[int, ...]
    #: How the table was written, so that ``to_toml`` round-trips: ``"levels"`` or ``"range"``.
    style: str = "range"

    @property
    def array(self) -> NDArray[np.int64]:
        """Allowed bit widths as an int array, shape (L,), ascending."""
        return np.asarray(self.levels, dtype=np.int64)

    @property
    def max(self) -> int:
        return self.levels[-1]

    @property
    def min(self) -> int:
        return self.levels[0]


@dataclass(frozen=True, eq=False)
class Devices:
    """One entry per ``[[device]]`` table; every array has shape (N,).

    ``distance_m`` is kept (NaN where a device gave ``gain_db`` directly) so the file round-trips.
    ``block_gain_db`` (shape (N, M), dB) is set only in scenarios with resource blocks.
    """

    ids: tuple[Any, ...]
    gain_db: FloatArray
    cpu_hz: FloatArray
    max_power_w: FloatArray
    samples: NDArray[np.int64]
    distance_m: FloatArray
    block_gain_db: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def id_index(self) -> dict[Any, int]:
        """Position of each id (built once per ``Devices``: rounds look ids up every step)."""
        return {did: i for i, did in enumerate(self.ids)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Devices):
            return NotImplemented
        return (
            self.ids == other.ids
            and all(
                np.array_equal(getattr(self, k), getattr(other, k), equal_nan=True)
                for k in ("gain_db", "cpu_hz", "max_power_w", "samples", "distance_m")
            )
            and (self.block_gain_db is None) == (other.block_gain_db is None)
            and (
                self.block_gain_db is None
                or np.array_equal(self.block_gain_db, other.block_gain_db)
            )
        )

    def take(self, index: Sequence[int] | NDArray[np.int64]) -> Devices:
        """Devices at ``index`` (in that order)."""
        idx = np.asarray(index, dtype=np.int64)
        return Devices(
            ids=tuple(self.ids[i] for i in idx.tolist()),
            gain_db=self.gain_db[idx],
            cpu_hz=self.cpu_hz[idx],
            max_power_w=self.max_power_w[idx],
            samples=self.samples[idx],
            distance_m=self.distance_m[idx],
            block_gain_db=None if self.block_gain_db is None else self.block_gain_db[idx],
        )


SECTIONS: dict[str, type] = {
    "system": SystemParams,
    "model": ModelParams,
    "training": TrainingParams,
    "convergence": ConvergenceParams,
    "objective": ObjectiveParams,
    "constraints": ConstraintParams,
}
INT_FIELDS = {
    ("model", "activation_elems"),
    ("model", "device_params"),
    ("training", "batch_size"),
    ("training", "local_iters"),
}
DEVICE_KEYS = (
    "id",
    "gain_db",
    "distance_m",
    "cpu_hz",
    "max_power_w",
    "samples",
    "block_gain_db",
)
#: Valid ranges of the ``[[device]]`` keys (validation metadata, as for the sections).
DEVICE_RANGES: dict[str, dict[str, Any]] = {
    "gain_db": {"min": -200.0, "inclusive": True, "max": 0.0, "unit": "dB"},
    "distance_m": {"min": 1.0, "inclusive": True, "max": 5e4, "unit": "m"},
    "cpu_hz": {"min": 1e6, "inclusive": True, "max": 1e12, "unit": "cycles/s"},
    "max_power_w": {"min": 1e-6, "inclusive": True, "max": 100.0, "unit": "W"},
    "samples": {"min": 1, "inclusive": True, "max": 1e12, "unit": "samples"},
    # Path loss (at most -15.3 dB at 1 m) plus a Rayleigh fade, which rarely lifts it 15 dB.
    "block_gain_db": {"min": -250.0, "inclusive": True, "max": 20.0, "unit": "dB"},
}
#: Optional ``[system]`` keys of a resource-block scenario (docs/formulation.md §10).
BLOCK_KEYS = ("resource_blocks", "block_hz")
BITS_KEYS = ("levels", "min", "max")
