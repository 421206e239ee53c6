"""Solvers for resource-block scenarios: swap matching, exact enumeration and the baselines.

The model is ``docs/formulation.md`` §10. For a fixed assignment of blocks to devices the round
time, the water-filling power split and the bits are solved by
:class:`~sflam_opt.solvers.blocktime.BlockProblem`; this module chooses the assignment.

Matching (``bcd``, ``fast``). From the better of the best-gain greedy and the round-robin
assignment, each pass prices every move at the current round time and bits: moving block ``m``
from device ``i`` to device ``j`` (``i`` keeps a block), and swapping blocks ``m`` and ``m'``
between their devices. By the envelope theorem a move changes ``V*`` to first order by
``sum omega_n (e_n' - e_n)`` over the two devices, with ``e_n`` the upload energy of the device at
its fixed slot (water-filling over the new set) and ``omega_n`` the weight the round-time solve
reports. The improving moves, best first and at most one per device (a source may give several
blocks), are applied together; the pass is re-scored exactly (round time, water-filling and the
bits block) and kept only if ``J`` falls, else the best half of the moves is tried, and so on down
to the single best move. Passes repeat until none lowers ``J``. ``fast`` uses transfers only.

Exact (``exact``). Adding a block never hurts a device (water-filling may leave it unpowered), so
an optimal assignment uses every block. All ``N^M`` such assignments in which every device holds
a block are enumerated, and for each the bits by the branch and bound of the ``exact`` solver of
continuous scenarios: ``J(b) >= K(hi) V*(lo)`` on a box of bit vectors, since ``V*`` does not
decrease and ``K`` does not increase in any ``b_n``.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sflam_opt.allocation import Allocation
from sflam_opt.blocks import (
    block_allocation,
    block_gain,
    greedy_assignment,
    padded_levels,
    round_robin_assignment,
    waterfill,
)
from sflam_opt.costs import payload_bits, reference
from sflam_opt.errors import SolverArgumentError
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.base import (
    SolveResult,
    SolverFunc,
    register_block_solver,
    register_solver,
)
from sflam_opt.solvers.blocktime import CAP_SLACK, BlockProblem, TimeSolution
from sflam_opt.validation import check_int

__all__ = [
    "BLOCK_SOLVERS",
    "DEFAULT_MAX_ASSIGNMENTS",
    "DEFAULT_POLISH",
    "BlockState",
    "run_matching",
    "solve_greedy",
    "solve_round_robin",
]

logger = logging.getLogger(__name__)

#: Default cap on the assignments ``exact`` enumerates (``N^M``).
DEFAULT_MAX_ASSIGNMENTS = 20_000
#: ``bcd``'s default cap on single moves scored exactly once the priced passes stop.
DEFAULT_POLISH = 200
#: Largest number of float64 entries one batch of candidate water-fillings may hold.
_CHUNK_ENTRIES = 1_500_000


@dataclass
class BlockState:
    """An assignment with its optimal round time, bits and ``J``.

    Attributes
    ----------
    owner : ndarray of int, shape (M,)
        Device of each block.
    bits : ndarray of int, shape (N,)
    padded, index : ndarray, shape (N, K)
        Per-device block levels (W, ascending, ``inf`` padding) and their block indices.
    sol : TimeSolution
        One row: round time, slots and weights.
    objective : float
        ``J`` (``inf`` if infeasible).
    """

    owner: IntArray
    bits: IntArray
    padded: FloatArray
    index: IntArray
    sol: TimeSolution
    objective: float


def _state(prob: BlockProblem, owner: IntArray, bits: IntArray) -> BlockState:
    """Score an assignment: exact round time and the bits block, started from ``bits``."""
    padded, index = padded_levels(prob.levels, owner, prob.n)
    b, sol, j, _ = prob.best_bits(padded, bits)
    return BlockState(owner.copy(), b, padded, index, sol, j)


def _allocation(prob: BlockProblem, st: BlockState) -> Allocation:
    """The state's allocation: water-filling powers on each device's blocks at its slot."""
    up = st.sol.upload_s[0]
    rate = payload_bits(prob.scenario, st.bits) / up
    fill = waterfill(st.padded, rate, prob.block_hz)
    p = fill.block_power(st.padded)
    power = np.zeros(prob.m)
    ok = st.index >= 0
    power[st.index[ok]] = p[ok]
    return block_allocation(prob.scenario, st.owner, st.bits, power)


def _chunks(total: int, per_row: int) -> list[slice]:
    step = max(1, _CHUNK_ENTRIES // max(per_row, 1))
    return [slice(s, min(s + step, total)) for s in range(0, total, step)]


def _current(prob: BlockProblem, st: BlockState) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Slots (s), rates (bit/s) and upload energies (J) of the devices, each shape (N,)."""
    up = st.sol.upload_s[0]
    rate = payload_bits(prob.scenario, st.bits) / up
    e = up * waterfill(st.padded, rate, prob.block_hz).power_w
    return up, rate, e


