"""Shared reference scenarios reused by every solver's tests (CVXPY-style shared fixtures).

All are generated from fixed seeds so every test run sees the same instances.
"""

from __future__ import annotations

import numpy as np

from sflam_opt.scenario import Scenario
from sflam_opt.testing import small_instance


def two_device() -> Scenario:
    """The hand-worked 2-device scenario of tests/test_costs.py (round numbers)."""
    text = """
[system]
bandwidth_hz = 1e6
noise_dbm_per_hz = -174.0
downlink_bps = 1e8
server_cycles_per_s = 1e12
kappa = 1e-28

[model]
activation_elems = 1000
device_cycles_per_sample = 1e6
server_cycles_per_sample = 1e9
device_params = 1000

[training]
batch_size = 10
local_iters = 2
learning_rate = 0.1

[convergence]
a = 2.0
phi0 = 0.1
q = 1.0
epsilon = 0.5

[bits]
levels = [2, 4, 8]

[objective]
latency_weight = 0.5

[[device]]
id = "a"
gain_db = -100.0
cpu_hz = 1e9
max_power_w = 0.1
samples = 100

[[device]]
id = "b"
gain_db = -110.0
cpu_hz = 2e9
max_power_w = 0.2
samples = 300
"""
    return Scenario.from_toml_string(text, source="two_device")


def random_small(seed: int, devices: int | None = None) -> Scenario:
    """A random 3-4 device instance: default model, varied channels, weights and constraints.

    About a third get a round deadline (0.8x the equal baseline's round) or a per-device energy cap
    (0.9x the equal baseline's largest device energy), which the equal split violates. Most of these
    are satisfiable by optimizing; with seeds 0..49, 5 deadlines lie below the fastest possible
    round, so every solver must report them "infeasible" (agreeing with `exact`). The bit set is the
    default range or a random subset of it.
    """
    scn, _ = small_instance(seed, rng=np.random.default_rng(10_000 + seed), devices=devices)
    return scn


def small_set(count: int = 50, start: int = 0) -> list[Scenario]:
    """``count`` random small instances with seeds ``start .. start+count-1``."""
    return [random_small(s) for s in range(start, start + count)]


def named() -> dict[str, Scenario]:
    """Named reference scenarios for solver tests."""
    d10 = Scenario.default(devices=10, seed=0)
    return {
        "two_device": two_device(),
        "default10": d10,
        "latency_only": d10.replace(objective={"latency_weight": 1.0}),
        "energy_only": d10.replace(objective={"latency_weight": 0.0}),
        "deadline": d10.replace(constraints={"round_deadline_s": 175.0}),  # active: free T = 180 s
        "energy_cap": d10.replace(constraints={"device_energy_j": 24.5}),  # active: free max 25.2 J
        "few_levels": d10.replace(bits=[4, 8, 16]),
        # Unsatisfiable: below the fastest possible round (172.4 s) / the least energy needed.
        "deadline_infeasible": d10.replace(constraints={"round_deadline_s": 90.0}),
        "energy_cap_infeasible": d10.replace(constraints={"device_energy_j": 20.0}),
    }


def faded(n: int, seed: int) -> Scenario:
    """``Scenario.default(n, 0)`` with one Rayleigh draw per device: gain_db + 10 log10(Exp(1)).

    The same draws as the faded-channels benchmark (``benchmarks/solve_faded.py``).
    """
    scn = Scenario.default(devices=n, seed=0)
    rng = np.random.default_rng(seed)
    gain = scn.devices.gain_db + 10.0 * np.log10(rng.exponential(size=n))
    return scn.with_gains(dict(zip(scn.devices.ids, gain.tolist(), strict=True)))
