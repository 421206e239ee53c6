"""Scenario constants of the continuous block, per scenario and per batch of bit vectors.

See ``docs/formulation.md``, sections "One round" and "Structure that the solvers use". The
kernel works on *rows*: each row is one bit vector of the N devices, so per-device arrays of a
batch have shape (M, N) and per-row scalars shape (M,).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sflam_opt.costs import Reference, compute_energy_j, fixed_time_s
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.lambertw import phi_inverse

__all__ = [
    "FAILED",
    "INFEASIBLE_DEADLINE",
    "INFEASIBLE_ENERGY",
    "INFEASIBLE_TARGET",
    "OK",
    "ZERO_LATENCY_WEIGHT_RTOL",
    "KernelParams",
    "RowConstants",
    "kernel_params",
    "row_constants",
    "shannon_energy",
]

#: When the latency weight is 0 and there is no deadline, J decreases toward its infimum as
#: T -> inf; the block stops at the first round time whose J is within this factor of it.
ZERO_LATENCY_WEIGHT_RTOL = 1e-6

# Row status codes of the batched solver (:attr:`RowSolutions.status`).
OK = 0
INFEASIBLE_ENERGY = 1  # device energy cap at or below compute + Shannon-limit upload energy
INFEASIBLE_DEADLINE = 2  # fastest round at these bits is later than the deadline
INFEASIBLE_TARGET = 3  # eps unreachable with these bits (K = inf)
FAILED = 4  # numerical failure: no finite optimum although the row is feasible


@dataclass(frozen=True, eq=False)
class KernelParams:
    """Scenario constants used by the continuous block; arrays have shape (N,).

    Attributes
    ----------
    n0 : float
        Noise power spectral density N0, W/Hz.
    gain : ndarray
        Linear channel gains g_n.
    pmax : ndarray
        Power caps, W.
    fixed_s : ndarray
        Round time spent outside the upload (compute, server, downlink), s.
    compute_j : ndarray
        Compute energy per round, J.
    budget_j : ndarray or None
        Upload energy budget ``device_energy_j - compute_j`` (None without an energy cap), J.
    deadline_s : float or None
        Round deadline, s.
    bandwidth_hz : float
        Uplink band B, Hz.
    w_t, w_e : float
        Weights of ``K T`` and ``K E`` in J (0 when the reference itself is unreachable).
    """

    n0: float
    gain: FloatArray
    pmax: FloatArray
    fixed_s: FloatArray
    compute_j: FloatArray
    budget_j: FloatArray | None
    deadline_s: float | None
    bandwidth_hz: float
    w_t: float
    w_e: float

    @cached_property
    def n0g(self) -> FloatArray:
        """``N0 / g_n``, shape (N,): ``a_n = N0 u_n / g_n`` is ``u_n`` times this."""
        return self.n0 / self.gain

    @cached_property
    def compute_j_total(self) -> float:
        """``compute_j.sum()``: the round's compute energy, J (computed once per scenario)."""
        return self.compute_j.sum()


def kernel_params(scenario: Scenario, ref: Reference) -> KernelParams:
    """The constants of ``scenario`` with the J weights of ``ref`` (``costs.reference``)."""
    cap = scenario.constraints.device_energy_j
    ce = compute_energy_j(scenario)
    return KernelParams(
        n0=scenario.noise_w_per_hz,
        gain=scenario.gain,
        pmax=scenario.devices.max_power_w.astype(np.float64),
        fixed_s=fixed_time_s(scenario),
        compute_j=ce,
        budget_j=None if cap is None else cap - ce,
        deadline_s=scenario.constraints.round_deadline_s,
        bandwidth_hz=float(scenario.system.bandwidth_hz),
        w_t=float(ref.w_latency) if np.isfinite(ref.rounds) else 0.0,
        w_e=float(ref.w_energy) if np.isfinite(ref.rounds) else 0.0,
    )


@dataclass(frozen=True, eq=False)
class RowConstants:
    """Constants of a batch of bit vectors that do not depend on the round time.

    Attributes
    ----------
    w : ndarray, shape (M, N)
        Payload bits W.
    shannon : ndarray, shape (M, N)
        Shannon-limit upload energy ``S = N0 W ln2 / g``, J.
    pmax_over_s : ndarray, shape (M, N)
        ``Pmax / S``: the power cap's ratio ``r_p = Pmax u / S`` per second of upload, 1/s.
    r_e : ndarray, shape (M, N)
        Energy cap ratio ``budget / S`` (inf without a cap).
    x_e : ndarray, shape (M, N)
        ``phi^{-1}(r_e)``: the largest x the energy cap allows (inf without a cap).
    t_lb : ndarray, shape (M,)
        Round time at which some device's full-power rate with unlimited band is just enough, s.
    """

    w: FloatArray
    shannon: FloatArray
    pmax_over_s: FloatArray
    r_e: FloatArray
    x_e: FloatArray
    t_lb: FloatArray

    def take(self, idx: IntArray) -> RowConstants:
        """The rows ``idx`` as a new batch."""
        return RowConstants(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def shannon_energy(prm: KernelParams, w: FloatArray) -> FloatArray:
    """``S_n = N0 W_n ln2 / g_n``: upload energy with unlimited bandwidth and time, J."""
    return prm.n0 * w * LN2 / prm.gain


def row_constants(prm: KernelParams, w: FloatArray) -> RowConstants:
    """The round-time independent constants of payload rows ``w`` (M, N)."""
    s = shannon_energy(prm, w)
    if prm.budget_j is None:
        r_e = x_e = np.broadcast_to(np.inf, w.shape)  # read-only: no (M, N) array to fill
    else:
        r_e = prm.budget_j / s
        x_e = phi_inverse(r_e)
    # Full power, unlimited bandwidth: rate Pmax g / (N0 ln2), so u >= S / Pmax.
    t_lb = np.max(prm.fixed_s + s / prm.pmax, axis=-1)
    return RowConstants(w, s, prm.pmax / s, r_e, x_e, t_lb)
