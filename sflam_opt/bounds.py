"""Convergence bound of SFL with quantized uplink activations and the rounds it implies.

``docs/formulation.md``, section "Convergence bound and rounds needed": after K rounds,
``(1/K) sum_k E||grad F(w_k)||^2 <= A / (eta tau K) + Phi0 + Phi_q(b)`` with
``Phi_q(b) = sum_n rho_n q / (2^{b_n} - 1)^2``, so reaching a target eps takes
``K(b) = A / (eta tau (eps - Phi0 - Phi_q(b)))`` rounds, defined only when eps > Phi0 + Phi_q(b).

``eta`` is the scenario's ``[training] learning_rate``. The analysis is for plain SGD; for SGD with
heavy-ball momentum ``mu`` the step that plays its role is the effective step ``eta / (1 - mu)``
(:func:`effective_step`), the steady-state displacement per unit gradient, and the trainer writes
that into the scenarios it builds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.numeric import FloatArray
from sflam_opt.scenario import Scenario

__all__ = [
    "bound",
    "effective_step",
    "margin",
    "min_epsilon",
    "phi_q",
    "quantization_penalty",
    "rounds_needed",
    "target_infeasibility",
]


def effective_step(lr: float, momentum: float = 0.0) -> float:
    """Effective SGD step ``lr / (1 - momentum)`` of heavy-ball momentum, ``momentum`` in [0, 1).

    With a constant gradient ``g`` the momentum buffer converges to ``g / (1 - momentum)``, so each
    step moves the weights by ``lr g / (1 - momentum)``: the ``eta`` of the bound's ``A / (eta tau
    K)`` term for momentum SGD.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return float(lr) / (1.0 - float(momentum))


def quantization_penalty(bits: ArrayLike) -> FloatArray:
    """Per-device factor ``1 / (2^b - 1)^2`` of the quantization term (q and rho_n excluded)."""
    b = np.asarray(bits, dtype=np.float64)
    return 1.0 / np.square(np.exp2(b) - 1.0)


def phi_q(scenario: Scenario, bits: ArrayLike) -> float | FloatArray:
    """Quantization term ``Phi_q(b) = sum_n rho_n q / (2^{b_n} - 1)^2``.

    Parameters
    ----------
    bits : array_like, shape (N,) or (..., N)
        Bit widths; leading axes are batches of bit vectors.

    Returns
    -------
    float or ndarray, shape (...)
    """
    pen = _penalty_by_lookup(bits)
    val = scenario.convergence.q * (pen @ scenario.rho)
    return float(val) if np.ndim(val) == 0 else val


#: Bit vectors at least this long take their penalties from a per-width table.
LOOKUP_MIN_SIZE = 4096
#: Widths the table covers (2^b - 1 is exact in float64 up to 53 bits).
LOOKUP_MAX_BITS = 53


def _penalty_by_lookup(bits: ArrayLike) -> FloatArray:
    """:func:`quantization_penalty` of long integer vectors by table look-up, same values.

    At N = 1e6 the elementwise ``exp2``, square and divide cost ~8 ms a call and a solve makes
    seven; the penalty of each width is the same double either way (2^b - 1 is exact, the rest
    IEEE-rounded), so gathering from a table of the widths is bit-identical and ~10x cheaper.
    """
    b = np.asarray(bits)
    if b.dtype.kind not in "iu" or b.size < LOOKUP_MIN_SIZE:
        return quantization_penalty(b)
    lo, hi = int(b.min()), int(b.max())
    if lo < 1 or hi > LOOKUP_MAX_BITS:
        return quantization_penalty(b)
    with np.errstate(divide="ignore"):  # width 0 heads the table, never looked up
        table = quantization_penalty(np.arange(hi + 1))
    return table[b]


def margin(
    scenario: Scenario, bits: ArrayLike, *, phi_q_value: ArrayLike | None = None
) -> float | FloatArray:
    """``eps - Phi0 - Phi_q(b)``; positive exactly when the target is reachable with ``bits``.

    ``phi_q_value``: ``phi_q(scenario, bits)`` if already computed (``bits`` is then unused).
    """
    c = scenario.convergence
    return c.epsilon - c.phi0 - (phi_q(scenario, bits) if phi_q_value is None else phi_q_value)


def rounds_needed(
    scenario: Scenario, bits: ArrayLike, *, phi_q_value: ArrayLike | None = None
) -> float | FloatArray:
    """Real-valued rounds ``K(b)`` to reach eps; ``inf`` where the target is unreachable.

    ``phi_q_value``: ``phi_q(scenario, bits)`` if already computed (``bits`` is then unused).
    """
    c, t = scenario.convergence, scenario.training
    m = np.asarray(margin(scenario, bits, phi_q_value=phi_q_value), dtype=np.float64)
    with np.errstate(divide="ignore"):
        k = np.where(
            m > 0, c.a / (t.learning_rate * t.local_iters * np.where(m > 0, m, 1.0)), np.inf
        )
    return float(k) if k.ndim == 0 else k


def bound(scenario: Scenario, bits: ArrayLike, rounds: ArrayLike) -> FloatArray | float:
    """Right side ``A / (eta tau K) + Phi0 + Phi_q(b)`` of the bound after ``rounds`` rounds."""
    c, t = scenario.convergence, scenario.training
    k = np.asarray(rounds, dtype=np.float64)
    val = c.a / (t.learning_rate * t.local_iters * k) + c.phi0 + phi_q(scenario, bits)
    return float(val) if np.ndim(val) == 0 else val


def min_epsilon(scenario: Scenario) -> float:
    """``Phi0 + Phi_q(max L)``: any target eps strictly above this is reachable."""
    n = scenario.n_devices
    return scenario.convergence.phi0 + float(phi_q(scenario, np.full(n, scenario.bits.max)))


def target_infeasibility(scenario: Scenario) -> str | None:
    """A one-line explanation if eps cannot be reached even at the largest bit width, else None."""
    need = min_epsilon(scenario)
    eps = scenario.convergence.epsilon
    if eps > need:
        return None
    return (
        f"convergence target unreachable: [convergence] epsilon = {eps:g} must exceed "
        f"phi0 + Phi_q(max bits = {scenario.bits.max}) = {need:.6g}; raise epsilon above "
        f"{need:.6g}, lower phi0/q, or allow more bits"
    )
