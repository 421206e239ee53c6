"""Per-round allocation for a host federated-learning system: :class:`Allocator`.

A host system (its own loop, Flower, FedML) changes two things every round: which devices take
part, and each device's channel gain (on a resource-block scenario, each block's gain too).
:meth:`Allocator.step` solves that round's problem, :meth:`Scenario.for_round
<sflam_opt.scenario.Scenario.for_round>` (the participants, with the round's gains, every other
field kept), exactly as :func:`sflam_opt.solve` would (same devices, same gains, same blocks, same
normalization of J, see ``docs/formulation.md``), but reuses state between rounds:

- solvers with a ``start_bits`` option (``fast``, ``bcd``) start from the last bits of the devices
  still present (newcomers start at the median of those). For solvers other than ``fast`` the
  step first runs ``fast`` from those bits on the round (``presolve``, milliseconds) and starts
  the solver from its bits: under fading, last round's bits can be far from this round's
  optimum, and ``bcd`` started there took many more iterations, often through badly
  conditioned cone blocks where Clarabel fails and ECOS and SCS take over; started from
  ``fast``'s bits it typically confirms them in two iterations (``python -m benchmarks alloc``
  gives the step times);
- solvers with a ``block_size`` option (``bcd``) compile their cone programs for a few fixed
  sizes only, a geometric ladder from the full scenario down (N, 0.8 N, 0.64 N, ..., see
  :func:`padded_size`), and fill the slots a round does not need with exact copies of the
  participants (set by parameters). A changing number of participants thus never triggers a new
  canonicalization: every round reuses the program of its rung, compiled the first time that
  rung is used, and pays at most 25 % extra slots (padding every round to the full N would make
  a half-participation round solve a program twice its size).

Example::

    alloc = Allocator(Scenario.default(devices=100), solver="fast")
    res = alloc.step(gain_db={3: -95.0, 7: -101.2}, devices=[3, 7, 12])
    res.allocation.ids          # (3, 7, 12)
    alloc.history[-1].round_latency_s
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.errors import ScenarioError, SolverArgumentError
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import (
    SolveResult,
    check_options,
    solve,
    solver_for,
    solver_options,
)

__all__ = ["Allocator", "RoundRecord", "padded_size"]

logger = logging.getLogger(__name__)

#: Solver options the allocator fills in itself each round.
MANAGED_OPTIONS = ("start_bits", "block_size")
#: Ratio of consecutive rungs of the ladder of compiled sizes (:func:`padded_size`).
LADDER_RATIO = 0.8
#: Smallest rung: below it compiling is cheap and padding buys nothing.
LADDER_MIN = 16


def padded_size(k: int, n: int) -> int:
    """Size of the compiled cone programs that serve a round of ``k`` of ``n`` devices.

    The smallest rung of ``ceil(n * 0.8**j)``, j = 0, 1, ..., (stopping at 16) that is at least
    ``k``: one of about log(n / 16) / log(1.25) sizes, whatever ``k`` is, and at most 25 % above
    ``k`` (the smallest rung is between 16 and 20).

    Parameters
    ----------
    k : int
        Devices taking part in the round, 1 <= k <= n.
    n : int
        Devices of the full scenario.

    Returns
    -------
    int
        The block size, ``k <= size <= n``.
    """
    size = n
    while True:
        nxt = math.ceil(size * LADDER_RATIO)
        if nxt < k or nxt < LADDER_MIN or nxt == size:
            return size
        size = nxt


@dataclass(frozen=True, eq=False)
class RoundRecord:
    """One :meth:`Allocator.step`, as kept in :attr:`Allocator.history`.

    Attributes
    ----------
    round : int
        0-based step number.
    devices : tuple
        Ids of the devices that took part, in the order given.
    allocation : Allocation or None
        The round's decision (``allocation.ids == devices``), None if the round had none.
    status, message : str
        The solver's status and one-line message (see :data:`sflam_opt.solvers.STATUSES`).
    objective : float
        J of the round, normalized to that round's equal split (1 = equal); inf without an
        allocation. Not comparable across rounds: use the absolute figures below.
    round_latency_s : float
        Absolute latency of one training round under the allocation, s (nan without one).
    round_energy_j : float
        Absolute energy of all participants in one round, J (nan without one).
    solve_time_s : float
        Wall time of the whole step (building the round's scenario included), s.
    """

    round: int
    devices: tuple[Any, ...]
    allocation: Allocation | None
    status: str
    message: str
    objective: float
    round_latency_s: float
    round_energy_j: float
    solve_time_s: float


class Allocator:
    """Re-solve the allocation every round for the devices that take part, under fading.

    Parameters
    ----------
    scenario : Scenario
        All devices that may ever take part, with their nominal (e.g. path-loss) gains.
    solver : str
        Any registered solver (see :func:`sflam_opt.available_solvers`), default ``"fast"``.
    presolve : str or None, keyword-only
        Solver run first on each round to give the main solver its starting bits (default
        ``"fast"``; ignored when ``solver`` is ``"fast"`` or takes no ``start_bits``). None starts
        the main solver from the participants' last bits directly.
    **options
        Solver options, as for :func:`sflam_opt.solve` (checked by the same function, against
        the resource-block version of the solver on a block scenario). ``start_bits`` and
        ``block_size`` are set by the allocator and cannot be given.

    Raises
    ------
    SolverArgumentError
        Unknown solver, unknown option, an option the allocator manages, or a solver without a
        resource-block version on a block scenario.
    """

    def __init__(
        self,
        scenario: Scenario,
        solver: str = "fast",
        *,
        presolve: str | None = "fast",
        **options: Any,
    ) -> None:
        if not isinstance(scenario, Scenario):
            raise SolverArgumentError(
                f"scenario: expected a Scenario, got {type(scenario).__name__}"
            )
        func = solver_for(scenario, solver)
        check_options(solver, func, options, dict.fromkeys(MANAGED_OPTIONS, "the Allocator"))
        valid = solver_options(func) or ()
        self.scenario = scenario
        self.solver = solver
        self.options = dict(options)
        self._warm = "start_bits" in valid
        if presolve is not None and presolve != "fast":
            raise SolverArgumentError(
                f"presolve={presolve!r}: only 'fast' (or None to start from the last bits)"
            )
        self.presolve = presolve if self._warm and solver != "fast" else None
        self._padded = "block_size" in valid
        self._all = np.arange(scenario.n_devices)
        #: Last bits of each device (0 = never allocated), shape (N,).
        self._bits = np.zeros(scenario.n_devices, dtype=np.int64)
        #: One :class:`RoundRecord` per :meth:`step`, oldest first.
        self.history: list[RoundRecord] = []
        #: The scenario the last :meth:`step` solved (None before the first): what
        #: :meth:`round_scenario` would rebuild for its arguments, kept so a host that needs it
        #: (the trainer's device costs) does not build the round twice.
        self.last_round_scenario: Scenario | None = None

    @property
    def last_bits(self) -> NDArray[np.int64]:
        """Each device's bits in the last round it took part in (0 if never), shape (N,).

        The warm-start state; assign it to restore an allocator saved with a host checkpoint.
        """
        return self._bits.copy()

    @last_bits.setter
    def last_bits(self, bits: Any) -> None:
        arr = np.asarray(bits)
        n = self.scenario.n_devices
        ok = arr.shape == (n,) and np.all(np.isin(arr, [0, *self.scenario.bits.levels]))
        if not ok:
            raise SolverArgumentError(
                f"last_bits: need {n} values, each 0 or an allowed bit width of the scenario"
            )
        self._bits = arr.astype(np.int64)

    def recalibrate(self, convergence: Mapping[str, float] | Any) -> None:
        """Solve every later :meth:`step` with new convergence constants.

        Parameters
        ----------
        convergence : mapping or ConvergenceConstants
            Any of ``a``, ``phi0``, ``q``, ``epsilon`` (docs/formulation.md §4), e.g.
            :meth:`sflam_opt.ConvergenceConstants.as_convergence` of an online fit; the others
            keep their values. Invalid values raise ``ScenarioError`` naming the key.
        """
        table = (
            convergence.as_convergence() if hasattr(convergence, "as_convergence") else convergence
        )
        self.scenario = self.scenario.replace(convergence=dict(table))

    # ------------------------------------------------------------------ the round's problem
    def round_scenario(
        self,
        gain_db: Mapping[Any, float] | None = None,
        devices: Iterable[Any] | None = None,
        *,
        block_gain_db: Mapping[Any, ArrayLike] | None = None,
    ) -> Scenario:
        """The scenario that :meth:`step` solves for these arguments.

        ``scenario.for_round(devices, gain_db, block_gain_db)``, which equals
        ``scenario.with_gains(gain_db, block_gain_db).select(devices)``.

        Raises
        ------
        SolverArgumentError
            As :meth:`step`.
        """
        return self._round(gain_db, devices, block_gain_db)[0]

    def _round(
        self,
        gain_db: Mapping[Any, float] | None,
        devices: Iterable[Any] | None,
        block_gain_db: Mapping[Any, ArrayLike] | None,
    ) -> tuple[Scenario, NDArray[np.int64]]:
        try:
            scn, idx = self.scenario.round_positions(devices, gain_db, block_gain_db)
        except ScenarioError as exc:
            raise SolverArgumentError(str(exc)) from None
        return scn, self._all if idx is None else idx

    def _start_bits(self, idx: NDArray[np.int64], levels: NDArray[np.int64]) -> Any:
        """Last bits of the participants; newcomers at the allowed level nearest their median."""
        warm = self._bits[idx]
        known = warm > 0
        if not known.any():
            return None
        if not known.all():
            med = float(np.median(warm[known]))
            warm = np.where(known, warm, levels[int(np.argmin(np.abs(levels - med)))])
        return warm

    # ------------------------------------------------------------------ one round
    def step(
        self,
        gain_db: Mapping[Any, float] | None = None,
        devices: Iterable[Any] | None = None,
        *,
        block_gain_db: Mapping[Any, ArrayLike] | None = None,
    ) -> SolveResult:
        """Solve one round for the participating devices under this round's gains.

        Parameters
        ----------
        gain_db : mapping of device id to float, optional
            This round's channel gains in dB, each in [-200, 0] (``docs/formulation.md`` §11);
            devices not named keep the scenario's gain. Ids of devices that do not take part
            this round are checked and ignored.
        devices : iterable of ids, optional
            The devices taking part this round, in the order the allocation should list them;
            all devices when omitted.
        block_gain_db : mapping of device id to array_like, shape (M,), optional
            Resource-block scenarios only (``docs/formulation.md`` §10): this round's gain of
            each of the M blocks in dB, each in [-250, 20]; devices not named keep theirs.

        Returns
        -------
        SolveResult
            What :func:`sflam_opt.solve` returns on :meth:`round_scenario`: ``allocation.ids``
            lists exactly ``devices`` in that order, the band is shared among them only, and J
            is normalized to that round's equal split. On a resource-block scenario the
            allocation gives each participant its own blocks. Infeasible rounds carry the
            solver's usual status and message.

        Raises
        ------
        SolverArgumentError
            Naming the argument and entry: an unknown or repeated id, a gain that is not a
            finite number in its valid range, block gains of the wrong length, or block gains
            for a scenario without resource blocks.
        """
        t0 = time.perf_counter()
        scn, idx = self._round(gain_db, devices, block_gain_db)
        self.last_round_scenario = scn
        opts = dict(self.options)
        pre: SolveResult | None = None
        if self._warm:
            start = self._start_bits(idx, scn.bits.array)
            if self.presolve is not None:
                pre = solve(scn, self.presolve, **({} if start is None else {"start_bits": start}))
                if pre.success and pre.allocation is not None:
                    start = pre.allocation.bits
            if start is not None:
                opts["start_bits"] = start
        if self._padded:
            opts["block_size"] = padded_size(len(idx), self.scenario.n_devices)
        res = solve(scn, self.solver, **opts)
        if pre is not None:
            res.info["presolve"] = {
                "solver": self.presolve,
                "status": pre.status,
                "solve_time_s": pre.solve_time_s,
            }
        if res.allocation is not None:
            self._bits[idx] = res.allocation.bits
        ev = res.evaluation
        rec = RoundRecord(
            round=len(self.history),
            devices=scn.devices.ids,
            allocation=res.allocation,
            status=res.status,
            message=res.message,
            objective=float(res.objective),
            round_latency_s=float(ev.round_latency_s) if ev is not None else float("nan"),
            round_energy_j=float(ev.round_energy_j) if ev is not None else float("nan"),
            solve_time_s=time.perf_counter() - t0,
        )
        self.history.append(rec)
        logger.debug(
            "round %d: %d devices, %s, J=%s in %.3fs",
            rec.round,
            len(rec.devices),
            rec.status,
            rec.objective,
            rec.solve_time_s,
        )
        return res
