"""The trainer's per-round allocation: fading draws and one :class:`~sflam_opt.Allocator` step.

Each round the trainer asks :meth:`RoundSchedule.round` for the bits, bandwidth and power of the
round's participants:

- ``fading="rayleigh"`` redraws every device's channel gain once per round (block fading): the
  path-loss gain of the scenario times an exponential power gain of mean 1, ``|h|^2`` of a
  unit-variance complex Gaussian ``h``, seeded from ``(seed, round)``. A device's draw does not
  depend on who else takes part.
- With fading, or with fewer participants than devices, every round is re-solved for the
  participants only (they share the whole band) by an :class:`~sflam_opt.Allocator`, which
  warm-starts from their last bits.
- Otherwise (no fading, everyone takes part, or an allocation file) the round's problem never
  changes, so the allocation resolved before training applies to every round unchanged; that keeps
  the results identical to a single solve.

The round's latency and energy are computed from that round's allocation (its bits, bandwidth and
power) by the protocol's cost formulas, and the bytes sent follow from the round's bits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.allocator import Allocator
from sflam_opt.errors import TrainingConfigError
from sflam_opt.numeric import FloatArray
from sflam_opt.scenario import Scenario
from sflam_opt.scenario_parts import DEVICE_RANGES
from sflam_opt.training.config import FADING_MODELS, TrainConfig
from sflam_opt.training.models import ModelSpec
from sflam_opt.training.protocols.protocol import Protocol
from sflam_opt.training.quantizer import FP32_BITS

__all__ = [
    "FADING_MODELS",
    "PURPOSE_FADING",
    "RoundAllocation",
    "RoundSchedule",
    "faded_gain_db",
    "uniform_bits",
]


#: Purpose tag of the fading generator; the protocols use 0..2 (participants, batches, quantizer).
PURPOSE_FADING = 3


def faded_gain_db(gain_db: FloatArray, seed: int, round_index: int, model: str) -> FloatArray:
    """Every device's channel gain in round ``round_index`` under ``model``, dB, shape (N,).

    Parameters
    ----------
    gain_db : ndarray, shape (N,)
        Mean (path-loss) gains in dB.
    seed, round_index : int
        The draw is a function of these alone.
    model : {"none", "rayleigh"}
        ``"rayleigh"``: ``gain_db + 10 log10(X)`` with ``X ~ Exp(1)`` per device (block Rayleigh
        fading); ``"none"``: ``gain_db`` unchanged.
    """
    if model == "none":
        return np.asarray(gain_db, dtype=np.float64)
    if model != "rayleigh":
        raise TrainingConfigError(f"fading: invalid value {model!r}; choose one of none, rayleigh")
    rng = np.random.default_rng([int(seed), int(round_index), PURPOSE_FADING])
    power = rng.standard_exponential(np.shape(gain_db))
    # Exp(1) is positive almost surely; the floor keeps log10 finite for a draw of exactly 0.
    faded = np.asarray(gain_db, dtype=np.float64) + 10.0 * np.log10(np.maximum(power, 1e-300))
    # A fade can carry a device near either end of formulation §11's gain range past it, which
    # the Allocator refuses; the range's ends are the physical limits the model is valid for.
    valid = DEVICE_RANGES["gain_db"]
    return np.clip(faded, valid["min"], valid["max"])


def uniform_bits(alloc: Allocation, width: int | None) -> Allocation:
    """``alloc`` with every device at ``width`` bits (``--bits``, or the warm-up); None: as is."""
    if width is None:
        return alloc
    bits = np.full(len(alloc), width, dtype=np.int64)
    return Allocation(bits, alloc.bandwidth_hz, alloc.power_w, alloc.ids)


@dataclass
class RoundAllocation:
    """What one round applies.

    Attributes
    ----------
    bits : ndarray of int, shape (N,)
        Uplink bits per trainer device for :class:`~sflam_opt.training.protocols.RoundPlan`
        (participants: this round's; others: their last).
    latency_s, energy_j : ndarray
        Per-device round latency (s) and energy (J) that ``index`` selects from.
    index : ndarray of int, shape (K,)
        Positions of the participants in ``latency_s`` / ``energy_j``.
    row : dict
        Entries for the round's ``metrics.jsonl`` row (``allocation``: the participants' bits,
        bandwidth, power, solve status and J).
    """

    bits: NDArray[np.int64]
    latency_s: FloatArray
    energy_j: FloatArray
    index: NDArray[np.int64]
    row: dict[str, Any] = field(default_factory=dict)


class RoundSchedule:
    """Per-round allocation of :func:`sflam_opt.training.train` (see the module docstring).

    Parameters
    ----------
    config : TrainConfig
    scenario : Scenario
        The trainer's scenario (trainer device n is scenario device n).
    allocation : Allocation
        The allocation resolved before training (after any ``bits`` override).
    info : dict
        Where it came from (``status``, ``objective`` of its solve).
    protocol : type of Protocol
    spec : ModelSpec
    warmup : tuple of (int, int), optional
        ``(rounds, bits)``: rounds ``1..rounds`` send ``bits`` (the online calibration's fit
        rounds), whatever the solver chose; :meth:`recalibrate` ends it.
    """

    def __init__(
        self,
        config: TrainConfig,
        scenario: Scenario,
        allocation: Allocation,
        info: dict[str, Any],
        protocol: type[Protocol],
        spec: ModelSpec,
        warmup: tuple[int, int] | None = None,
    ) -> None:
        self.config = config
        self.protocol = protocol
        self.spec = spec
        self.dynamic = config.allocation is None and (
            config.fading != "none" or config.participants_per_round < config.devices
        )
        self.allocator = Allocator(scenario, config.solver) if self.dynamic else None
        self.override = config.bits
        if warmup is not None:
            self.override = warmup[1]
        self._set(scenario, allocation, info)

    def _set(self, scenario: Scenario, allocation: Allocation, info: dict[str, Any]) -> None:
        self.scenario = scenario
        self.static = uniform_bits(allocation, self.override)
        self.info = info
        self.bits = self._plan_bits(self.static.bits)
        self._latency, self._energy = self.protocol.device_costs(scenario, self.static, self.spec)

    def recalibrate(self, scenario: Scenario, allocation: Allocation, info: dict[str, Any]) -> None:
        """Apply new constants from the next round on: ``scenario``'s, its ``allocation``.

        Ends any warm-up override (``--bits`` stays); a per-round allocator re-solves with them.
        """
        self.override = self.config.bits
        if self.allocator is not None:
            self.allocator.recalibrate(dataclasses.asdict(scenario.convergence))
        self._set(scenario, allocation, info)

    def _plan_bits(self, bits: NDArray[np.int64]) -> NDArray[np.int64]:
        if self.protocol.quantized:
            return np.asarray(bits, dtype=np.int64).copy()
        return np.full(len(bits), FP32_BITS, dtype=np.int64)

    def round(self, round_index: int, participants: NDArray[np.int64]) -> RoundAllocation:
        """The bits, costs and metrics entries of round ``round_index`` (1-based).

        Raises
        ------
        TrainingConfigError
            When the round's problem has no feasible allocation (the solver's message).
        """
        part = np.asarray(participants, dtype=np.int64)
        if not self.dynamic:
            alloc = self.static
            row = _row(alloc, part, self.info.get("status"), self.info.get("objective"))
            return RoundAllocation(self.bits, self._latency, self._energy, part, row)
        assert self.allocator is not None
        ids = self.scenario.devices.ids
        devices = [ids[i] for i in part.tolist()]
        gains = faded_gain_db(
            self.scenario.devices.gain_db, self.config.seed, round_index, self.config.fading
        )
        gain_db = dict(zip(devices, gains[part].tolist(), strict=True))
        res = self.allocator.step(gain_db=gain_db, devices=devices)
        if res.allocation is None or not res.success:
            raise TrainingConfigError(
                f"scenario: round {round_index}: solver {self.config.solver!r} returned "
                f"{res.status}: {res.message}"
            )
        alloc = uniform_bits(res.allocation, self.override)
        round_scn = self.allocator.last_round_scenario
        assert round_scn is not None  # step() above built it
        latency, energy = self.protocol.device_costs(round_scn, alloc, self.spec)
        self.bits[part] = self._plan_bits(alloc.bits)
        row = _row(alloc, np.arange(len(part)), res.status, res.objective)
        return RoundAllocation(self.bits.copy(), latency, energy, np.arange(len(part)), row)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly: the last bits of every device."""
        state: dict[str, Any] = {"bits": self.bits.tolist()}
        if self.allocator is not None:
            state["warm_bits"] = self.allocator.last_bits.tolist()
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (None: a checkpoint without one, nothing to restore)."""
        if not state:
            return
        self.bits = np.asarray(state["bits"], dtype=np.int64)
        if self.allocator is not None and "warm_bits" in state:
            self.allocator.last_bits = np.asarray(state["warm_bits"], dtype=np.int64)


def _row(
    alloc: Allocation, index: NDArray[np.int64], status: Any, objective: Any
) -> dict[str, Any]:
    """The ``allocation`` entry of a metrics row, for the devices at ``index`` of ``alloc``."""
    obj = None if objective is None or not np.isfinite(objective) else float(objective)
    return {
        "allocation": {
            "status": status,
            "objective": obj,
            "bits": alloc.bits[index].tolist(),
            "bandwidth_hz": alloc.bandwidth_hz[index].tolist(),
            "power_w": alloc.power_w[index].tolist(),
        }
    }
