"""What each solver puts in :attr:`SolveResult.info <sflam_opt.solvers.base.SolveResult.info>`.

``info`` stays a plain ``dict`` (readers index it by key, ``--json`` writes it as an object); this
module is its documentation, as data that a test checks against every solver's results on the
reference scenarios. Each solver has a tuple of :class:`InfoKey`: a key without ``when`` is in
every result of that solver that has an allocation; a key with ``when`` is there only in the
case it names. A solver adds a key by adding one ``InfoKey(...)`` line to its tuple below.

:data:`INFO_KEYS` covers the continuous band, :data:`BLOCK_INFO_KEYS` the resource-block versions
(``docs/formulation.md`` §10), and :data:`ALLOCATOR_KEYS` what
:meth:`sflam_opt.allocator.Allocator.step` adds to any solver's ``info``. A result that
:func:`~sflam_opt.solvers.base.solve` declares infeasible before running the solver (a target
below the bound's floor) or that failed with an internal error has an empty ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOCATOR_KEYS",
    "BLOCK_INFO_KEYS",
    "INFO_KEYS",
    "InfoKey",
    "info_key_problems",
    "info_keys",
]


@dataclass(frozen=True)
class InfoKey:
    """One documented key of ``SolveResult.info``.

    Attributes
    ----------
    name : str
        The key.
    meaning : str
        What the value is, with its type and unit.
    when : str
        Empty when the key is in every result that has an allocation; otherwise the case in
        which it is present (it may then be absent from results with an allocation).
    """

    name: str
    meaning: str
    when: str = ""


_ROUND_LATENCY = InfoKey("round_latency_s", "float: round time T of the allocation, s")

_FAST = (
    InfoKey("accepted_steps", "dict: accepted Dinkelbach steps by kind (plain, fallback, uniform)"),
    InfoKey("continuous_solves", "int: exact continuous solves (bit vectors scored)"),
    InfoKey("dinkelbach_steps", "int: accepted Dinkelbach bits steps"),
    InfoKey("polish", "str: polish run, 'single+pair', 'single' or 'off'"),
    InfoKey("polish_moves", "int: improving polish moves"),
    _ROUND_LATENCY,
    InfoKey("bandwidth_price_j_per_hz", "float: bandwidth multiplier at the optimum, J/Hz"),
    InfoKey(
        "diagnosis_exact",
        "bool: the feasibility diagnosis was exact (not a bound)",
        when="infeasible",
    ),
)

_KERNEL_MODE = "continuous='kernel' (the default): fast's info from the starting run"

_EXACT = (
    InfoKey("continuous", "str: the continuous block used, 'kernel' or 'cvxpy'"),
    *(InfoKey(k.name, k.meaning, when=k.when or _KERNEL_MODE) for k in _FAST),
    InfoKey("bit_vectors", "int: L^N bit vectors covered by the branch and bound"),
    InfoKey("pruned_share", "float: share of bit vectors never solved, in [0, 1]"),
    InfoKey("bnb_levels", "int: branch-and-bound depth reached"),
    InfoKey(
        "fallbacks",
        "list of str: cone solves that needed another backend or were inaccurate",
        when="continuous='cvxpy'",
    ),
    InfoKey(
        "recentred",
        "int: first-backend failures replaced by a continuation step",
        when="continuous='cvxpy'",
    ),
)

_BCD = (
    InfoKey("bits_method", "str: bits block method used, 'milp', 'sweep' or 'relax'"),
    InfoKey("cvx_order", "list of str: cone solvers in the order tried"),
    InfoKey("stall_escapes", "int: stall escapes taken (exact joint continuous step)"),
    InfoKey("stall_gaps", "list of float: relative J each stall escape closed"),
    InfoKey("stall_gap", "float: the stall gaps combined, 1 - prod(1 - gap)"),
    InfoKey("bits_escapes", "dict: joint bits steps taken, 'priced' and 'neighbour'"),
    InfoKey("bits_escape_gaps", "dict of lists: relative J each joint bits step closed"),
    InfoKey(
        "warm_start_candidates",
        "dict: J of each baseline tried as the start (None: infeasible)",
        when="the start was not given by start_bits",
    ),
    InfoKey("warm_start", "str: where the start came from (a baseline, 'start_bits', ...)"),
    InfoKey("blocks_built", "int: cone problems canonicalized by this call (0: cached)"),
    InfoKey("backends", "dict: cone backend solve counts per block, and the bits backend"),
    InfoKey("fallbacks", "list of str: block solves that needed another backend or status"),
    InfoKey("failures", "list of str: block solves that failed"),
    InfoKey(
        "accepted",
        "dict: improving moves per block (continuous, bits, bits_band, bits_efficiency, "
        "bits_power, bits_priced, escape)",
    ),
    InfoKey("dinkelbach_steps", "int: Dinkelbach steps of the bits block, all iterations"),
    InfoKey("outer_iterations", "int: outer block-descent iterations run"),
    InfoKey("final_step", "str: the block that produced the final J ('start' if none did)"),
    InfoKey("cone_solves", "int: cone programs solved by the joint continuous block"),
    InfoKey(
        "cone_solve_s",
        "dict: 'median' and 'max' wall time of one cone solve, s (without cone_compile_s)",
    ),
    InfoKey("cone_compile_s", "float: CVXPY's one-time canonicalization of the cone problems, s"),
    InfoKey("recentred", "int: first-backend failures replaced by a continuation step"),
)

#: Keys of each solver on a scenario with a continuous band, by registered name.
INFO_KEYS: dict[str, tuple[InfoKey, ...]] = {
    "bandwidth-only": (_ROUND_LATENCY,),
    "bcd": _BCD,
    "bits-only": (),
    "equal": (),
    "exact": _EXACT,
    "fast": _FAST,
    "fixed-bits": (_ROUND_LATENCY,),
    "power-only": (_ROUND_LATENCY,),
}

_MATCHING = (
    InfoKey("passes", "int: improving matching passes"),
    InfoKey("moves", "dict: accepted moves, 'transfer' and 'swap'"),
    InfoKey("rejected_sets", "int: move sets whose exact re-score did not lower J"),
    InfoKey("polish_moves", "int: single moves taken by the exact polish"),
    InfoKey("stopped", "str: why the passes ended"),
    InfoKey("start", "str: starting assignment, 'greedy' or 'round-robin'"),
    InfoKey("start_objectives", "dict: J of each starting assignment"),
)
_ASSIGNMENT = (InfoKey("assignment", "str: the assignment used, 'greedy' or 'round-robin'"),)

#: Keys of each solver's resource-block version (``docs/formulation.md`` §10), by name.
BLOCK_INFO_KEYS: dict[str, tuple[InfoKey, ...]] = {
    "bcd": _MATCHING,
    "equal": (),
    "exact": (
        InfoKey("assignments", "int: block assignments enumerated"),
        InfoKey("time_solves", "int: exact round-time solves"),
        InfoKey("matching_objective", "float: J of the matching incumbent"),
    ),
    "fast": _MATCHING,
    "greedy": _ASSIGNMENT,
    "round-robin": _ASSIGNMENT,
}

#: Keys that :meth:`~sflam_opt.allocator.Allocator.step` adds to any solver's ``info``.
ALLOCATOR_KEYS: tuple[InfoKey, ...] = (
    InfoKey(
        "presolve",
        "dict: the presolve run first for the starting bits: 'solver', 'status', 'solve_time_s'",
        when="Allocator.step with a presolve (solvers other than fast that take start_bits)",
    ),
)


def info_keys(solver: str, *, blocks: bool = False) -> tuple[InfoKey, ...]:
    """The documented ``info`` keys of a built-in solver.

    Parameters
    ----------
    solver : str
        Registered solver name.
    blocks : bool
        The keys of its resource-block version.

    Raises
    ------
    KeyError
        For a solver without documented keys (not a built-in, or no block version).
    """
    return (BLOCK_INFO_KEYS if blocks else INFO_KEYS)[solver]


def info_key_problems(
    solver: str, info: Mapping[str, Any], *, blocks: bool, has_allocation: bool
) -> list[str]:
    """How ``info`` differs from the documented keys; empty when it matches.

    Undocumented keys are always problems; a key documented without ``when`` is a problem when
    missing from a result with an allocation.
    """
    keys = info_keys(solver, blocks=blocks)
    known = {k.name for k in keys} | {k.name for k in ALLOCATOR_KEYS}
    out = [f"{solver}: undocumented info key {k!r}" for k in info if k not in known]
    if has_allocation:
        out += [
            f"{solver}: documented info key {k.name!r} missing"
            for k in keys
            if not k.when and k.name not in info
        ]
    return out
