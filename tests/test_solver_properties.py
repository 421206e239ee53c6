"""Every registered solver on random valid scenarios: a status, never an exception or a warning.

Scenarios are drawn (seeded) across the physical ranges the solvers are made to handle, with the
degenerate cases mixed in: one bit width, one device, equal devices, latency weight 0 and 1, a
tight deadline and a tight energy cap. For each solver:

* ``solve`` returns one of :data:`STATUSES` and raises nothing (RuntimeWarnings are errors here);
* a numerical failure is "failed", never "infeasible": a solver says "infeasible" only when the
  feasibility diagnosis of the whole problem agrees (for the restricted baselines, only when
  the unrestricted problem is infeasible or the baseline's own restriction binds);
* a returned allocation checks out with :func:`sflam_opt.costs.evaluate`, with no violation when
  the status is a success.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from sflam_opt.blocks import with_resource_blocks
from sflam_opt.costs import equal_allocation, evaluate
from sflam_opt.scenario import Devices, Scenario
from sflam_opt.solvers import STATUSES, available_solvers, solve
from sflam_opt.solvers.kernel import diagnose

#: Ranges the property test draws from (per device unless noted): the whole valid range that
#: scenario loading enforces (the ``Scenario`` docstring and docs/formulation.md list them), so
#: every solver is checked up to the edges of what a scenario may hold.
GAIN_DB = (-200.0, 0.0)
NOISE_DBM_PER_HZ = (-200.0, -100.0)  # scenario-wide
BANDWIDTH_HZ = (1e3, 1e11)  # scenario-wide
CPU_HZ = (1e6, 1e12)
KAPPA = (1e-40, 1e-20)  # scenario-wide
MAX_POWER_W = (1e-6, 100.0)

#: Solvers restricted to part of the problem: "infeasible" may be their restriction binding.
RESTRICTED = {"equal", "fixed-bits", "bandwidth-only", "power-only", "bits-only"}
BLOCK_ONLY = {"round-robin", "greedy"}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int | None = None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def random_scenario(seed: int) -> Scenario:
    """A valid scenario from ``seed``; every fourth or so is one of the degenerate kinds."""
    rng = np.random.default_rng(seed)
    kind = seed % 8
    n = 1 if kind == 1 else int(rng.integers(1, 5))
    base = Scenario.default(devices=n, seed=seed)
    gain = rng.uniform(*GAIN_DB, n)
    cpu = _log_uniform(rng, *CPU_HZ, n)
    pmax = _log_uniform(rng, *MAX_POWER_W, n)
    samples = rng.integers(1, 1000, n)
    if kind == 2:  # equal devices
        gain[:], cpu[:], pmax[:], samples[:] = gain[0], cpu[0], pmax[0], samples[0]
    devices = Devices(
        ids=tuple(range(n)),
        gain_db=gain,
        cpu_hz=cpu,
        max_power_w=pmax,
        samples=samples.astype(np.int64),
        distance_m=np.full(n, np.nan),
    )
    if kind == 0:
        levels = [int(rng.integers(1, 17))]  # a single bit width
    else:
        levels = sorted(
            {int(b) for b in rng.choice(np.arange(1, 17), int(rng.integers(1, 6)), replace=False)}
        )
    omega = {3: 0.0, 4: 1.0}.get(kind, float(rng.uniform()))
    scn = base.replace(
        system={
            "bandwidth_hz": float(_log_uniform(rng, *BANDWIDTH_HZ)),
            "noise_dbm_per_hz": float(rng.uniform(*NOISE_DBM_PER_HZ)),
            "kappa": float(_log_uniform(rng, *KAPPA)),
        },
        devices=devices,
        bits=levels,
        objective={"latency_weight": omega},
        # Keep the target reachable at the largest width most of the time.
        convergence={"epsilon": float(base.convergence.epsilon * rng.uniform(0.9, 3.0))},
    )
    if kind in (5, 6, 7):
        ev = evaluate(scn, equal_allocation(scn))
        cons = {}
        if kind in (5, 7):  # a deadline near the equal split's round time
            cons["round_deadline_s"] = min(float(ev.round_latency_s * rng.uniform(0.3, 1.2)), 1e9)
        if kind in (6, 7):  # an energy cap near the equal split's largest device energy
            cons["device_energy_j"] = min(
                float(ev.breakdown.energy_j.max() * rng.uniform(0.3, 1.2)), 1e9
            )
        scn = scn.replace(constraints=cons)  # capped at the valid maximum, 1e9 s or J
    return scn


def _solvers(scn: Scenario) -> list[str]:
    # round-robin and greedy assign resource blocks; they refuse continuous-bandwidth scenarios.
    names = [n for n in available_solvers() if n not in BLOCK_ONLY]
    if len(scn.bits.levels) ** scn.n_devices > 2000:
        names.remove("exact")  # refuses large instances by design (an argument error)
    return names


def check_solver(scn: Scenario, name: str) -> str:
    """Run ``name`` on ``scn`` with RuntimeWarnings as errors and check the result contract."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = solve(scn, name)
    assert res.status in STATUSES
    assert res.status != "failed", (name, res.message)
    if res.status == "infeasible" and name not in RESTRICTED:
        assert not diagnose(scn).feasible, (name, res.message)
    if res.allocation is not None:
        ev = evaluate(scn, res.allocation)
        if res.success:
            assert ev.violations == [], (name, ev.violations)
            assert np.isfinite(res.objective)
    return res.status


