"""Pure, vectorized cost model of one SFLAM round and the normalized objective J.

``docs/formulation.md``, sections "One round" and "The problem" (objective). Every function takes a :class:`Scenario` and numpy
vectors of shape (N,) and returns numpy values; nothing here loops over devices.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import min_epsilon, phi_q, rounds_needed
from sflam_opt.errors import AllocationError
from sflam_opt.numeric import LN2, FloatArray
from sflam_opt.scenario import Scenario

__all__ = [
    "Breakdown",
    "Evaluation",
    "Reference",
    "breakdown",
    "compute_energy_j",
    "compute_time_s",
    "downlink_time_s",
    "equal_allocation",
    "evaluate",
    "fixed_time_s",
    "objective",
    "payload_bits",
    "rate_bps",
    "reference",
    "server_time_s",
]


#: Default relative tolerance used when checking constraints.
TOLERANCE = 1e-6


def payload_bits(scenario: Scenario, bits: ArrayLike) -> FloatArray:
    """Uplink bits per round ``W_n = tau (beta d b_n + 64) + 32 M`` (``docs/formulation.md``, "One round").

    Parameters
    ----------
    bits : array_like of int, shape (...,)
        Bit widths.

    Returns
    -------
    ndarray, shape (...,)
        Bits sent uplink per device per round (activations + ranges + device model).
    """
    m, t = scenario.model, scenario.training
    b = np.asarray(bits, dtype=np.float64)
    return t.local_iters * (t.batch_size * m.activation_elems * b + 64.0) + 32.0 * m.device_params


def rate_bps(scenario: Scenario, bandwidth_hz: ArrayLike, power_w: ArrayLike) -> FloatArray:
    """Shannon rate ``R_n = B_n log2(1 + p_n g_n / (N0 B_n))`` in bit/s, shape (N,)."""
    bw = np.asarray(bandwidth_hz, dtype=np.float64)
    p = np.asarray(power_w, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = p * scenario.gain / (scenario.noise_w_per_hz * bw)
        r = bw * np.log1p(snr) / LN2
    return np.where((bw > 0) & (p > 0), r, 0.0)


def compute_time_s(scenario: Scenario) -> FloatArray:
    """Device compute time per round ``tau beta c_d / f_n``, shape (N,)."""
    t = scenario.training
    return (
        t.local_iters
        * t.batch_size
        * scenario.model.device_cycles_per_sample
        / scenario.devices.cpu_hz
    )


def compute_energy_j(scenario: Scenario) -> FloatArray:
    """Device compute energy per round ``kappa tau beta c_d f_n^2``, shape (N,)."""
    t = scenario.training
    f = scenario.devices.cpu_hz
    return (
        scenario.system.kappa
        * t.local_iters
        * t.batch_size
        * scenario.model.device_cycles_per_sample
        * f
        * f
    )


def server_time_s(scenario: Scenario) -> float:
    """Server compute time per device per round ``tau beta c_s / f_s``."""
    t = scenario.training
    return (
        t.local_iters
        * t.batch_size
        * scenario.model.server_cycles_per_sample
        / (scenario.system.server_cycles_per_s)
    )


def downlink_time_s(scenario: Scenario) -> float:
    """Downlink time per round: fp32 activation gradients plus the global device model."""
    t, m = scenario.training, scenario.model
    return (t.local_iters * t.batch_size * m.activation_elems * 32.0 + 32.0 * m.device_params) / (
        scenario.system.downlink_bps
    )


def fixed_time_s(scenario: Scenario) -> FloatArray:
    """Latency that does not depend on the decision: compute + server + downlink, shape (N,)."""
    return compute_time_s(scenario) + server_time_s(scenario) + downlink_time_s(scenario)


@dataclass(frozen=True, eq=False)
class Breakdown:
    """Per-device latency (s) and energy (J) of one round; every array has shape (N,)."""

    payload_bits: FloatArray
    rate_bps: FloatArray
    compute_s: FloatArray
    upload_s: FloatArray
    server_s: FloatArray
    downlink_s: FloatArray
    latency_s: FloatArray
    compute_j: FloatArray
    upload_j: FloatArray
    energy_j: FloatArray


def breakdown(scenario: Scenario, allocation: Allocation) -> Breakdown:
    """Per-device round latency ``T_n`` and energy ``E_n`` under ``allocation`` (``docs/formulation.md``, "One round")."""
    _check_shape(scenario, allocation)
    n = scenario.n_devices
    w = payload_bits(scenario, allocation.bits)
    if scenario.resource_blocks is not None and allocation.blocks is not None:
        from sflam_opt.blocks import block_rate_bps  # scipy.optimize: only for block scenarios

        r = block_rate_bps(scenario, allocation)
    else:
        r = rate_bps(scenario, allocation.bandwidth_hz, allocation.power_w)
    with np.errstate(divide="ignore"):
        up = np.where(r > 0, w / np.where(r > 0, r, 1.0), np.inf)
    comp = compute_time_s(scenario)
    srv = np.full(n, server_time_s(scenario))
    dl = np.full(n, downlink_time_s(scenario))
    ce = compute_energy_j(scenario)
    ue = allocation.power_w * up
    return Breakdown(w, r, comp, up, srv, dl, comp + up + srv + dl, ce, ue, ce + ue)


@dataclass(frozen=True)
class Reference:
    """The equal baseline that normalizes J: B_n = B/N, p_n = Pmax_n, b_n = max(L) ("The problem").

    ``J = K (w_T T + w_E E)`` with ``w_T = omega / (K0 T0)`` and ``w_E = (1 - omega) / (K0 E0)``.
    """

    rounds: float
    latency_s: float
    energy_j: float
    latency_weight: float

    @property
    def w_latency(self) -> float:
        """Weight ``omega / (K0 T0)`` of ``K T`` in J (1/s)."""
        return self.latency_weight / (self.rounds * self.latency_s)

    @property
    def w_energy(self) -> float:
        """Weight ``(1 - omega) / (K0 E0)`` of ``K E`` in J (1/J)."""
        return (1.0 - self.latency_weight) / (self.rounds * self.energy_j)

    def objective(
        self,
        rounds: ArrayLike,
        latency_s: ArrayLike,
        energy_j: ArrayLike,
    ) -> FloatArray | float:
        """``J = K (w_T T + w_E E)``, broadcasting over arrays.

        Computed as ratios to the reference so that the equal baseline scores exactly 1.0.
        """
        om = self.latency_weight
        k = np.asarray(rounds) / self.rounds
        val = k * (
            om * (np.asarray(latency_s) / self.latency_s)
            + (1.0 - om) * (np.asarray(energy_j) / self.energy_j)
        )
        return float(val) if np.ndim(val) == 0 else val


def equal_allocation(scenario: Scenario) -> Allocation:
    """The equal baseline: ``B/N`` each, full power, the largest allowed bit width.

    With resource blocks: round robin with an equal power split (``docs/formulation.md`` §10).
    """
    if scenario.resource_blocks is not None:
        from sflam_opt.blocks import equal_block_allocation  # scipy.optimize: see breakdown

        return equal_block_allocation(scenario)
    n = scenario.n_devices
    return Allocation(
        bits=np.full(n, scenario.bits.max, dtype=np.int64),
        bandwidth_hz=np.full(n, scenario.system.bandwidth_hz / n),
        power_w=scenario.devices.max_power_w.copy(),
        ids=scenario.devices.ids,
    )


#: The last scenario :func:`reference` saw (weakly) and its Reference: ``solve`` asks twice per
#: scenario (the solver, then :func:`evaluate`), ~60 ms each at N = 1e6. A Scenario is immutable.
_last_reference: tuple[weakref.ref[Scenario], Reference] | None = None


def reference(scenario: Scenario) -> Reference:
    """K0, T0 and E0 of the equal baseline. ``rounds`` is inf when eps is unreachable."""
    global _last_reference
    last = _last_reference
    if last is not None and last[0]() is scenario:
        return last[1]
    bd = breakdown(scenario, equal_allocation(scenario))
    k0 = rounds_needed(scenario, np.full(scenario.n_devices, scenario.bits.max))
    ref = Reference(
        float(k0),
        float(bd.latency_s.max()),
        float(bd.energy_j.sum()),
        scenario.objective.latency_weight,
    )
    _last_reference = (weakref.ref(scenario), ref)
    return ref


def objective(scenario: Scenario, allocation: Allocation, ref: Reference | None = None) -> float:
    """Normalized objective J (1 for the equal baseline, inf where eps is unreachable)."""
    ref = ref if ref is not None else reference(scenario)
    bd = breakdown(scenario, allocation)
    k = rounds_needed(scenario, allocation.bits)
    return float(ref.objective(k, bd.latency_s.max(), bd.energy_j.sum()))


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything ``sflam-opt evaluate`` reports about an allocation."""

    objective: float
    rounds: float
    rounds_ceil: float
    round_latency_s: float
    round_energy_j: float
    total_latency_s: float
    total_energy_j: float
    phi_q: float
    breakdown: Breakdown
    violations: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        """Scalar results as plain JSON-ready data."""
        return {
            "objective": self.objective,
            "rounds": self.rounds,
            "rounds_ceil": self.rounds_ceil,
            "round_latency_s": self.round_latency_s,
            "round_energy_j": self.round_energy_j,
            "total_latency_s": self.total_latency_s,
            "total_energy_j": self.total_energy_j,
            "phi_q": self.phi_q,
            "feasible": self.feasible,
            "violations": list(self.violations),
        }


