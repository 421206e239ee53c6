"""Two more exact bits blocks for ``bcd``: bits at a fixed round time, band or efficiency fixed.

The bits block of :mod:`sflam_opt.solvers.bits` holds bandwidth and power fixed; a device's
smaller payload then only shortens its own upload, and the band it would free is never seen, so
block descent with it alone stalls (1-2 % above the optimum on faded draws). These blocks hold
other continuous quantities fixed, so that their exact bits step can make the trades that one
cannot (``docs/formulation.md`` §8.3):

- :func:`bits_at_fixed_band`: round time ``T`` (so every slot ``u_n = T - c_n``) and bandwidth
  fixed, power free. A device's upload energy ``e_n(W) = (N0 B_n u_n / g_n)(2^{W/(B_n u_n)} - 1)``
  is then a function of its own payload, so the step is separable: Dinkelbach's method with a
  per-device argmin over the allowed levels. It raises bits where power is cheap (e.g. under a
  binding deadline, where the band is used up).
- :func:`bits_at_fixed_efficiency`: ``T`` and every device's spectral efficiency ``x_n`` fixed,
  bandwidth ``B_n = W_n ln2 / (u_n x_n)`` and power follow the payload, so energy is ``sigma_n W_n``
  and the band couples devices: a multiple-choice knapsack per Dinkelbach step, solved exactly by
  HiGHS (:func:`scipy.optimize.milp`). It moves bits between devices through the band.
- :func:`bits_at_fixed_power`: ``T`` and powers fixed, each level gets the bandwidth that sends it
  in the slot; energy ``p_n u_n`` is fixed and the band couples devices (a knapsack again). Devices
  at their power cap, which neither block above lets send more, trade bits through the band.

Both keep the caps (power, energy, the target's margin) and return bits, bandwidth and power;
``bcd`` re-scores them and keeps them only if J falls, like every block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, elementwise, milp

from sflam_opt.bounds import quantization_penalty
from sflam_opt.costs import Reference, compute_energy_j, fixed_time_s, payload_bits
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario

__all__ = [
    "bits_at_band_price",
    "bits_at_fixed_band",
    "bits_at_fixed_efficiency",
    "bits_at_fixed_power",
]

#: Time cap (s) of one knapsack MILP: at N = 10,000 it has 150,000 binaries. A capped solve
#: returns HiGHS's best feasible point, which bcd still keeps only if J falls.
KNAPSACK_TIME_LIMIT_S = 20.0
#: Dinkelbach steps per block call (each strictly lowers the ratio; a handful is typical).
MAX_STEPS = 30


@dataclass
class _Table:
    """Per device and level (shape (N, L)): payload, quantization penalty, allowed."""

    levels: IntArray
    payload: FloatArray
    penalty: FloatArray
    room: float
    slot_s: FloatArray
    compute_j: FloatArray
    w_latency_t: float
    w_energy: float

    @classmethod
    def build(cls, scenario: Scenario, ref: Reference, round_s: float) -> _Table:
        lv = np.asarray(scenario.bits.array, dtype=np.int64)
        n = scenario.n_devices
        conv = scenario.convergence
        return cls(
            levels=lv,
            payload=np.broadcast_to(payload_bits(scenario, lv), (n, lv.size)),
            penalty=conv.q * scenario.rho[:, None] * quantization_penalty(lv)[None, :],
            room=conv.epsilon - conv.phi0,
            slot_s=round_s - fixed_time_s(scenario),
            compute_j=compute_energy_j(scenario),
            w_latency_t=ref.w_latency * round_s,
            w_energy=ref.w_energy,
        )

    def ratio(self, idx: IntArray, energy: FloatArray) -> float:
        """``V / m`` (J up to a constant factor) at level indices ``idx``; inf if unreachable."""
        rows = np.arange(idx.size)
        m = self.room - float(self.penalty[rows, idx].sum())
        if m <= 0:
            return np.inf
        v = self.w_latency_t + self.w_energy * float(np.sum(self.compute_j + energy[rows, idx]))
        return v / m


def _dinkelbach(
    tab: _Table,
    energy: FloatArray,
    allowed: np.ndarray,
    start: IntArray,
    step: object,
) -> IntArray:
    """Dinkelbach on ``V / m`` from level indices ``start``; ``step(cost)`` is the sub-problem."""
    idx, q = start, tab.ratio(start, energy)
    for _ in range(MAX_STEPS):
        cost = np.where(allowed, tab.w_energy * energy + q * tab.penalty, np.inf)
        new = step(cost)  # type: ignore[operator]
        if new is None:
            break
        q_new = tab.ratio(new, energy)
        if not q_new < q * (1.0 - 1e-12):
            break
        idx, q = new, q_new
    return idx


def _caps(scenario: Scenario, tab: _Table, energy: FloatArray) -> np.ndarray:
    """Levels whose power (energy over the slot) and energy meet the caps, shape (N, L)."""
    pmax = scenario.devices.max_power_w.astype(np.float64)
    ok = np.isfinite(energy) & (energy <= pmax[:, None] * tab.slot_s[:, None] * (1 + 1e-9))
    cap = scenario.constraints.device_energy_j
    if cap is not None:
        ok &= tab.compute_j[:, None] + energy <= cap
    return ok


def bits_at_fixed_band(
    scenario: Scenario,
    ref: Reference,
    bits: IntArray,
    bandwidth_hz: FloatArray,
    round_s: float,
) -> tuple[IntArray, FloatArray, FloatArray] | None:
    """Exact bits at fixed round time and bandwidth (power free); None if no slot is positive.

    Returns
    -------
    (bits, bandwidth_hz, power_w) : arrays of shape (N,), or None
    """
    tab = _Table.build(scenario, ref, round_s)
    if np.any(tab.slot_s <= 0):
        return None
    bu = bandwidth_hz[:, None] * tab.slot_s[:, None]
    with np.errstate(over="ignore"):
        energy = (
            scenario.noise_w_per_hz
            * bu
            * np.expm1(tab.payload * LN2 / bu)
            / (scenario.gain[:, None])
        )
    allowed = _caps(scenario, tab, energy)
    start = np.searchsorted(tab.levels, bits)
    allowed[np.arange(start.size), start] = True  # the current point is feasible (to round-off)
    idx = _dinkelbach(tab, energy, allowed, start, _row_argmin)
    rows = np.arange(idx.size)
    power = energy[rows, idx] / tab.slot_s
    return tab.levels[idx], bandwidth_hz.copy(), np.minimum(power, scenario.devices.max_power_w)


def _knapsack(
    scenario: Scenario,
    tab: _Table,
    bits: IntArray,
    band_hz: FloatArray,
    energy: FloatArray,
) -> IntArray:
    """Dinkelbach with a multiple-choice knapsack over the band per step (HiGHS MILP).

    ``band_hz`` and ``energy`` are each level's bandwidth and upload energy, shape (N, L) (inf
    where the level cannot be sent); returns level indices.
    """
    n, nl = tab.payload.shape
    allowed = _caps(scenario, tab, energy) & np.isfinite(band_hz)
    start = np.searchsorted(tab.levels, bits)
    allowed[np.arange(n), start] = True  # the current point is feasible (to round-off)
    one_hot = LinearConstraint(sp.kron(sp.eye(n), np.ones((1, nl))), 1.0, 1.0)
    band = LinearConstraint(
        np.where(allowed, band_hz, 0.0).reshape(1, -1),
        -np.inf,
        float(scenario.system.bandwidth_hz) * (1.0 + 1e-12),
    )
    ub = allowed.reshape(-1).astype(np.float64)

    def step(cost: FloatArray) -> IntArray | None:
        res = milp(
            np.where(allowed, cost, 0.0).reshape(-1),
            constraints=[one_hot, band],
            integrality=np.ones(n * nl),
            bounds=Bounds(0.0, ub),
            options={"time_limit": KNAPSACK_TIME_LIMIT_S},
        )
        if res.x is None:
            return None
        return np.argmax(res.x.reshape(n, nl), axis=1)

    return _dinkelbach(tab, np.where(allowed, energy, 0.0), allowed, start, step)


def bits_at_fixed_efficiency(
    scenario: Scenario,
    ref: Reference,
    bits: IntArray,
    efficiency: FloatArray,
    round_s: float,
) -> tuple[IntArray, FloatArray, FloatArray] | None:
    """Exact bits at fixed round time and spectral efficiencies ``x_n`` (nats/s/Hz).

    Bandwidth ``W ln2 / (u x)`` and power follow the payload; each Dinkelbach step is a
    multiple-choice knapsack over the band.

    Returns
    -------
    (bits, bandwidth_hz, power_w) : arrays of shape (N,), or None
    """
    tab = _Table.build(scenario, ref, round_s)
    if np.any(tab.slot_s <= 0) or np.any(efficiency <= 0):
        return None
    band = LN2 / (tab.slot_s * efficiency)[:, None] * tab.payload
    j_per_bit = scenario.noise_w_per_hz * LN2 * np.expm1(efficiency) / (scenario.gain * efficiency)
    idx = _knapsack(scenario, tab, bits, band, j_per_bit[:, None] * tab.payload)
    bw = band[np.arange(idx.size), idx]
    power = scenario.noise_w_per_hz * bw * np.expm1(efficiency) / scenario.gain
    return tab.levels[idx], bw, np.minimum(power, scenario.devices.max_power_w)


def _band_for_rate(rate_nats: FloatArray, snr_hz: FloatArray) -> FloatArray:
    """``B`` with ``B ln(1 + K / B) = r`` (nats/s), elementwise; inf where ``r >= K``.

    ``B ln(1 + K/B)`` rises from 0 to ``K`` as B grows, so the root is bracketed in log B.
    """
    r, k = np.broadcast_arrays(rate_nats, snr_hz)
    out = np.full(r.shape, np.inf)
    ok = r < k * (1.0 - 1e-12)
    if np.any(ok):
        rr, kk = r[ok], k[ok]
        # Far below both scales B ln(1 + K/B) -> 0 < r; far above, it is ~K > r.
        hi = np.log(rr) + 60.0
        lo = np.minimum(np.log(rr), np.log(kk)) - 60.0
        res = elementwise.find_root(
            lambda lb, r_, k_: np.exp(lb) * np.log1p(k_ / np.exp(lb)) / r_ - 1.0,
            (lo, hi),
            args=(rr, kk),
            tolerances={"xatol": 1e-13, "xrtol": 0.0},
        )
        out[ok] = np.exp(res.bracket[1])  # the upper end meets the rate
    return out


def bits_at_fixed_power(
    scenario: Scenario,
    ref: Reference,
    bits: IntArray,
    power_w: FloatArray,
    round_s: float,
) -> tuple[IntArray, FloatArray, FloatArray] | None:
    """Exact bits at fixed round time and powers: each level gets the band that fits its slot.

    Upload energy ``p_n u_n`` is then fixed and the band couples devices (a knapsack per
    Dinkelbach step), so devices held at their power cap can trade bits through the band.

    Returns
    -------
    (bits, bandwidth_hz, power_w) : arrays of shape (N,), or None
    """
    tab = _Table.build(scenario, ref, round_s)
    if np.any(tab.slot_s <= 0) or np.any(power_w <= 0):
        return None
    snr_hz = power_w * scenario.gain / scenario.noise_w_per_hz
    band = _band_for_rate(tab.payload * LN2 / tab.slot_s[:, None], snr_hz[:, None])
    energy = np.broadcast_to((power_w * tab.slot_s)[:, None], band.shape).copy()
    idx = _knapsack(scenario, tab, bits, band, energy)
    bw = band[np.arange(idx.size), idx]
    return tab.levels[idx], bw, power_w.copy()


def bits_at_band_price(
    scenario: Scenario,
    ref: Reference,
    bits: IntArray,
    round_s: float,
    price_j: float,
) -> IntArray | None:
    """Exact bits at fixed round time with the band priced at ``price_j`` instead of fixed.

    ``price_j`` is the continuous block's band multiplier (J of upload energy per unit band
    fraction). Each level's bandwidth and power are then its own best response,
    ``S h(x) = price k`` (§6.2, the same ``x`` for every level of a device; clipped to the
    level's caps), and each Dinkelbach step minimizes upload energy plus the band's charge
    ``price (beta - 1 / N)``, a per-device argmin. It makes the trade the blocks at fixed band,
    efficiency or power cannot: several devices take more bits at once and everyone's share of
    the band shifts. The caller re-solves the continuous block at the new bits (the band is
    only priced here, not shared).

    Returns
    -------
    ndarray of int, shape (N,), or None
        The bits, or None when there is no positive slot or price.
    """
    from sflam_opt.solvers.joint import h_inv, phi, phi_inv  # the cone block's own functions

    tab = _Table.build(scenario, ref, round_s)
    if np.any(tab.slot_s <= 0) or not price_j > 0 or not np.isfinite(price_j):
        return None
    n = tab.slot_s.size
    nats = tab.payload * LN2
    gain, n0 = scenario.gain[:, None], scenario.noise_w_per_hz
    shannon = n0 * nats / gain
    per_x = nats / (float(scenario.system.bandwidth_hz) * tab.slot_s[:, None])  # beta = per_x / x
    x_free = h_inv(
        price_j * gain / (n0 * float(scenario.system.bandwidth_hz) * tab.slot_s[:, None])
    )
    room = scenario.devices.max_power_w[:, None] * tab.slot_s[:, None] / shannon
    cap = scenario.constraints.device_energy_j
    if cap is not None:
        room = np.minimum(room, (cap - tab.compute_j[:, None]) / shannon)
    x = np.minimum(x_free, phi_inv(room))
    allowed = x > 0
    safe = np.where(allowed, x, 1.0)
    charge = shannon * phi(safe) + price_j * (per_x / safe - 1.0 / n)
    start = np.searchsorted(tab.levels, bits)
    allowed[np.arange(n), start] = True
    idx = _dinkelbach(tab, np.where(allowed, charge, 0.0), allowed, start, _row_argmin)
    return tab.levels[idx]


def _row_argmin(cost: FloatArray) -> IntArray:
    return np.argmin(cost, axis=1)
