"""Where the trainer's bound constants come from (``train --calibration``), and the online fit.

``--calibration``:

- ``stored``: the stored calibration of exactly this configuration (:mod:`.calibration_store`);
  an error when there is none.
- ``scenario``: the ``[convergence]`` table of ``--scenario`` (or of the default scenario, whose
  docs/formulation.md §7 constants describe ViT-B/32, with an "uncalibrated" warning).
- ``online``: docs/formulation.md §4.3. The first ``R`` rounds (the fit rounds) run at
  :data:`WARMUP_BITS` while the server probes the quantization error; at the end of round ``R`` a
  :class:`~sflam_opt.ConvergenceEstimator` fits ``A``, ``Phi0``, ``q``, ``eps`` on rounds 1..R
  and the bits are solved with them for the rest of the run. When rounds 1..R cannot support a
  fit (the squared gradient norm has not fallen yet), the warm-up goes on and the fit is tried
  again at the end of every later round ``k`` on rounds 1..k.
- ``auto`` (default): ``stored`` when a calibration matches, else ``online`` when the run is long
  enough to fit and then predict, else ``scenario``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sflam_opt.bounds import effective_step
from sflam_opt.errors import SolverArgumentError, TrainingConfigError, TrainingRuntimeError
from sflam_opt.estimator import (
    MIN_FIT_ROUNDS,
    WARMUP_BITS,
    ConvergenceConstants,
    ConvergenceEstimator,
    UnsupportedFitError,
)
from sflam_opt.scenario import Scenario
from sflam_opt.training.calibration_store import Calibration, calibrate_command, find_calibration
from sflam_opt.training.config import CALIBRATIONS, TrainConfig
from sflam_opt.training.quantizer import MAX_BITS

__all__ = [
    "CALIBRATIONS",
    "WARMUP_BITS",
    "CalibrationChoice",
    "OnlineCalibration",
    "choose_calibration",
    "fit_rounds",
]

logger = logging.getLogger(__name__)

#: Share of the rounds used to fit, by default.
FIT_SHARE = 0.2


def fit_rounds(config: TrainConfig) -> int:
    """R: ``config.fit_rounds``, else 20 % of the rounds and at least :data:`MIN_FIT_ROUNDS`."""
    if config.fit_rounds is not None:
        return int(config.fit_rounds)
    return max(MIN_FIT_ROUNDS, round(FIT_SHARE * config.rounds))


@dataclass(frozen=True)
class CalibrationChoice:
    """The resolved ``--calibration``: ``source`` (stored, scenario or online) and the entry."""

    source: str
    stored: Calibration | None = None


def choose_calibration(config: TrainConfig) -> CalibrationChoice:
    """Resolve ``config.calibration`` (module docstring).

    Raises
    ------
    TrainingConfigError
        ``stored`` without a matching calibration; ``online`` on a run too short to fit and then
        predict (naming ``--rounds`` and the minimum).
    """
    mode = config.calibration
    stored = find_calibration(config) if mode in ("auto", "stored") else None
    if stored is not None:
        return CalibrationChoice("stored", stored)
    if mode == "stored":
        raise TrainingConfigError(
            "calibration: --calibration stored but no stored calibration matches this "
            f"configuration; calibrate with `{calibrate_command(config)}` or use "
            "--calibration online"
        )
    r = fit_rounds(config)
    if mode == "online" and config.rounds <= r:
        raise TrainingConfigError(
            f"rounds: --calibration online fits on the first {r} rounds and then predicts; "
            f"give --rounds >= {r + 1} (or a smaller --fit-rounds, at least {MIN_FIT_ROUNDS})"
        )
    if mode == "online" or (mode == "auto" and config.rounds > r):
        return CalibrationChoice("online")
    return CalibrationChoice("scenario")


class OnlineCalibration:
    """The online fit of one training run (docs/formulation.md §4.3).

    Parameters
    ----------
    config : TrainConfig
    scenario : Scenario
        The trainer's scenario; its smallest bit width is the probe width (at most 16).
    """

    def __init__(self, config: TrainConfig, scenario: Scenario) -> None:
        from sflam_opt.training.protocols import PROTOCOLS

        # FedAvg sends no activations: nothing to probe, and no quantization term (q = 0).
        self.splits = PROTOCOLS[config.protocol].server_role.splits
        self.rounds = fit_rounds(config)
        self.target_rounds = int(config.rounds)
        self.probe_bits = int(min(min(scenario.bits.levels), MAX_BITS))
        self.estimator = ConvergenceEstimator(
            step=effective_step(config.lr, config.momentum), local_iters=config.local_iters
        )
        self.constants: ConvergenceConstants | None = None
        #: Why the last fit attempt found no support (None: fitted, or not tried yet).
        self.unsupported: str | None = None

    def probing(self, round_index: int) -> int:
        """Probe width of round ``round_index`` (0: no probe, the constants are fitted)."""
        return self.probe_bits if self.splits and self.constants is None else 0

    def due(self, round_index: int) -> bool:
        """Whether to try the fit at the end of round ``round_index``."""
        return self.constants is None and round_index >= self.rounds

    def record(
        self, round_index: int, loss: float, grad_sq_norm: float, probe: Sequence[float]
    ) -> dict[str, Any]:
        """Add a fit round's measurements; the ``calibration`` entry of its metrics row."""
        try:
            self.estimator.add_round(
                loss, grad_sq_norm, list(probe), [self.probe_bits] * len(probe)
            )
        except SolverArgumentError as exc:
            raise TrainingRuntimeError(f"calibration: {exc}") from None
        return {"phase": "fit", "probe_bits": self.probe_bits, "probe_sq_diff": list(probe)}

    def fit(self) -> ConvergenceConstants | None:
        """Fit on every recorded round (all of them fit rounds) and keep the result.

        ``None`` when they cannot support a fit yet (:meth:`ConvergenceEstimator.support`): the
        warm-up goes on and :attr:`unsupported` says why.
        """
        try:
            self.constants = self.estimator.fit(
                target_rounds=self.target_rounds, q=None if self.splits else 0.0
            )
        except UnsupportedFitError as exc:
            self.unsupported = str(exc)
            logger.info("round %d: no fit yet: %s", self.estimator.rounds, exc)
            return None
        except SolverArgumentError as exc:
            raise TrainingRuntimeError(f"calibration: {exc}") from None
        self.unsupported = None
        logger.info("online calibration after %d rounds: %s", self.estimator.rounds, self.constants)
        return self.constants

    def replay(self, metrics: Sequence[Mapping[str, Any]]) -> None:
        """Rebuild the estimator from the rows of a resumed run (refitting if it was done)."""
        for row in metrics:
            if "calibration" not in row:  # the first row after the fit
                break
            r = int(row["round"])
            self.record(
                r, row["train_loss"], row["grad_sq_norm"], row["calibration"]["probe_sq_diff"]
            )
            if self.due(r) and self.fit() is not None:
                break


def summary_entry(
    choice: CalibrationChoice, scenario: Scenario, online: OnlineCalibration | None
) -> dict[str, Any]:
    """``summary.json``'s ``calibration`` object: source, fit rounds and the constants used."""
    c = scenario.convergence
    entry: dict[str, Any] = {
        "source": choice.source,
        "fit_rounds": 0 if online is None else online.estimator.rounds,
        "a": c.a,
        "phi0": c.phi0,
        "q": c.q,
        "epsilon": c.epsilon,
    }
    if choice.stored is not None:
        entry["name"] = choice.stored.label
    if online is not None and online.constants is not None:
        entry["details"] = dict(online.constants.details)
    elif online is not None:  # every round was a fit round: the scenario's constants stand
        entry["unsupported"] = online.unsupported
    return entry