def _feasible(prob: BlockProblem, power: FloatArray, e: FloatArray, dev: IntArray) -> np.ndarray:
    ok = power <= prob.pmax[dev] * (1 + CAP_SLACK)
    if prob.upload_cap_j is not None:
        ok &= e <= prob.upload_cap_j[dev] * (1 + CAP_SLACK)
    return ok


def _slots(prob: BlockProblem, st: BlockState) -> IntArray:
    """Column of each block in its owner's row of ``st.padded``, shape (M,)."""
    slot = np.zeros(prob.m, dtype=np.int64)
    rows, cols = np.nonzero(st.index >= 0)
    slot[st.index[rows, cols]] = cols
    return slot


def _transfers(prob: BlockProblem, st: BlockState) -> tuple[FloatArray, IntArray, IntArray]:
    """Best transfer of every block: (priced change of V, block, receiving device)."""
    with np.errstate(invalid="ignore"):
        return _transfers_impl(prob, st)


def _transfers_impl(prob: BlockProblem, st: BlockState) -> tuple[FloatArray, IntArray, IntArray]:
    up, rate, e_cur = _current(prob, st)
    w = st.sol.weight[0]
    owner = st.owner
    counts = np.bincount(owner, minlength=prob.n)
    slot = _slots(prob, st)
    blocks = np.arange(prob.m)
    # Giving the block away.
    rem = st.padded[owner].copy()
    rem[blocks, slot] = np.inf
    fill = waterfill(rem, rate[owner], prob.block_hz)
    e_rem = up[owner] * fill.power_w
    ok_rem = (counts[owner] >= 2) & _feasible(prob, fill.power_w, e_rem, owner)
    d_rem = np.where(ok_rem, w[owner] * (e_rem - e_cur[owner]), np.inf)
    # Receiving it: every device j, every block m.
    best_d = np.full(prob.m, np.inf)
    best_j = np.full(prob.m, -1, dtype=np.int64)
    kk = st.padded.shape[1] + 1
    dev = np.arange(prob.n)
    for sl in _chunks(prob.m, prob.n * kk):
        lv = prob.levels[:, sl]  # (N, C)
        add = np.concatenate(
            [np.broadcast_to(st.padded[:, None, :], (prob.n, lv.shape[1], kk - 1)), lv[..., None]],
            axis=-1,
        )
        fill = waterfill(add, rate[:, None], prob.block_hz)
        e_add = up[:, None] * fill.power_w
        ok = _feasible(prob, fill.power_w, e_add, dev[:, None])
        ok &= dev[:, None] != owner[None, sl]
        d = np.where(ok, w[:, None] * (e_add - e_cur[:, None]), np.inf)
        j = np.argmin(d, axis=0)
        best_d[sl] = d[j, np.arange(lv.shape[1])] + d_rem[sl]
        best_j[sl] = j
    return best_d, blocks, best_j


def _swaps(prob: BlockProblem, st: BlockState) -> tuple[FloatArray, IntArray, IntArray]:
    """Best swap partner of every block: (priced change of V, block, partner block)."""
    with np.errstate(invalid="ignore"):
        return _swaps_impl(prob, st)


