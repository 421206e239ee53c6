"""Round time, power and bits for fixed resource-block assignments (``docs/formulation.md`` §10).

For a fixed assignment and bits, every device sends for its whole slot ``u_n = T - c_n`` (at a
fixed set of blocks, sending the same bits more slowly needs less energy), its power split is
water-filling (:func:`sflam_opt.blocks.waterfill`), and its upload energy
``e_n(u) = u P_n(W_n / u)`` is convex and decreasing in ``u``. So ``V(T) = w_T T + w_E E(T)`` is
convex in the round time; its minimum is at the fastest feasible round ``T_lo`` (every device at
its power or energy cap), at the deadline, or at the root of

    V'(T) = w_T + w_E sum_n e_n'(T - c_n),      e_n'(u) = P - r L ln2 / W,

(``r = W_n / u``, ``L`` the water level), found by :func:`scipy.optimize.elementwise.find_root`
vectorized over a batch of rows (assignments x bit vectors), or :func:`scipy.optimize.brentq`
for a single row. The bits block is Dinkelbach's
method on ``J = K(b) V`` at a fixed round time, one (N x L) argmin per step, each step re-scored
with the exact round-time solve and kept only if ``J`` falls.

The envelope theorem also prices a change of a device's blocks at a fixed round time: to first
order ``V*`` changes by ``omega_n`` times the change of its upload energy at its slot, with
``omega_n = w_E`` plus, for a device that holds the round at ``T_lo``, the value of the round time
its cap costs. :attr:`TimeSolution.weight` holds ``omega_n``; the matching uses it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from sflam_opt.blocks import block_levels, max_rate_bps, waterfill
from sflam_opt.bounds import quantization_penalty, rounds_needed
from sflam_opt.costs import Reference, compute_energy_j, fixed_time_s, payload_bits
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario

__all__ = ["BlockProblem", "TimeSolution"]

logger = logging.getLogger(__name__)

#: Relative slack of the caps in the feasibility checks of a fixed round time.
CAP_SLACK = 1e-9
#: Without a deadline and with no latency weight, ``V`` falls toward its infimum forever; the
#: round time is the first doubling within this relative distance of it.
INFIMUM_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class TimeSolution:
    """Optimal round time of a batch of R rows (fixed blocks and bits), N devices each.

    Attributes
    ----------
    feasible : ndarray of bool, shape (R,)
    round_s : ndarray, shape (R,)
        Round time T (s); ``inf`` where infeasible.
    value : ndarray, shape (R,)
        ``V = w_T T + w_E E`` at ``T`` (``J`` at unit rounds); ``inf`` where infeasible.
    upload_s : ndarray, shape (R, N)
        Slots ``u_n = T - c_n`` (s).
    weight : ndarray, shape (R, N)
        ``omega_n``: value of one joule of device n's upload energy at its fixed slot.
    """

    feasible: np.ndarray
    round_s: FloatArray
    value: FloatArray
    upload_s: FloatArray
    weight: FloatArray


class BlockProblem:
    """Scenario constants and the batched round-time solve of docs/formulation.md §10.

    Parameters
    ----------
    scenario : Scenario
        A scenario with resource blocks.
    ref : Reference
        The equal baseline (round robin, equal power) that normalizes J.
    """

    def __init__(self, scenario: Scenario, ref: Reference) -> None:
        assert scenario.resource_blocks is not None
        self.scenario = scenario
        self.ref = ref
        self.n = scenario.n_devices
        self.m = scenario.resource_blocks.count
        self.block_hz = scenario.resource_blocks.block_hz
        self.levels = block_levels(scenario)
        self.fixed_s = fixed_time_s(scenario)
        self.compute_j = compute_energy_j(scenario)
        self.pmax = scenario.devices.max_power_w.astype(np.float64)
        self.deadline = scenario.constraints.round_deadline_s
        cap = scenario.constraints.device_energy_j
        self.upload_cap_j = None if cap is None else cap - self.compute_j
        om = scenario.objective.latency_weight
        self.w_t = om / ref.latency_s
        self.w_e = (1.0 - om) / ref.energy_j
        self.bit_levels = scenario.bits.array
        self.payload_levels = payload_bits(scenario, self.bit_levels)
        self.rho = scenario.rho
        self.q = scenario.convergence.q

    # ------------------------------------------------------------------ per-device energy
    def energy(self, padded: FloatArray, payload: FloatArray, up: FloatArray) -> FloatArray:
        """Upload energy ``u P(W / u)`` (J) of sending ``payload`` bits in ``up`` s; shape S."""
        fill = waterfill(padded, payload / up, self.block_hz)
        return up * fill.power_w

    def _slope(self, padded: FloatArray, payload: FloatArray, up: FloatArray) -> FloatArray:
        """``e'(u) = P - r L ln2 / W`` (W; <= 0), shape S."""
        r = payload / up
        fill = waterfill(padded, r, self.block_hz)
        return fill.power_w - r * fill.level_w * LN2 / self.block_hz

    def rounds(self, bits: IntArray) -> FloatArray:
        """``K(b) / K0`` for rows of bits, shape (R,)."""
        return np.asarray(rounds_needed(self.scenario, bits)) / self.ref.rounds

    # ------------------------------------------------------------------ round time
    def solve(self, padded: FloatArray, bits: IntArray) -> TimeSolution:
        """Optimal round time for R rows.

        Parameters
        ----------
        padded : ndarray, shape (R, N, K)
            Each row's per-device block levels (W), ``inf`` padding
            (:func:`sflam_opt.blocks.padded_levels`).
        bits : ndarray of int, shape (R, N)
        """
        r_rows = padded.shape[0]
        payload = payload_bits(self.scenario, bits)
        c = self.fixed_s[None, :]
        up_lb, ok_dev, energy_bound = self.slot_floor(padded, payload)
        feasible = np.all(ok_dev, axis=1)
        t_lo = np.max(c + up_lb, axis=1)
        if self.deadline is not None:
            feasible &= t_lo <= self.deadline * (1 + CAP_SLACK)
            t_lo = np.minimum(t_lo, self.deadline)
        t = np.where(feasible, t_lo, np.inf)
        rows = np.flatnonzero(feasible)
        # Without an energy weight V' = w_T: the round stays at T_lo, which its caps hold up.
        slope_lo = np.full(r_rows, self.w_t if self.w_e <= 0 else 0.0)
        if self.w_e > 0 and rows.size:
            t[rows], slope_lo[rows] = self._round_time(padded, payload, rows, t_lo[rows])
        up = np.where(feasible[:, None], t[:, None] - c, np.inf)
        value = np.full(r_rows, np.inf)
        weight = np.full((r_rows, self.n), self.w_e)
        if rows.size:
            e = self.energy(padded[rows], payload[rows], up[rows])
            value[rows] = self.w_t * t[rows] + self.w_e * np.sum(self.compute_j + e, axis=1)
            weight[rows] += self._cap_prices(
                padded[rows],
                payload[rows],
                up[rows],
                slope_lo[rows],
                (c + up_lb)[rows] >= t[rows, None] * (1 - 1e-12),
                energy_bound[rows],
            )
        return TimeSolution(feasible, t, value, up, weight)

    def slot_floor(
        self, padded: FloatArray, payload: FloatArray
    ) -> tuple[FloatArray, np.ndarray, np.ndarray]:
        """Shortest slot of every device within its power and energy caps.

        Parameters
        ----------
        padded : ndarray, shape (R, N, K)
        payload : ndarray, shape (R, N)
            Uplink bits.

        Returns
        -------
        slot : ndarray, shape (R, N)
            Shortest feasible upload time (s).
        ok : ndarray of bool, shape (R, N)
            Whether any slot is feasible (no deadline considered).
        energy_bound : ndarray of bool, shape (R, N)
            True where the energy cap, not the power cap, sets the slot.
        """
        with np.errstate(divide="ignore"):
            up_pow = payload / max_rate_bps(padded, self.pmax[None, :], self.block_hz)
        ok = np.isfinite(up_pow)
        if self.upload_cap_j is None:
            return up_pow, ok, np.zeros(up_pow.shape, dtype=bool)
        up_e, ok_e = self._energy_floor(padded, payload, up_pow)
        return np.maximum(up_pow, up_e), ok & ok_e, up_e > up_pow

    def feasible_bits(self, padded: FloatArray) -> IntArray | None:
        """Each device's largest bit level that its caps and the deadline allow, shape (N,).

        Without a shared band the devices do not compete for feasibility, and a level is
        feasible whenever a larger one is, so this also gives the largest margin ``m(b)``. None
        when some device has no feasible level with these blocks.
        """
        nl = self.bit_levels.size
        pad = np.broadcast_to(padded[None], (nl, *padded.shape))
        pay = np.broadcast_to(self.payload_levels[:, None], (nl, self.n))
        slot, ok, _ = self.slot_floor(pad, pay)
        if self.deadline is not None:
            ok &= self.fixed_s[None, :] + slot <= self.deadline * (1 + CAP_SLACK)
        if not np.all(ok.any(axis=0)):
            return None
        return self.bit_levels[nl - 1 - np.argmax(ok[::-1], axis=0)]

    def _energy_floor(
        self, padded: FloatArray, payload: FloatArray, up_pow: FloatArray
    ) -> tuple[FloatArray, np.ndarray]:
        """Shortest slot within the energy cap, shape (R, N); and where one exists."""
        assert self.upload_cap_j is not None
        cap = np.broadcast_to(self.upload_cap_j[None, :], up_pow.shape)
        # Infimum of e(u) as u grows: the Shannon-limit energy on the device's best block.
        e_inf = payload * LN2 * np.min(padded, axis=-1) / self.block_hz
        ok = (cap > e_inf * (1 + CAP_SLACK)) & np.isfinite(up_pow)
        up_e = np.zeros(up_pow.shape)
        u0 = np.where(np.isfinite(up_pow), up_pow, 1.0)
        over = ok & (self.energy(padded, payload, u0) > cap)
        if not np.any(over):
            return up_e, ok
        i, j = np.nonzero(over)
        pad, pay, cp = padded[i, j], payload[i, j], cap[i, j]
        lo = np.log(u0[i, j])
        hi = lo + 1.0
        for _ in range(200):
            bad = self.energy(pad, pay, np.exp(hi)) > cp
            if not np.any(bad):
                break
            hi = np.where(bad, hi + 2.0 * (hi - lo), hi)
        idx = np.arange(i.size)
        from scipy.optimize import elementwise  # imported on first use: fast never needs it

        def gap(log_u: FloatArray, k: IntArray) -> FloatArray:
            return self.energy(pad[k], pay[k], np.exp(log_u)) / cp[k] - 1.0

        res = elementwise.find_root(gap, (lo, hi), args=(idx,), tolerances={"xatol": 1e-13})
        # The right end of the final bracket meets the cap.
        up_e[i, j] = np.exp(np.maximum(res.bracket[1], res.x))
        return up_e, ok

    def _dv(
        self, t: FloatArray, k: IntArray, padded: FloatArray, payload: FloatArray
    ) -> FloatArray:
        up = t[:, None] - self.fixed_s[None, :]
        return self.w_t + self.w_e * np.sum(self._slope(padded[k], payload[k], up), axis=1)

    def _round_time(
        self, padded: FloatArray, payload: FloatArray, rows: IntArray, t_lo: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Minimizer of V over ``[T_lo, Tmax]`` for the given rows, and ``V'(T_lo+)``."""
        from scipy.optimize import brentq, elementwise  # imported on first use: fast never needs it

        pad, pay = padded[rows], payload[rows]
        idx = np.arange(rows.size)
        d_lo = self._dv(t_lo, idx, pad, pay)
        t = t_lo.copy()
        inner = d_lo < 0
        if self.deadline is not None:
            t_hi = np.full(rows.size, float(self.deadline))
            late = inner & (t_hi > t_lo)
            d_hi = np.full(rows.size, np.inf)
            d_hi[late] = self._dv(t_hi[late], idx[late], pad, pay)
            at_deadline = late & (d_hi <= 0)
            t[at_deadline] = t_hi[at_deadline]
            inner &= late & ~at_deadline
        else:
            span = np.maximum(t_lo - np.min(self.fixed_s), 1e-12)
            t_hi = t_lo + span
            todo = inner.copy()
            for _ in range(200):
                if not np.any(todo):
                    break
                d_hi = self._dv(t_hi[todo], idx[todo], pad, pay)
                if self.w_t <= 0:
                    # V only falls; stop at the first T within INFIMUM_RTOL of the infimum.
                    up = t_hi[todo, None] - self.fixed_s[None, :]
                    e = np.sum(self.energy(pad[todo], pay[todo], up), axis=1)
                    e_inf = np.sum(pay[todo] * LN2 * np.min(pad[todo], axis=-1), axis=1)
                    near = e <= e_inf / self.block_hz * (1 + INFIMUM_RTOL)
                    done = np.flatnonzero(todo)[near]
                    t[done] = t_hi[done]
                    inner[done] = False
                    todo[done] = False
                else:
                    done = np.flatnonzero(todo)[d_hi > 0]
                    todo[done] = False
                t_hi = np.where(todo, t_lo + 2.0 * (t_hi - t_lo), t_hi)
            inner &= ~todo
        k = np.flatnonzero(inner)
        if k.size == 1:
            # One row: scalar Brent, far less overhead than the batched root finder.
            t[k] = brentq(
                lambda x: float(self._dv(np.array([x]), k, pad, pay)[0]),
                float(t_lo[k[0]]),
                float(t_hi[k[0]]),
                xtol=1e-300,
                rtol=1e-13,
            )
        elif k.size:
            res = elementwise.find_root(
                lambda x, kk: self._dv(x, kk, pad, pay),
                (t_lo[k], t_hi[k]),
                args=(k,),
                tolerances={"xrtol": 1e-13, "xatol": 0.0},
            )
            t[k] = res.x
        return t, np.maximum(d_lo, 0.0)

    def _cap_prices(
        self,
        padded: FloatArray,
        payload: FloatArray,
        up: FloatArray,
        slope_lo: FloatArray,
        binding: np.ndarray,
        energy_bound: np.ndarray,
    ) -> FloatArray:
        """Extra weight of the upload energy of devices that hold the round at ``T_lo``.

        A change that lowers a binding device's energy at its slot by ``de`` lets its slot, so
        the round, shrink by ``de / (-e'(u))`` (energy cap) or ``de / (r P'(r))`` (power cap, the
        power being ``e / u``); each such second is worth ``V'(T_lo+)``, shared equally among the
        binding devices.
        """
        extra = np.zeros(up.shape)
        hold = binding & (slope_lo[:, None] > 0)
        if not np.any(hold):
            return extra
        i, j = np.nonzero(hold)
        r = payload[i, j] / up[i, j]
        fill = waterfill(padded[i, j], r, self.block_hz)
        rate_slope = r * fill.level_w * LN2 / self.block_hz
        e_slope = -(fill.power_w - rate_slope)
        per = np.where(energy_bound[i, j], e_slope, rate_slope)
        share = slope_lo[i] / np.maximum(hold.sum(axis=1)[i], 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            extra[i, j] = np.where(per > 0, share / per, 0.0)
        return extra

    # ------------------------------------------------------------------ bits
    def objective(self, sol: TimeSolution, bits: IntArray) -> FloatArray:
        """``J = K(b) / K0 * V`` per row, shape (R,); ``inf`` where infeasible."""
        k = self.rounds(bits)
        with np.errstate(invalid="ignore"):
            j = k * sol.value
        return np.where(sol.feasible & np.isfinite(j), j, np.inf)

    def level_energy(self, padded: FloatArray, up: FloatArray) -> tuple[FloatArray, np.ndarray]:
        """Upload energy of every device at every bit level at fixed slots, shape (N, L).

        Parameters
        ----------
        padded : ndarray, shape (N, K)
        up : ndarray, shape (N,)

        Returns
        -------
        energy : ndarray, shape (N, L)
        feasible : ndarray of bool, shape (N, L)
            Within the power cap (and the energy cap) at that slot.
        """
        pay = self.payload_levels[None, :]
        pad = np.broadcast_to(padded[:, None, :], (self.n, pay.shape[1], padded.shape[-1]))
        fill = waterfill(pad, pay / up[:, None], self.block_hz)
        e = up[:, None] * fill.power_w
        ok = fill.power_w <= self.pmax[:, None] * (1 + CAP_SLACK)
        if self.upload_cap_j is not None:
            ok &= e <= self.upload_cap_j[:, None] * (1 + CAP_SLACK)
        return e, ok

    def best_bits(
        self, padded: FloatArray, bits: IntArray, max_steps: int = 30
    ) -> tuple[IntArray, TimeSolution, float, int]:
        """Dinkelbach's bits block at a fixed assignment (shape (N, K) levels).

        When ``bits`` is infeasible it starts from :meth:`feasible_bits` instead. Returns the bits, their round-time solution (one row), ``J`` and the number of accepted
        steps; ``J`` never rises.
        """
        sol = self.solve(padded[None], bits[None])
        j = float(self.objective(sol, bits[None])[0])
        if not np.isfinite(j):
            start = self.feasible_bits(padded)
            if start is not None and not np.array_equal(start, bits):
                bits = start
                sol = self.solve(padded[None], bits[None])
                j = float(self.objective(sol, bits[None])[0])
        steps = 0
        pen = quantization_penalty(self.bit_levels)
        for _ in range(max_steps):
            if not np.isfinite(j):
                break
            theta = float(sol.value[0]) / float(self.margin(bits))
            e, ok = self.level_energy(padded, sol.upload_s[0])
            cost = sol.weight[0][:, None] * e + theta * self.q * self.rho[:, None] * pen[None, :]
            cost = np.where(ok, cost, np.inf)
            pick = np.argmin(cost, axis=1)
            if not np.all(np.isfinite(cost[np.arange(self.n), pick])):
                break
            new = self.bit_levels[pick]
            if np.array_equal(new, bits):
                break
            s2 = self.solve(padded[None], new[None])
            j2 = float(self.objective(s2, new[None])[0])
            if not j2 < j:
                break
            bits, sol, j = new, s2, j2
            steps += 1
        return bits, sol, j, steps

    def margin(self, bits: IntArray) -> float:
        """``eps - Phi0 - Phi_q(b)`` of one bit vector."""
        c = self.scenario.convergence
        return c.epsilon - c.phi0 - float(np.sum(self.rho * self.q * quantization_penalty(bits)))