FAST_SEEDS = range(48)


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_every_closed_form_solver_returns_a_status(seed):
    scn = random_scenario(seed)
    feasible = diagnose(scn).feasible
    for name in _solvers(scn):
        if name == "bcd":
            continue
        status = check_solver(scn, name)
        if name in ("fast", "exact"):
            assert (status != "infeasible") == feasible, (name, status)


@pytest.mark.parametrize("seed", range(0, 48, 5))
def test_bcd_returns_a_status(seed):
    scn = random_scenario(seed)
    status = check_solver(scn, "bcd")
    assert (status != "infeasible") == diagnose(scn).feasible


@pytest.mark.parametrize(
    "gain_db", [GAIN_DB[0], -150.0, -100.0, -40.0, GAIN_DB[1]], ids=lambda g: f"{g:g}dB"
)
def test_one_device_at_the_ends_of_the_gain_range(gain_db):
    base = Scenario.default(devices=4, seed=1).replace(bits=[2, 4, 8])
    g = base.devices.gain_db.copy()
    g[0] = gain_db
    scn = base.replace(devices=replace(base.devices, gain_db=g, distance_m=np.full(4, np.nan)))
    for name in _solvers(scn):
        assert check_solver(scn, name) != "infeasible", name


@pytest.mark.parametrize("levels", [[2], [8], [16]])
def test_single_bit_width(levels):
    scn = Scenario.default(devices=5, seed=3).replace(bits=levels)
    fb = solve(scn, "fixed-bits")
    for name in ("fast", "exact"):
        res = solve(scn, name)
        assert res.status in ("optimal", "converged"), res.message
        assert res.allocation is not None and set(res.allocation.bits.tolist()) == set(levels)
        # One width: the bits are forced, so the optimum is fixed-bits' continuous optimum.
        assert res.objective == pytest.approx(fb.objective, rel=1e-9)


def test_an_unexpected_exception_becomes_status_failed(monkeypatch, caplog):
    from sflam_opt.solvers import fast

    def boom(*args, **kwargs):
        raise FloatingPointError("overflow in the test")

    monkeypatch.setattr(fast, "run_fast", boom)
    res = solve(Scenario.default(devices=3, seed=0), "fast")
    assert res.status == "failed" and res.allocation is None
    assert res.message == "fast: internal error: FloatingPointError: overflow in the test"
    assert "solver fast raised" in caplog.text


def test_a_numerical_failure_of_the_continuous_block_is_failed_not_infeasible(monkeypatch):
    from sflam_opt.solvers.kernel import rows

    def no_finite_round(prm, rw, t0=None):
        return np.full(rw.w.shape[0], np.inf)

    monkeypatch.setattr(rows, "min_round_time", no_finite_round)
    # A (loose) deadline makes every continuous solve compute the fastest round T_min.
    scn = Scenario.default(devices=3, seed=0).replace(constraints={"round_deadline_s": 1e6})
    res = solve(scn, "fixed-bits")
    assert res.status == "failed" and "numerical failure" in res.message
    for name in ("fast", "exact"):
        res = solve(scn, name)
        assert res.status == "failed", (name, res.message)


#: Per-block gains across their valid range (docs/formulation.md §11), dB.
BLOCK_GAIN_DB = (-250.0, 20.0)
BLOCK_SOLVERS = ("equal", "round-robin", "greedy", "fast", "bcd")


def random_block_scenario(seed: int) -> Scenario:
    """A valid resource-block scenario from ``seed``: block gains drawn over the whole range.

    Every third draw puts one device's blocks all at the bottom of the range (a deep fade), where
    the block levels are ~1e11 W and the powers below 1 W.
    """
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 5))
    m = n + int(rng.integers(0, 5))
    scn = with_resource_blocks(Scenario.default(n, seed=seed), m, seed=seed)
    rows = rng.uniform(*BLOCK_GAIN_DB, (n, m))
    if seed % 3 == 0:
        rows[0] = BLOCK_GAIN_DB[0]
    return scn.with_gains(block_gain_db=dict(zip(scn.devices.ids, rows, strict=True)))


@pytest.mark.parametrize("seed", range(12))
def test_every_block_solver_solves_valid_block_scenarios(seed):
    # No constraints, so every valid block scenario is feasible: anything but success is a
    # numerical failure (the deep-fade draws used to end "failed" over a power cap).
    scn = random_block_scenario(seed)
    for name in BLOCK_SOLVERS:
        assert check_solver(scn, name) in ("optimal", "converged"), name
    if scn.n_devices**scn.resource_blocks.count <= 20_000:
        assert check_solver(scn, "exact") == "optimal"