def _swaps_impl(prob: BlockProblem, st: BlockState) -> tuple[FloatArray, IntArray, IntArray]:
    up, rate, e_cur = _current(prob, st)
    w = st.sol.weight[0]
    owner = st.owner
    slot = _slots(prob, st)
    kk = st.padded.shape[1]
    # swapped[x, y]: owner(x)'s priced energy change when block x is replaced by block y.
    swapped = np.empty((prob.m, prob.m))
    for sl in _chunks(prob.m, prob.m * kk):
        x = np.arange(prob.m)[sl]
        base = np.repeat(st.padded[owner[x]][:, None, :], prob.m, axis=1)  # (C, M, K)
        base[np.arange(x.size), :, slot[x]] = prob.levels[owner[x]]
        fill = waterfill(base, rate[owner[x]][:, None], prob.block_hz)
        e_new = up[owner[x]][:, None] * fill.power_w
        ok = _feasible(prob, fill.power_w, e_new, owner[x][:, None])
        swapped[sl] = np.where(
            ok, w[owner[x]][:, None] * (e_new - e_cur[owner[x]][:, None]), np.inf
        )
    delta = swapped + swapped.T
    delta[owner[:, None] == owner[None, :]] = np.inf
    partner = np.argmin(delta, axis=1)
    return delta[np.arange(prob.m), partner], np.arange(prob.m), partner


def _select(
    prob: BlockProblem, st: BlockState, moves: list[tuple[str, int, int]]
) -> list[tuple[str, int, int]]:
    """Moves (best first) that touch each device at most once; a source may give several."""
    state = np.zeros(prob.n, dtype=np.int64)  # 0 free, 1 gave blocks, 2 locked
    left = np.bincount(st.owner, minlength=prob.n)
    moved = np.zeros(prob.m, dtype=bool)
    out = []
    for kind, m, other in moves:
        i = int(st.owner[m])
        if moved[m]:
            continue
        if kind == "transfer":
            j = other
            if state[j] != 0 or state[i] == 2 or left[i] < 2:
                continue
            state[j], state[i] = 2, 1
            left[i] -= 1
            moved[m] = True
        else:
            j = int(st.owner[other])
            if state[i] != 0 or state[j] != 0 or moved[other]:
                continue
            state[i] = state[j] = 2
            moved[m] = moved[other] = True
        out.append((kind, m, other))
    return out


def _apply(owner: IntArray, moves: list[tuple[str, int, int]]) -> IntArray:
    new = owner.copy()
    for kind, m, other in moves:
        if kind == "transfer":
            new[m] = other
        else:
            new[m], new[other] = owner[other], owner[m]
    return new


def _exact_moves(prob: BlockProblem, st: BlockState, swaps: bool, budget: int) -> BlockState | None:
    """The best single transfer or swap scored exactly, if it lowers J (small instances).

    Every move is scored at the current bits in one batched round-time solve, then, best first,
    with the bits block too (a move that only pays off at other bits is found as well).
    """
    counts = np.bincount(st.owner, minlength=prob.n)
    m_idx, other = np.meshgrid(np.arange(prob.m), np.arange(prob.n), indexing="ij")
    keep = (other != st.owner[:, None]) & (counts[st.owner] >= 2)[:, None]
    moves: list[tuple[str, int, int]] = [
        ("transfer", int(m), int(j)) for m, j in zip(m_idx[keep], other[keep], strict=True)
    ]
    if swaps:
        a, b = np.triu_indices(prob.m, k=1)
        diff = st.owner[a] != st.owner[b]
        moves += [("swap", int(x), int(y)) for x, y in zip(a[diff], b[diff], strict=True)]
    if not moves or len(moves) > budget:
        return None
    owners = np.array([_apply(st.owner, [mv]) for mv in moves])
    pads = [padded_levels(prob.levels, o, prob.n)[0] for o in owners]
    k = max(p.shape[1] for p in pads)
    padded = np.array(
        [np.pad(p, ((0, 0), (0, k - p.shape[1])), constant_values=np.inf) for p in pads]
    )
    bits = np.repeat(st.bits[None, :], len(moves), axis=0)
    j = prob.objective(prob.solve(padded, bits), bits)
    best = st
    for r in np.argsort(j, kind="stable"):
        cand = _state(prob, owners[r], st.bits)
        if cand.objective < best.objective * (1 - 1e-12):
            best = cand
    return None if best is st else best


