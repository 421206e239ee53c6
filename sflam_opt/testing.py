"""Seeded random problem instances for tests and benchmarks.

:func:`small_instance` draws a small scenario (3 or 4 devices) around the default scenario of
[docs/formulation.md](../docs/formulation.md) with varied channels, CPUs, power caps, data sizes,
latency weight, target, bit set and, for some seeds, a binding constraint. Small instances are the
ones the ``exact`` solver proves optimal quickly, so they are what the solvers are checked
against. The same seed always gives the same instance.
"""

from __future__ import annotations

import numpy as np

from sflam_opt.costs import breakdown, equal_allocation
from sflam_opt.scenario import Devices, Scenario

__all__ = ["small_instance"]


def small_instance(
    seed: int, *, rng: np.random.Generator | None = None, devices: int | None = None
) -> tuple[Scenario, str]:
    """A random 3-4 device instance and the kind of constraint it carries.

    Devices at 50-500 m, CPUs 0.5-2 GHz, Pmax 0.05-0.3 W, 100-1000 samples; latency weight,
    target epsilon, q and bandwidth drawn at random; a quarter use a random subset of the bit
    widths 1-16 (always with 16). About 15 % get a round deadline at 80 % of the equal baseline's
    round latency and 15 % a per-device energy cap at 90 % of its largest device energy. Both bind
    the equal split; most are satisfiable by optimizing, but some deadlines fall below the fastest
    possible round, so a solver must report those infeasible.

    Parameters
    ----------
    seed : int
        Seeds the default scenario the instance starts from and, when ``rng`` is None, the draws.
    rng : numpy.random.Generator, optional
        Stream for the draws; default ``np.random.default_rng([7, seed])``.
    devices : int, optional
        Fix the number of devices N instead of drawing 3 or 4.

    Returns
    -------
    (Scenario, str)
        The instance and ``"none"``, ``"deadline"`` or ``"energy"``.
    """
    rng = rng if rng is not None else np.random.default_rng([7, seed])
    n = int(devices or rng.integers(3, 5))
    base = Scenario.default(devices=n, seed=seed)
    dist = np.round(rng.uniform(50.0, 500.0, n), 2)
    devs = Devices(
        ids=tuple(range(n)),
        gain_db=np.zeros(n),  # derived from distance_m when the scenario is rebuilt
        cpu_hz=np.round(rng.uniform(0.5e9, 2e9, n), -3),
        max_power_w=np.round(rng.uniform(0.05, 0.3, n), 3),
        samples=rng.integers(100, 1000, n).astype(np.int64),
        distance_m=dist,
    )
    omega = float(np.round(rng.uniform(0.0, 1.0), 3))
    if rng.random() < 0.25:
        picks = rng.choice(np.arange(1, 17), size=int(rng.integers(2, 6)), replace=False)
        levels = sorted({int(b) for b in picks} | {16})
    else:
        levels = list(range(2, 17))
    scn = base.replace(
        devices=devs,
        bits=levels,
        objective={"latency_weight": omega},
        convergence={
            "epsilon": float(np.round(rng.uniform(0.3, 0.8), 3)),
            "q": float(np.round(rng.uniform(0.2, 3.0), 3)),
        },
        system={"bandwidth_hz": float(np.round(rng.uniform(5e6, 40e6), -3))},
    )
    kind = rng.random()
    if kind < 0.15:
        t_eq = float(breakdown(scn, equal_allocation(scn)).latency_s.max())
        return scn.replace(constraints={"round_deadline_s": float(np.round(0.8 * t_eq, 3))}), (
            "deadline"
        )
    if kind < 0.3:
        e_eq = breakdown(scn, equal_allocation(scn)).energy_j
        return scn.replace(constraints={"device_energy_j": float(np.round(0.9 * e_eq.max(), 3))}), (
            "energy"
        )
    return scn, "none"