def evaluate(scenario: Scenario, allocation: Allocation, tol: float = TOLERANCE) -> Evaluation:
    """Cost, rounds and constraint check of ``allocation`` on ``scenario``.

    Parameters
    ----------
    tol : float
        Relative tolerance for every constraint (1e-6 by default).

    Raises
    ------
    AllocationError
        If the allocation has the wrong number of devices or ids that differ from the scenario's.
    """
    bd = breakdown(scenario, allocation)
    pq = phi_q(scenario, allocation.bits)  # once: ~5 ms a call at N = 1e6
    k = float(rounds_needed(scenario, allocation.bits, phi_q_value=pq))
    t_round = float(bd.latency_s.max())
    e_round = float(bd.energy_j.sum())
    ref = reference(scenario)
    j = float(ref.objective(k, t_round, e_round)) if np.isfinite(ref.rounds) else float("nan")
    return Evaluation(
        objective=j,
        rounds=k,
        rounds_ceil=float(np.ceil(k)) if np.isfinite(k) else float("inf"),
        round_latency_s=t_round,
        round_energy_j=e_round,
        total_latency_s=k * t_round,
        total_energy_j=k * e_round,
        phi_q=float(pq),
        breakdown=bd,
        violations=violations(scenario, allocation, bd, tol, phi_q_value=pq),
    )


