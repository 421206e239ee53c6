"""Online estimate of the convergence bound's constants from a run's own measurements.

docs/formulation.md §4.3 derives the rule; in short, after ``R`` rounds of measurements
(training loss ``F_k``, mean squared stochastic gradient norm ``g_k``, and, per device, the squared
gradient change ``delta`` that quantizing its activations at ``b`` bits causes):

- ``Phi0`` is an upper confidence value of the mean of ``g`` over the second half of the rounds:
  the noise floor the running mean settles to, since ``g`` only falls further as the true
  gradient shrinks;
- ``A = eta_eff tau S F_1 / (F_1 - F_hi)``: ``S = sum_k (g_k - Phi0)_+`` is the gradient mass
  above the floor spent so far, ``(F_1 - F_hi) / S`` the measured loss decrease per unit of it
  (``F_hi`` an upper confidence value of the late loss), and ``F_1 - F_inf <= F_1`` the whole
  loss gap (cross-entropy is >= 0): what is left to spend is at most ``F_hi / efficiency``;
- ``q`` is an upper confidence value of ``(2^b - 1)^2 delta`` over every device and round;
- ``eps = Phi0 + A / (eta_eff tau K_T)``, the bound at fp32 after the run's ``K_T`` rounds.

The confidence values are one-sided Student-t bounds on a mean, ``mean + t sd / sqrt(n)``, at
``confidence`` (0.95): the margin is the measured spread, never a tuned factor. The module needs
numpy and scipy only (no torch), so a host FL loop can use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sflam_opt.errors import SflamRuntimeError, SolverArgumentError

__all__ = [
    "MIN_FIT_ROUNDS",
    "WARMUP_BITS",
    "ConvergenceConstants",
    "ConvergenceEstimator",
    "UnsupportedFitError",
    "upper_confidence",
]

#: Fewest rounds a fit uses: the second half must hold two rounds for a spread, plus one more.
MIN_FIT_ROUNDS = 5
#: Uplink width of the fit rounds, for the trainer and every host loop (docs/formulation.md §4.3,
#: "Warm-up at 4 bits").
WARMUP_BITS = 4


def upper_confidence(samples: ArrayLike, confidence: float) -> float:
    """One-sided Student-t upper confidence value of the mean of ``samples`` (n >= 2).

    ``mean + t_{confidence, n-1} sd / sqrt(n)`` with the sample standard deviation ``sd``.
    """
    from scipy.stats import t as student_t  # lazily: scipy.stats takes ~0.3 s to import

    x = np.asarray(samples, dtype=np.float64).ravel()
    n = x.size
    if n < 2:
        raise SolverArgumentError(f"samples: need at least 2 values for a spread, got {n}")
    sd = float(np.std(x, ddof=1))
    return float(np.mean(x) + student_t.ppf(confidence, n - 1) * sd / math.sqrt(n))


class UnsupportedFitError(SflamRuntimeError):
    """The measured rounds cannot support a fit (docs/formulation.md §4.3, "When the data cannot
    support a fit"): the squared gradient norm has not come down to a floor yet.

    Keep a safe bit width and fit again after more rounds (with past rounds only).
    """


@dataclass(frozen=True)
class ConvergenceConstants:
    """Constants of the bound of docs/formulation.md §4, fitted by :class:`ConvergenceEstimator`.

    Attributes
    ----------
    a, phi0, q, epsilon : float
        ``A``, ``Phi0``, ``q`` and the target ``eps`` (dimensionless, the units of ``g``).
    fit_rounds : int
        Rounds 1..fit_rounds the fit used.
    details : dict
        The measured quantities behind them (floor mean and spread, loss decrease, gradient mass
        above the floor, number of quantization samples).
    """

    a: float
    phi0: float
    q: float
    epsilon: float
    fit_rounds: int
    details: dict[str, Any] = field(default_factory=dict)

    def as_convergence(self) -> dict[str, float]:
        """The scenario's ``[convergence]`` table: ``{"a", "phi0", "q", "epsilon"}``."""
        return {"a": self.a, "phi0": self.phi0, "q": self.q, "epsilon": self.epsilon}


class ConvergenceEstimator:
    """Collects per-round measurements of a run and fits the bound's constants to them.

    Parameters
    ----------
    step : float
        Effective step ``eta_eff = lr / (1 - momentum)`` (:func:`sflam_opt.bounds.effective_step`).
    local_iters : int
        ``tau``, local steps per round.
    confidence : float
        Level of the one-sided upper confidence values, in (0.5, 1).

    Examples
    --------
    >>> est = ConvergenceEstimator(step=0.3, local_iters=10)
    >>> for k in range(8):
    ...     est.add_round(loss=2.3 / (1 + k), grad_sq_norm=20 / (1 + k) + 2,
    ...                   quant_error=[0.01, 0.012], quant_bits=[2, 2])
    >>> c = est.fit(target_rounds=40)
    >>> c.phi0 > 2 and c.a > 0
    True
    """

    def __init__(self, *, step: float, local_iters: int, confidence: float = 0.95) -> None:
        if not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
            raise SolverArgumentError(f"step: invalid value {step!r}; give eta_eff > 0")
        if not (isinstance(local_iters, int | np.integer) and local_iters >= 1):
            raise SolverArgumentError(
                f"local_iters: invalid value {local_iters!r}; give a whole number >= 1"
            )
        if not 0.5 < confidence < 1:
            raise SolverArgumentError(
                f"confidence: invalid value {confidence!r}; give a level in (0.5, 1), e.g. 0.95"
            )
        self.step = float(step)
        self.local_iters = int(local_iters)
        self.confidence = float(confidence)
        self.loss: list[float] = []
        self.grad_sq_norm: list[float] = []
        #: Per round: the ``(2^b - 1)^2 delta`` samples of its devices, shape (devices,).
        self.q_samples: list[np.ndarray] = []

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return len(self.loss)

    def add_round(
        self,
        loss: float,
        grad_sq_norm: float,
        quant_error: ArrayLike | None = None,
        quant_bits: ArrayLike | None = None,
    ) -> None:
        """Record round ``rounds + 1``.

        Parameters
        ----------
        loss : float
            Mean training loss of the round (cross-entropy, >= 0).
        grad_sq_norm : float
            Mean squared norm of the whole-model stochastic gradient over the round's steps.
        quant_error : array_like, shape (n,), optional
            Per measuring device: mean squared difference between the gradient computed from its
            activations quantized at ``quant_bits`` and from the unquantized ones (units of
            ``grad_sq_norm``). Omit in rounds without a measurement.
        quant_bits : array_like of int, shape (n,), optional
            The bit width each ``quant_error`` was measured at (1..16).
        """
        k = self.rounds + 1
        for name, value in (("loss", loss), ("grad_sq_norm", grad_sq_norm)):
            if not isinstance(value, int | float | np.integer | np.floating):
                raise SolverArgumentError(f"{name}: round {k} is {value!r}, not a number")
            if not math.isfinite(value):
                raise SolverArgumentError(
                    f"{name}: round {k} measured {value}; measurements must be finite "
                    "(a diverged round cannot calibrate the bound)"
                )
            if value < 0:
                raise SolverArgumentError(
                    f"{name}: round {k} is {value}, negative; give a squared norm / loss >= 0"
                )
        self.q_samples.append(_q_samples(k, quant_error, quant_bits))
        self.loss.append(float(loss))
        self.grad_sq_norm.append(float(grad_sq_norm))

    def extend(
        self,
        loss: Sequence[float],
        grad_sq_norm: Sequence[float],
        quant_error: Sequence[ArrayLike | None] | None = None,
        quant_bits: Sequence[ArrayLike | None] | None = None,
    ) -> None:
        """Record several rounds at once (each argument one entry per round)."""
        n = len(loss)
        quant_error = [None] * n if quant_error is None else list(quant_error)
        quant_bits = [None] * n if quant_bits is None else list(quant_bits)
        for name, seq in (
            ("grad_sq_norm", grad_sq_norm),
            ("quant_error", quant_error),
            ("quant_bits", quant_bits),
        ):
            if len(seq) != n:
                raise SolverArgumentError(
                    f"{name}: has {len(seq)} rounds but loss has {n}; give one entry per round"
                )
        for row in zip(loss, grad_sq_norm, quant_error, quant_bits, strict=True):
            self.add_round(*row)

    def support(self, rounds: int | None = None) -> str | None:
        """Why rounds ``1..rounds`` cannot support a fit, or ``None`` when they can.

        The rule's premise is that the squared gradient norm ``g`` has fallen towards its floor:
        its mean over the first half of the rounds must exceed its mean over the second half, and
        some of it must lie above ``Phi0`` (so that ``A > 0`` and the target is above the floor;
        docs/formulation.md §4.3). A rising or flat trajectory has not measured the transient
        that ``A`` prices.

        Raises
        ------
        SolverArgumentError
            Fewer than :data:`MIN_FIT_ROUNDS` rounds, or more than are recorded.
        """
        r = self._check_rounds(rounds)
        g = np.asarray(self.grad_sq_norm[:r])
        early, late = g[: r // 2], g[r // 2 :]
        phi0 = upper_confidence(late, self.confidence)
        if float(np.mean(early)) > float(np.mean(late)) and bool((g > phi0).any()):
            return None
        return (
            f"the squared gradient norm has not fallen over rounds 1..{r}: its mean over rounds "
            f"1..{r // 2} is {np.mean(early):.4g} against {np.mean(late):.4g} over rounds "
            f"{r // 2 + 1}..{r}, and {np.max(g):.4g} at most against the floor's upper value "
            f"{phi0:.4g}; keep a safe bit width and fit again after more rounds"
        )

    def _check_rounds(self, rounds: int | None) -> int:
        r = self.rounds if rounds is None else int(rounds)
        if not MIN_FIT_ROUNDS <= r <= self.rounds:
            raise SolverArgumentError(
                f"rounds: cannot fit on {r} rounds with {self.rounds} recorded; the fit needs "
                f"at least {MIN_FIT_ROUNDS} measured rounds"
            )
        return r

    def fit(
        self, rounds: int | None = None, *, target_rounds: int, q: float | None = None
    ) -> ConvergenceConstants:
        """Constants from rounds ``1..rounds`` only (default: every round recorded).

        Parameters
        ----------
        rounds : int, optional
            Use the first ``rounds`` rounds; a refit at round ``k`` passes ``k - 1`` so that the
            constants in force at ``k`` never saw round ``k`` or later.
        target_rounds : int
            ``K_T`` of ``eps = Phi0 + A / (eta_eff tau K_T)``: the run's length.
        q : float, optional
            Use this ``q`` instead of the measured one (e.g. 0 for a host that never quantizes).

        Raises
        ------
        SolverArgumentError
            Fewer than :data:`MIN_FIT_ROUNDS` rounds, or fewer than 2 quantization samples.
        UnsupportedFitError
            The rounds cannot support a fit (:meth:`support` says why): fit again later.
        """
        r = self._check_rounds(rounds)
        if not (isinstance(target_rounds, int | np.integer) and target_rounds >= 1):
            raise SolverArgumentError(
                f"target_rounds: invalid value {target_rounds!r}; give a whole number >= 1"
            )
        reason = self.support(r)
        if reason is not None:
            raise UnsupportedFitError(f"calibration: {reason}")
        g = np.asarray(self.grad_sq_norm[:r])
        loss = np.asarray(self.loss[:r])
        late = slice(r // 2, r)
        phi0 = upper_confidence(g[late], self.confidence)
        # > 0 (support): some round is above phi0, so A > 0 and eps > phi0.
        excess = float(np.clip(g - phi0, 0.0, None).sum())
        start = float(loss[0])
        late_loss = upper_confidence(loss[late], self.confidence)
        # Floor of the decrease: the late loss's own standard error, the smallest decrease the
        # measurements resolve. A run that has not visibly learned gets a large, safe A.
        resolution = float(np.std(loss[late], ddof=1) / math.sqrt(loss[late].size))
        decrease = max(start - late_loss, resolution, 1e-12 * max(start, 1.0))
        # S + F_hi / e with e = decrease / S: the mass spent plus what the rest of the gap costs.
        a = self.step * self.local_iters * excess * (decrease + late_loss) / decrease
        q = self._fit_q(r) if q is None else float(q)
        epsilon = phi0 + a / (self.step * self.local_iters * int(target_rounds))
        details = {
            "confidence": self.confidence,
            "floor_mean": float(np.mean(g[late])),
            "floor_sd": float(np.std(g[late], ddof=1)),
            "excess": excess,
            "loss_start": start,
            "loss_late_upper": late_loss,
            "loss_decrease": decrease,
            "q_samples": int(sum(s.size for s in self.q_samples[:r])),
            "target_rounds": int(target_rounds),
        }
        return ConvergenceConstants(a, phi0, q, epsilon, r, details)

    def _fit_q(self, r: int) -> float:
        samples = [s for s in self.q_samples[:r] if s.size]
        values = np.concatenate(samples) if samples else np.zeros(0)
        if values.size < 2:
            raise SolverArgumentError(
                f"quant_error: rounds 1..{r} hold {values.size} quantization measurements; q "
                "needs at least 2 (devices x rounds)"
            )
        return max(upper_confidence(values, self.confidence), 0.0)


def _q_samples(k: int, quant_error: ArrayLike | None, quant_bits: ArrayLike | None) -> np.ndarray:
    """Round ``k``'s ``(2^b - 1)^2 delta`` values, validated."""
    if quant_error is None and quant_bits is None:
        return np.zeros(0)
    if quant_error is None or quant_bits is None:
        missing = "quant_bits" if quant_bits is None else "quant_error"
        raise SolverArgumentError(
            f"{missing}: round {k} gives one of quant_error and quant_bits without the other"
        )
    err = np.asarray(quant_error, dtype=np.float64).ravel()
    bits = np.asarray(quant_bits, dtype=np.float64).ravel()
    if err.shape != bits.shape:
        raise SolverArgumentError(
            f"quant_bits: round {k} has {bits.size} widths for {err.size} quant_error values; "
            "give one width per value"
        )
    if not np.isfinite(err).all():
        raise SolverArgumentError(f"quant_error: round {k} has a non-finite value")
    if (err < 0).any():
        raise SolverArgumentError(f"quant_error: round {k} has a negative squared norm")
    if not ((bits >= 1) & (bits <= 16) & (bits == np.round(bits))).all():
        raise SolverArgumentError(f"quant_bits: round {k} has a width outside 1..16")
    return np.square(np.exp2(bits) - 1.0) * err