def run_matching(
    prob: BlockProblem,
    start: BlockState,
    *,
    swaps: bool = True,
    max_iter: int = 500,
    polish: int = 0,
) -> tuple[BlockState, list[float], dict[str, Any]]:
    """Swap matching from ``start``; every accepted pass lowers ``J``.

    When no priced pass lowers ``J`` and there are at most ``polish`` single moves, each one is
    scored exactly (round time, power and bits re-solved) and the best improving one is taken.

    Returns
    -------
    state : BlockState
    history : list of float
        ``J`` after each accepted pass (``history[0]`` is the start).
    info : dict
        ``passes``, ``moves`` (accepted transfers and swaps), ``rejected_sets`` (move sets whose
        exact re-score did not lower ``J``), ``stopped`` (why the passes ended).
    """
    st = start
    history = [st.objective]
    info: dict[str, Any] = {
        "passes": 0,
        "moves": {"transfer": 0, "swap": 0},
        "rejected_sets": 0,
        "polish_moves": 0,
    }
    info["stopped"] = "iteration cap"
    for _ in range(max_iter):
        if not np.isfinite(st.objective):
            info["stopped"] = "infeasible start"
            break
        cands: list[tuple[float, str, int, int]] = []
        d, m, j = _transfers(prob, st)
        cands += [(float(a), "transfer", int(b), int(c)) for a, b, c in _top(d, m, j, prob.n)]
        if swaps:
            d, m, p = _swaps(prob, st)
            cands += [(float(a), "swap", int(b), int(c)) for a, b, c in _top(d, m, p, prob.n)]
        scale = float(st.sol.value[0])
        cands = sorted(c for c in cands if c[0] < -1e-12 * scale)
        moves = _select(prob, st, [(k, m_, o) for _, k, m_, o in cands])
        better = None
        while moves:
            cand = _state(prob, _apply(st.owner, moves), st.bits)
            if cand.objective < st.objective * (1 - 1e-12):
                better = cand
                break
            info["rejected_sets"] += 1
            moves = moves[: len(moves) // 2]
        if better is None and polish:
            better = _exact_moves(prob, st, swaps, polish)
            if better is not None:
                info["polish_moves"] += 1
                history.append(better.objective)
                st = better
                continue
        if better is None:
            info["stopped"] = "no improving move"
            break
        for kind, _, _ in moves:
            info["moves"][kind] += 1
        st = better
        info["passes"] += 1
        history.append(st.objective)
    return st, history, info


def _top(d: FloatArray, a: IntArray, b: IntArray, n: int) -> zip[tuple[Any, Any, Any]]:
    """The (at most 4N) most negative entries, as (delta, a, b) triples."""
    keep = np.flatnonzero(np.isfinite(d) & (d < 0))
    if keep.size > 4 * n:
        keep = keep[np.argpartition(d[keep], 4 * n)[: 4 * n]]
    return zip(d[keep], a[keep], b[keep], strict=True)


# ------------------------------------------------------------------------------ solvers


def _start_states(prob: BlockProblem, which: tuple[str, ...]) -> dict[str, BlockState]:
    bits = np.full(prob.n, prob.scenario.bits.max, dtype=np.int64)
    out = {}
    for name in which:
        if name == "greedy":
            owner = greedy_assignment(block_gain(prob.scenario))
        else:
            owner = round_robin_assignment(prob.n, prob.m)
        out[name] = _state(prob, owner, bits)
    return out


def _result(
    prob: BlockProblem,
    st: BlockState,
    status: str,
    message: str,
    history: list[float],
    info: dict[str, Any],
) -> SolveResult:
    if not np.isfinite(st.objective):
        return SolveResult(None, "infeasible", _infeasible_message(prob), "numpy", info=info)
    return SolveResult(
        _allocation(prob, st), status, message, backend="numpy", iterations=history, info=info
    )


def _infeasible_message(prob: BlockProblem) -> str:
    """Why no allocation was found; names a device that fails even with every block."""
    scn = prob.scenario
    ids = scn.devices.ids
    pay = np.full((1, prob.n), prob.payload_levels[0])
    slot, ok, _ = prob.slot_floor(np.sort(prob.levels, axis=1)[None], pay)
    cap = scn.constraints.device_energy_j
    if cap is not None and not np.all(ok):
        a_min = np.min(prob.levels, axis=1)
        need = prob.compute_j + prob.payload_levels[0] * LN2 * a_min / prob.block_hz
        worst = int(np.argmax(need))
        return (
            f"device_energy_j = {cap:g} J: device {ids[worst]!r} needs more than "
            f"{need[worst]:.6g} J even with every block and {scn.bits.min} bits; raise "
            "device_energy_j"
        )
    fastest = prob.fixed_s + slot[0]
    tmax = scn.constraints.round_deadline_s
    if tmax is not None and np.any(fastest > tmax):
        worst = int(np.argmax(fastest))
        return (
            f"round_deadline_s = {tmax:g} s: device {ids[worst]!r} needs "
            f"{fastest[worst]:.6g} s even with every block and {scn.bits.min} bits; raise "
            "round_deadline_s"
        )
    return (
        "no assignment found whose blocks let every device meet [constraints] "
        "(round_deadline_s, device_energy_j) at any bits tried; relax them"
    )


def _require_blocks(scenario: Scenario, name: str) -> None:
    if scenario.resource_blocks is None:
        raise SolverArgumentError(
            f"solver={name!r}: needs a scenario with resource blocks "
            "(`sflam-opt scenario new --blocks M`)"
        )


def _matching_solver(name: str, swaps: bool, polish_default: int) -> SolverFunc:
    def solve_matching(
        scenario: Scenario, *, max_iter: int = 500, polish: int = polish_default
    ) -> SolveResult:
        """Swap matching alternating with the round-time/water-filling and bits blocks.

        Parameters
        ----------
        max_iter : int
            Cap on matching passes.
        polish : int
            When no priced pass improves and there are at most this many single moves, score
            each exactly and take the best improving one (0: never).
        """
        _require_blocks(scenario, name)
        max_iter = check_int(max_iter, "max_iter", minimum=1, error=SolverArgumentError)
        polish = check_int(polish, "polish", minimum=0, error=SolverArgumentError)
        t0 = time.perf_counter()
        prob = BlockProblem(scenario, reference(scenario))
        starts = _start_states(prob, ("greedy", "round-robin"))
        first = min(starts, key=lambda k: starts[k].objective)
        st, history, info = run_matching(
            prob, starts[first], swaps=swaps, max_iter=max_iter, polish=polish
        )
        info["start"] = first
        info["start_objectives"] = {k: v.objective for k, v in starts.items()}
        status = "max_iter" if info["stopped"] == "iteration cap" else "converged"
        msg = (
            f"block matching from the {first} assignment: {info['passes']} improving pass(es), "
            f"{info['moves']['transfer']} transfer(s), {info['moves']['swap']} swap(s)"
        )
        logger.debug("%s on blocks: %s in %.3fs", name, msg, time.perf_counter() - t0)
        return _result(prob, st, status, msg, history, info)

    solve_matching.__name__ = f"solve_{name}_blocks"
    return solve_matching


def _baseline(scenario: Scenario, name: str) -> SolveResult:
    _require_blocks(scenario, name)
    prob = BlockProblem(scenario, reference(scenario))
    st = _start_states(prob, (name,))[name]
    return _result(
        prob,
        st,
        "converged",
        f"{name} assignment; round time, water-filling power and bits optimized",
        [st.objective],
        {"assignment": name},
    )


@register_solver("round-robin", "resource blocks: round-robin assignment, power and bits optimized")
def solve_round_robin(scenario: Scenario) -> SolveResult:
    """Round-robin blocks (block m to device m mod N); round time, power and bits optimized."""
    return _baseline(scenario, "round-robin")


@register_solver("greedy", "resource blocks: best-gain greedy assignment, power and bits optimized")
def solve_greedy(scenario: Scenario) -> SolveResult:
    """Best-gain greedy blocks; round time, water-filling power and bits optimized."""
    return _baseline(scenario, "greedy")


def _surjective_assignments(n: int, m: int) -> IntArray:
    """Every owner vector of M blocks over N devices that gives each device a block, (R, M)."""
    rows = np.array(list(itertools.product(range(n), repeat=m)), dtype=np.int64).reshape(-1, m)
    counts = np.stack([(rows == d).sum(axis=1) for d in range(n)], axis=1)
    return rows[np.all(counts > 0, axis=1)]


def _padded_rows(levels: FloatArray, owners: IntArray, n: int) -> FloatArray:
    """Per-row per-device ascending block levels with ``inf`` padding, shape (R, N, K)."""
    mask = owners[:, None, :] == np.arange(n)[None, :, None]  # (R, N, M)
    lv = np.sort(np.where(mask, levels[None, :, :], np.inf), axis=-1)
    k = int(mask.sum(axis=-1).max())
    return lv[..., :k]


def solve_exact_blocks(
    scenario: Scenario, *, max_assignments: int = DEFAULT_MAX_ASSIGNMENTS
) -> SolveResult:
    """Global optimum: every assignment, bits by branch and bound (small instances).

    Raises
    ------
    SolverArgumentError
        If ``N^M`` exceeds ``max_assignments``.
    """
    _require_blocks(scenario, "exact")
    cap = check_int(max_assignments, "max_assignments", minimum=1, error=SolverArgumentError)
    assert scenario.resource_blocks is not None
    n, m = scenario.n_devices, scenario.resource_blocks.count
    if n**m > cap:
        raise SolverArgumentError(
            f"exact: {n}^{m} = {n**m} block assignments exceeds the limit of {cap} "
            "(max_assignments); use solver='bcd'"
        )
    prob = BlockProblem(scenario, reference(scenario))
    starts = _start_states(prob, ("greedy", "round-robin"))
    first = min(starts, key=lambda k: starts[k].objective)
    inc, _, _ = run_matching(prob, starts[first], polish=DEFAULT_POLISH)
    best_j, best_owner, best_bits = inc.objective, inc.owner, inc.bits
    history = [best_j]
    owners = _surjective_assignments(n, m)
    padded = _padded_rows(prob.levels, owners, n)
    lv = prob.bit_levels
    nl = lv.size
    # Boxes: (assignment, lo, hi) in level indices; V* at each box's lo corner.
    a = np.arange(owners.shape[0])
    lo = np.zeros((a.size, n), dtype=np.int64)
    hi = np.full((a.size, n), nl - 1, dtype=np.int64)
    v = prob.solve(padded[a], lv[lo]).value
    solves = a.size

    def consider(rows_a: IntArray, corner: IntArray, vals: FloatArray) -> None:
        nonlocal best_j, best_owner, best_bits
        j = prob.rounds(lv[corner]) * vals
        j = np.where(np.isfinite(j), j, np.inf)
        if j.size and float(j.min()) < best_j:
            k = int(np.argmin(j))
            best_j, best_owner, best_bits = float(j[k]), owners[rows_a[k]], lv[corner[k]]
            history.append(best_j)

    consider(a, lo, v)
    while a.size:
        with np.errstate(invalid="ignore"):
            bound = prob.rounds(lv[hi]) * v
        keep = (bound < best_j * (1 - 1e-12)) & ~np.all(lo == hi, axis=1)
        a, lo, hi, v = a[keep], lo[keep], hi[keep], v[keep]
        if not a.size:
            break
        width = hi - lo
        d = np.argmax(width, axis=1)
        r = np.arange(a.size)
        mid = lo[r, d] + width[r, d] // 2
        left_hi = hi.copy()
        left_hi[r, d] = mid
        right_lo = lo.copy()
        right_lo[r, d] = mid + 1
        v_right = prob.solve(padded[a], lv[right_lo]).value
        solves += a.size
        consider(a, right_lo, v_right)
        a = np.concatenate([a, a])
        lo = np.concatenate([lo, right_lo])
        hi = np.concatenate([left_hi, hi])
        v = np.concatenate([v, v_right])
    padded1, index1 = padded_levels(prob.levels, best_owner, n)
    sol = prob.solve(padded1[None], best_bits[None])
    st = BlockState(best_owner.copy(), best_bits.copy(), padded1, index1, sol, best_j)
    info = {
        "assignments": int(owners.shape[0]),
        "time_solves": solves,
        "matching_objective": inc.objective,
    }
    return _result(
        prob,
        st,
        "optimal",
        f"global optimum over {owners.shape[0]} assignments ({solves} round-time solves)",
        history,
        info,
    )


def _equal_blocks(scenario: Scenario) -> SolveResult:
    from sflam_opt.solvers.baselines import solve_equal

    return solve_equal(scenario)


#: Solvers that accept resource-block scenarios, by registered name.
BLOCK_SOLVERS: dict[str, SolverFunc] = {
    "bcd": _matching_solver("bcd", swaps=True, polish_default=DEFAULT_POLISH),
    "fast": _matching_solver("fast", swaps=False, polish_default=0),
    "exact": solve_exact_blocks,
    "equal": _equal_blocks,
    "round-robin": solve_round_robin,
    "greedy": solve_greedy,
}


for _name, _func in BLOCK_SOLVERS.items():
    register_block_solver(_name, _func)