def violations(
    scenario: Scenario,
    allocation: Allocation,
    bd: Breakdown | None = None,
    tol: float = TOLERANCE,
    *,
    phi_q_value: float | None = None,
) -> list[str]:
    """Human-readable list of violated constraints (empty when feasible).

    ``bd`` and ``phi_q_value`` are ``breakdown(scenario, allocation)`` and
    ``phi_q(scenario, allocation.bits)`` if already computed.
    """
    bd = bd if bd is not None else breakdown(scenario, allocation)
    out: list[str] = []
    ids = scenario.devices.ids

    def devs(mask: NDArray[np.bool_]) -> str:
        idx = np.flatnonzero(mask)
        shown = ", ".join(repr(ids[i]) for i in idx[:5])
        return shown + (f" and {idx.size - 5} more" if idx.size > 5 else "")

    if scenario.resource_blocks is not None or allocation.blocks is not None:
        from sflam_opt.blocks import block_violations  # scipy.optimize: see breakdown

        out.extend(block_violations(scenario, allocation, tol))
    bw, p = allocation.bandwidth_hz, allocation.power_w
    total = float(bw.sum())
    cap = scenario.system.bandwidth_hz
    if total > cap * (1 + tol):
        out.append(
            f"bandwidth: sum of bandwidth_hz = {total:.9g} Hz exceeds "
            f"[system] bandwidth_hz = {cap:.9g} Hz"
        )
    if np.any(bw <= 0):
        out.append(f"bandwidth: bandwidth_hz must be > 0 (devices {devs(bw <= 0)})")
    if np.any(p <= 0):
        out.append(f"power: power_w must be > 0 (devices {devs(p <= 0)})")
    over = p > scenario.devices.max_power_w * (1 + tol)
    if np.any(over):
        out.append(f"power: power_w exceeds max_power_w (devices {devs(over)})")
    # kind="sort" compares against each of the few levels (~0.5 ms at N = 1e6); the default
    # picks a lookup table here that costs ~12 ms.
    bad_bits = ~np.isin(allocation.bits, scenario.bits.array, kind="sort")
    if np.any(bad_bits):
        out.append(
            f"bits: not in the allowed set {list(scenario.bits.levels)} (devices {devs(bad_bits)})"
        )
    c = scenario.constraints
    if c.round_deadline_s is not None:
        late = bd.latency_s > c.round_deadline_s * (1 + tol)
        if np.any(late):
            out.append(
                f"deadline: round latency {bd.latency_s.max():.6g} s exceeds "
                f"round_deadline_s = {c.round_deadline_s:g} s (devices {devs(late)})"
            )
    if c.device_energy_j is not None:
        hot = bd.energy_j > c.device_energy_j * (1 + tol)
        if np.any(hot):
            out.append(
                f"energy: device energy {bd.energy_j.max():.6g} J exceeds "
                f"device_energy_j = {c.device_energy_j:g} J (devices {devs(hot)})"
            )
    eps = scenario.convergence.epsilon
    pq = phi_q(scenario, allocation.bits) if phi_q_value is None else phi_q_value
    need = scenario.convergence.phi0 + pq
    if not eps > need:
        out.append(
            f"convergence: epsilon = {eps:g} <= phi0 + Phi_q(bits) = {need:.6g}; "
            f"use more bits (smallest workable epsilon is above {min_epsilon(scenario):.6g})"
        )
    return out


def _check_shape(scenario: Scenario, allocation: Allocation) -> None:
    n = scenario.n_devices
    if len(allocation) != n:
        raise AllocationError(
            f"allocation has {len(allocation)} devices but the scenario has {n}; "
            "solve this scenario to get a matching allocation"
        )
    ids = allocation.ids
    if (
        ids is not None
        and ids is not scenario.devices.ids
        and tuple(ids) != tuple(scenario.devices.ids)
    ):
        mism = next(
            i
            for i, (a, b) in enumerate(zip(allocation.ids, scenario.devices.ids, strict=True))
            if a != b
        )
        raise AllocationError(
            f"allocation device #{mism + 1} has id {allocation.ids[mism]!r} but "
            f"the scenario's is {scenario.devices.ids[mism]!r}; ids must match in order"
        )
