"""The cost model of a plain federated-learning round, in the formulation's terms.

In FL (FedAvg and its relatives) each device trains locally, then uploads one model update of
``d`` values, quantized at ``b_n`` bits over its range. That payload is the formulation's
``W_n(b_n) = tau (beta d b_n + 64) + 32 M`` with ``tau = 1``, ``beta = 1``, ``d`` = the update
size and ``M = 0`` (no separate fp32 model upload), so the whole model of
``docs/formulation.md`` applies unchanged:

- device compute ``tau beta c_d / f_n`` is the local training, ``c_d`` cycles per round;
- server compute is left out (``c_s = 0``: averaging is negligible next to training);
- the downlink ``(tau beta d 32 + 32 M) / R_dl = 32 d / R_dl`` is the fp32 global model;
- the bound's ``Phi_q(b)`` is the update's quantization error, so ``A``, ``Phi0``, ``q`` and
  ``eps`` should be calibrated for the FL update, not copied from the split default.

Each array of the update is quantized with its own range, so a ``k``-array update carries
``64 (k - 1)`` range bits more than ``W_n``; the real byte count is what the strategy reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numpy.typing import ArrayLike

from sflam_opt.errors import ScenarioError
from sflam_opt.scenario import Scenario
from sflam_opt.validation import check_int, check_real

__all__ = ["update_scenario"]

_FIXED = {
    "model": (
        "activation_elems",
        "server_cycles_per_sample",
        "device_params",
        "device_cycles_per_sample",
    ),
    "training": ("batch_size", "local_iters"),
}


def update_scenario(
    update_size: int,
    *,
    gain_db: ArrayLike,
    ids: Sequence[Any] | None = None,
    cpu_hz: ArrayLike = 1.0e9,
    max_power_w: ArrayLike = 0.2,
    samples: ArrayLike = 500,
    device_cycles: float = 0.0,
    **sections: Any,
) -> Scenario:
    """A scenario whose devices upload one quantized model update per round.

    Parameters
    ----------
    update_size : int
        Values in one update (the model's parameter count), ``d``.
    gain_db : array_like, shape (N,)
        Each device's nominal channel power gain, dB (the strategy replaces it every round with
        what the node reports).
    ids : sequence, optional
        Device ids (whole numbers or strings); default ``0 .. N-1``.
    cpu_hz, max_power_w, samples : float or array_like, shape (N,)
        Device CPU frequency (cycles/s), transmit power cap (W), local data set size.
    device_cycles : float
        CPU cycles of one round of local training on a device (>= 0), ``c_d``.
    **sections
        Section overrides as in :meth:`Scenario.replace`, e.g. ``system={"bandwidth_hz": 1e6}``,
        ``convergence={...}``, ``bits=[2, 4, 8]``. The model and training keys that define the
        FL payload (``d``, ``c_s``, ``M``, ``c_d``, ``beta``, ``tau``) are set here and cannot be
        overridden.

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        One line naming the bad field.
    """
    d = check_int(update_size, "update_size", minimum=1, error=ScenarioError)
    c_d = check_real(device_cycles, "device_cycles", lower=0.0, error=ScenarioError)
    for section, keys in _FIXED.items():
        given = dict(sections.get(section) or {})
        clash = [k for k in keys if k in given]
        if clash:
            raise ScenarioError(
                f"update_scenario(): {section}.{clash[0]} is fixed by the FL update model; use "
                "update_size= / device_cycles= instead"
            )
    sections["model"] = {
        **dict(sections.get("model") or {}),
        "activation_elems": d,
        "device_cycles_per_sample": c_d,
        "server_cycles_per_sample": 0.0,
        "device_params": 0,
    }
    sections["training"] = {
        **dict(sections.get("training") or {}),
        "batch_size": 1,
        "local_iters": 1,
    }
    return Scenario.from_arrays(
        gain_db=gain_db,
        ids=ids,
        cpu_hz=cpu_hz,
        max_power_w=max_power_w,
        samples=samples,
        **sections,
    )
