"""One-line status messages of the solvers: what binds, and the relaxation that lifts it.

Every infeasibility message has the form ``"<topic>: <key> = <value> <unit> <problem>; raise it
to at least <need> <unit>"`` (or ``"raise it above"`` for a strict bound), built by
:func:`relax_message`, so that a user (and a test) can read the number to put in the scenario.
Printed relaxations are rounded *up* (:func:`fmt_up`): the printed value always suffices.
"""

from __future__ import annotations

import numpy as np

from sflam_opt.bounds import margin
from sflam_opt.costs import payload_bits, reference
from sflam_opt.numeric import FloatArray, IntArray
from sflam_opt.scenario import Scenario
from sflam_opt.solvers.kernel.params import (
    INFEASIBLE_DEADLINE,
    INFEASIBLE_ENERGY,
    INFEASIBLE_TARGET,
    ZERO_LATENCY_WEIGHT_RTOL,
    kernel_params,
    shannon_energy,
)

__all__ = [
    "ZERO_LATENCY_NOTE",
    "bandwidth_alternative",
    "deadline_message",
    "energy_cap_message",
    "fmt_up",
    "infeasibility_message",
    "relax_message",
]

#: Appended to a success message when J has no minimizer (latency weight 0, no deadline).
ZERO_LATENCY_NOTE = (
    f"; latency weight 0 without a deadline: round time stopped where J is within "
    f"{ZERO_LATENCY_WEIGHT_RTOL:g} of its infimum"
)

# Message topic of each relaxable scenario key.
_TOPIC = {"round_deadline_s": "deadline", "device_energy_j": "energy", "bandwidth_hz": "bandwidth"}


def fmt_up(x: float, digits: int = 6) -> str:
    """``x`` to ``digits`` significant digits rounded *up*: a printed relaxation must suffice."""
    x = float(x)
    if not np.isfinite(x) or x <= 0:
        return f"{x:g}"
    q = 10.0 ** (np.floor(np.log10(x)) - digits + 1)
    return f"{np.ceil(x / q) * q:.{digits}g}"


def relax_message(
    key: str,
    value: float,
    unit: str,
    problem: str,
    need: float,
    *,
    above: bool = False,
    also: str = "",
) -> str:
    """``"<topic>: key = value unit problem; raise it to at least need unit<also>"``.

    Parameters
    ----------
    key : str
        Scenario key that binds (``"round_deadline_s"``, ``"device_energy_j"``, ...).
    value : float
        Its current value.
    unit : str
        Its unit (``"s"``, ``"J"``, ``"Hz"``).
    problem : str
        Why the value does not work, e.g. ``"is below the fastest possible round 2.1 s"``.
    need : float
        The smallest value that works (printed rounded up).
    above : bool
        The bound is strict: say "raise it above" instead of "raise it to at least".
    also : str
        An alternative relaxation appended as is (see :func:`bandwidth_alternative`).
    """
    verb = "above" if above else "to at least"
    topic = _TOPIC.get(key, key)
    return (
        f"{topic}: {key} = {value:g} {unit} {problem}; raise it {verb} {fmt_up(need)} {unit}{also}"
    )


def bandwidth_alternative(need_hz: float, *, above: bool = False) -> str:
    """``", or raise bandwidth_hz to at least X Hz"`` (empty when no finite band would do)."""
    if not np.isfinite(need_hz):
        return ""
    return f", or raise bandwidth_hz {'above' if above else 'to at least'} {fmt_up(need_hz)} Hz"


def deadline_message(deadline_s: float, fastest_s: float, context: str, also: str = "") -> str:
    """The deadline is below the fastest round ``fastest_s`` possible under ``context``."""
    return relax_message(
        "round_deadline_s",
        deadline_s,
        "s",
        f"is below the fastest possible round {fmt_up(fastest_s)} s {context}",
        fastest_s,
        also=also,
    )


def energy_cap_message(scenario: Scenario, need_j: FloatArray, context: str) -> str:
    """The energy cap is not above the least energy ``need_j`` (N,) of some device, J."""
    k = int(np.argmax(need_j))
    return relax_message(
        "device_energy_j",
        float(scenario.constraints.device_energy_j),  # type: ignore[arg-type]
        "J",
        f"is not above the least energy {fmt_up(need_j[k])} J of device "
        f"{scenario.devices.ids[k]!r} {context}",
        float(need_j[k]),
        above=True,
    )


def infeasibility_message(scenario: Scenario, bits: IntArray, code: int, t_min: float) -> str:
    """One-line explanation of a row status code (:mod:`.params`) at fixed ``bits`` (N,)."""
    if code == INFEASIBLE_TARGET:
        return (
            f"convergence: epsilon = {scenario.convergence.epsilon:g} is not above "
            f"phi0 + Phi_q(bits) = {scenario.convergence.epsilon - margin(scenario, bits):.6g} "
            "at these bits; use more bits"
        )
    if code == INFEASIBLE_ENERGY:
        prm = kernel_params(scenario, reference(scenario))
        need = prm.compute_j + shannon_energy(prm, payload_bits(scenario, bits))
        return energy_cap_message(
            scenario, need, "at these bits (compute + Shannon-limit upload energy)"
        )
    if code == INFEASIBLE_DEADLINE:
        return deadline_message(
            float(scenario.constraints.round_deadline_s),  # type: ignore[arg-type]
            t_min,
            "at these bits",
        )
    raise ValueError(f"unknown status code {code}")
