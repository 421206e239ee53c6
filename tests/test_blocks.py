"""Resource blocks (docs/formulation.md §10): model, water-filling, matching, exact, I/O, CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from sflam_opt import Allocation, Scenario, evaluate, solve
from sflam_opt.blocks import (
    block_levels,
    equal_block_allocation,
    greedy_assignment,
    max_rate_bps,
    padded_levels,
    round_robin_assignment,
    waterfill,
    with_resource_blocks,
)
from sflam_opt.cli import main
from sflam_opt.costs import compute_energy_j, fixed_time_s, payload_bits, reference
from sflam_opt.errors import AllocationError, ScenarioError, SolverArgumentError
from sflam_opt.numeric import LN2
from sflam_opt.solvers.blocktime import BlockProblem

W = 180e3


def small(seed: int = 0, omega: float = 0.5, devices: int = 3, blocks: int = 6) -> Scenario:
    scn = with_resource_blocks(Scenario.default(devices, seed=seed), blocks, seed=seed)
    return scn.replace(objective={"latency_weight": omega})


# ------------------------------------------------------------------------------ water-filling


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_waterfill_matches_a_generic_convex_solver(seed: int) -> None:
    rng = np.random.default_rng(seed)
    levels = rng.uniform(1e-3, 5e-2, size=5)
    levels[3] = np.inf  # a padded slot: no block there
    rate = float(rng.uniform(0.5e6, 3e6))
    fill = waterfill(levels[None, :], np.array([rate]), W)
    finite = levels[np.isfinite(levels)]
    p = cp.Variable(finite.size, nonneg=True)
    prob = cp.Problem(
        cp.Minimize(cp.sum(p)), [W * cp.sum(cp.log(1 + cp.multiply(p, 1 / finite))) / LN2 >= rate]
    )
    prob.solve()
    assert fill.power_w[0] == pytest.approx(prob.value, rel=1e-5)
    per_block = fill.block_power(levels[None, :])[0]
    assert per_block[3] == 0.0
    np.testing.assert_allclose(per_block[np.isfinite(levels)], p.value, atol=1e-5 * prob.value)
    got = W * np.sum(np.log2(1 + per_block[np.isfinite(levels)] / finite))
    assert got == pytest.approx(rate, rel=1e-10)


@pytest.mark.parametrize("budget", [1e-3, 0.05, 0.2])
def test_max_rate_matches_a_generic_convex_solver(budget: float) -> None:
    levels = np.array([2e-3, 9e-3, 4e-2, 0.3])
    p = cp.Variable(levels.size, nonneg=True)
    prob = cp.Problem(
        cp.Maximize(W * cp.sum(cp.log(1 + cp.multiply(p, 1 / levels))) / LN2),
        [cp.sum(p) <= budget],
    )
    prob.solve()
    assert max_rate_bps(levels[None, :], np.array([budget]), W)[0] == pytest.approx(
        prob.value, rel=1e-5
    )
    # The two water-fillings are inverse to each other.
    r = max_rate_bps(levels[None, :], np.array([budget]), W)
    assert waterfill(levels[None, :], r, W).power_w[0] == pytest.approx(budget, rel=1e-10)


@pytest.mark.parametrize("active", [1, 3])
def test_water_filling_keeps_its_digits_on_a_deep_fade(active: int) -> None:
    # At block gains of -250 dB the levels are ~1e11 W and the powers ~0.1 W: forming the water
    # level L and subtracting lost the power's digits (a returned allocation broke its power
    # cap by 7e-4 and the solve ended "failed"). The closed forms are log1p/expm1 of the
    # small quantities instead.
    base = 1.3e11
    levels = base * (1.0 + np.array([0.0, 3e-13, 6e-13, 1e-6])[: active + 1])
    if active == 1:
        levels = levels[:1]
    budget = 0.2
    r = max_rate_bps(levels[None, :], np.array([budget]), W)
    want = W * np.sum(np.log1p(budget / active / levels[:active])) / LN2  # ~equal split
    assert r[0] == pytest.approx(want, rel=1e-9)
    fill = waterfill(levels[None, :], r, W)
    assert fill.active[0] == active
    assert fill.power_w[0] == pytest.approx(budget, rel=1e-12)
    per_block = fill.block_power(levels[None, :])[0]
    assert per_block.sum() == pytest.approx(budget, rel=1e-12)
    got = W * np.sum(np.log1p(per_block / levels)) / LN2
    assert got == pytest.approx(r[0], rel=1e-12)


def test_round_time_is_the_minimum_of_v() -> None:
    scn = small(4, omega=0.3)
    prob = BlockProblem(scn, reference(scn))
    owner = round_robin_assignment(3, 6)
    padded, _ = padded_levels(prob.levels, owner, 3)
    bits = np.array([6, 8, 10])
    sol = prob.solve(padded[None], bits[None])
    pay = payload_bits(scn, bits)
    c = fixed_time_s(scn)

    def v(t: float) -> float:
        up = t - c
        e = up * waterfill(padded, pay / up, W if False else prob.block_hz).power_w
        return prob.w_t * t + prob.w_e * float(np.sum(compute_energy_j(scn) + e))

    t_lo = float(np.max(c + pay / max_rate_bps(padded, scn.devices.max_power_w, prob.block_hz)))
    ref = minimize_scalar(v, bounds=(t_lo, 50 * t_lo), method="bounded", options={"xatol": 1e-9})
    assert sol.value[0] <= ref.fun * (1 + 1e-9)
    assert sol.value[0] == pytest.approx(ref.fun, rel=1e-7)


# ------------------------------------------------------------------------------ solvers


def test_exact_is_the_minimum_over_every_assignment_and_bit_vector() -> None:
    scn = small(2).replace(bits=[2, 4, 8, 16])
    res = solve(scn, "exact")
    assert res.status == "optimal"
    prob = BlockProblem(scn, reference(scn))
    rows = np.array(list(itertools.product([2, 4, 8, 16], repeat=3)))
    pads = []
    for owner in itertools.product(range(3), repeat=6):
        own = np.array(owner)
        if np.unique(own).size == 3:
            padded, _ = padded_levels(prob.levels, own, 3)
            pads.append(np.pad(padded, ((0, 0), (0, 4 - padded.shape[1])), constant_values=np.inf))
    assert len(pads) == 540
    padded_all = np.repeat(np.array(pads), rows.shape[0], axis=0)
    bits_all = np.tile(rows, (len(pads), 1))
    sol = prob.solve(padded_all, bits_all)
    best = float(np.min(prob.objective(sol, bits_all)))
    assert res.objective == pytest.approx(best, rel=1e-9)
    assert res.evaluation is not None and res.evaluation.feasible


def test_matching_is_close_to_exact_and_never_worse_than_round_robin() -> None:
    gaps = []
    for k in range(12):
        scn = small(k, omega=(0.1, 0.5, 0.9, 1.0)[k % 4])
        ex, bcd, rr = (solve(scn, s) for s in ("exact", "bcd", "round-robin"))
        assert bcd.success and ex.status == "optimal"
        assert bcd.objective >= ex.objective * (1 - 1e-9)
        assert bcd.objective <= rr.objective * (1 + 1e-9)
        gaps.append(bcd.objective / ex.objective - 1)
    assert np.mean(np.array(gaps) <= 0.01) >= 0.9


def test_solution_is_consistent_and_feasible() -> None:
    scn = small(5, devices=10, blocks=25).replace(constraints={"device_energy_j": 60.0})
    res = solve(scn, "bcd")
    assert res.success, res.message
    a = res.allocation
    assert a is not None and a.blocks is not None and a.block_power_w is not None
    used = np.concatenate(a.blocks)
    assert np.unique(used).size == used.size == 25
    np.testing.assert_allclose(a.power_w, [p.sum() for p in a.block_power_w])
    np.testing.assert_allclose(
        a.bandwidth_hz, [b.size * scn.resource_blocks.block_hz for b in a.blocks]
    )
    assert res.evaluation is not None and res.evaluation.feasible
    assert np.all(res.evaluation.breakdown.energy_j <= 60.0 * (1 + 1e-6))
    assert res.objective < solve(scn, "round-robin").objective
    # The equal baseline normalizes J.
    assert solve(scn, "equal").objective == pytest.approx(1.0)
    assert evaluate(scn, equal_block_allocation(scn)).objective == pytest.approx(1.0)


def test_deadline_binds_and_fast_runs() -> None:
    scn = small(6, devices=6, blocks=12)
    t = solve(scn, "bcd").evaluation.round_latency_s
    tight = scn.replace(constraints={"round_deadline_s": 0.9 * t})
    res = solve(tight, "fast")
    if res.success:
        assert res.evaluation.round_latency_s <= 0.9 * t * (1 + 1e-6)
    else:
        assert res.status == "infeasible"
    far = scn.replace(constraints={"round_deadline_s": 1e-3})
    assert solve(far, "bcd").status == "infeasible"


def test_energy_cap_that_max_bits_break_is_met_with_fewer_bits() -> None:
    scn = small(5)
    e = solve(scn, "bcd").evaluation.breakdown.energy_j
    capped = scn.replace(constraints={"device_energy_j": float(e.max() * 0.99)})
    res, ex = solve(capped, "bcd"), solve(capped, "exact")
    assert res.success and ex.status == "optimal", res.message
    assert ex.objective <= res.objective <= ex.objective * 1.01
    assert res.evaluation.breakdown.energy_j.max() <= capped.constraints.device_energy_j * (
        1 + 1e-6
    )
    # Below one device's compute energy nothing works; the message names the device and the fix.
    bad = solve(scn.replace(constraints={"device_energy_j": 8.3}), "bcd")
    assert bad.status == "infeasible" and "device 2" in bad.message
    assert "raise device_energy_j" in bad.message


def test_unsupported_solvers_say_which_are_supported() -> None:
    with pytest.raises(SolverArgumentError, match="does not support resource blocks.*bcd"):
        solve(small(), "bits-only")
    with pytest.raises(SolverArgumentError, match="needs a scenario with resource blocks"):
        solve(Scenario.default(3, 0), "round-robin")
    with pytest.raises(SolverArgumentError, match="max_assignments"):
        solve(small(devices=4, blocks=12), "exact")


def test_assignments() -> None:
    assert round_robin_assignment(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    gain = np.array([[5.0, 4.0, 1.0, 3.0], [6.0, 1.0, 2.0, 0.5]])
    # One block each with the largest gain product (4 x 6), then each other block by best gain.
    assert greedy_assignment(gain).tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------------------------ files


def test_block_scenario_round_trips_and_validates() -> None:
    scn = small(3, devices=4, blocks=9)
    text = scn.to_toml()
    assert "resource_blocks = 9" in text and "block_gain_db = [" in text
    back = Scenario.from_toml_string(text)
    assert back == scn and back.resource_blocks == scn.resource_blocks
    assert back.devices.block_gain_db.shape == (4, 9)
    assert (
        back.subset([2, 0]).devices.block_gain_db.tolist()
        == scn.devices.block_gain_db[[2, 0]].tolist()
    )
    doc = scn.to_dict()
    del doc["system"]["bandwidth_hz"]
    assert Scenario.from_dict(doc) == scn  # bandwidth_hz may be left out: it is M W
    continuous = Scenario.default(4, 3)
    assert "block" not in continuous.to_toml() and continuous.resource_blocks is None

    def bad(change, match: str) -> None:
        d = scn.to_dict()
        change(d)
        with pytest.raises(ScenarioError, match=match) as info:
            Scenario.from_dict(d, source="s.toml")
        assert "\n" not in str(info.value)

    bad(
        lambda d: d["system"].update(bandwidth_hz=1e6),
        r"bandwidth_hz: 1e\+06 Hz is not resource_blocks x block_hz",
    )
    bad(lambda d: d["system"].pop("block_hz"), r"\[system\] block_hz: missing key")
    bad(
        lambda d: (d["system"].pop("bandwidth_hz"), d["system"].update(resource_blocks=3)),
        "every device needs at least one block",
    )
    bad(lambda d: d["device"][1].update(block_gain_db=[1.0]), r"id=1 block_gain_db: need a list")
    bad(lambda d: d["device"][0]["block_gain_db"].__setitem__(2, "x"), r"block_gain_db\[2\]")
    plain = continuous.to_dict()
    plain["device"][0]["block_gain_db"] = [1.0]
    with pytest.raises(ScenarioError, match="only with resource blocks"):
        Scenario.from_dict(plain)


def test_allocation_json_round_trip_and_evaluate_checks(tmp_path: Path) -> None:
    scn = small(1)
    res = solve(scn, "bcd")
    alloc = res.allocation
    path = tmp_path / "a.json"
    alloc.save(path)
    back = Allocation.load(path)
    assert back == alloc and back.blocks is not None
    assert evaluate(scn, back).objective == pytest.approx(res.objective, rel=1e-12)
    # A continuous allocation's JSON is unchanged.
    plain = solve(Scenario.default(3, 0), "equal").allocation
    assert "blocks" not in plain.to_json() and Allocation.from_json(plain.to_json()) == plain

    def alloc_with(blocks, powers, **kw) -> Allocation:
        blocks = [np.array(b) for b in blocks]
        powers = [np.array(p, dtype=float) for p in powers]
        return Allocation(
            alloc.bits,
            kw.get("bw", np.array([len(b) * scn.resource_blocks.block_hz for b in blocks])),
            kw.get("pw", np.array([p.sum() for p in powers])),
            alloc.ids,
            tuple(blocks),
            tuple(powers),
        )

    ok = alloc_with([[0, 3], [1, 4], [2, 5]], [[0.1, 0.1]] * 3)
    assert evaluate(scn, ok).feasible
    cases = {
        "used by more than one device": alloc_with([[0, 3], [0, 4], [2, 5]], [[0.1, 0.1]] * 3),
        "at least one block": alloc_with([[0, 3, 1], [], [2, 5]], [[0.05] * 3, [], [0.1, 0.1]]),
        "exceeds max_power_w": alloc_with(
            [[0, 3], [1, 4], [2, 5]], [[0.2, 0.1]] + [[0.1, 0.1]] * 2
        ),
        "outside 0..5": alloc_with([[0, 9], [1, 4], [2, 5]], [[0.1, 0.1]] * 3),
        "sum of block_power_w": alloc_with(
            [[0, 3], [1, 4], [2, 5]], [[0.1, 0.1]] * 3, pw=np.array([0.2, 0.2, 0.1])
        ),
        "number of blocks x block_hz": alloc_with(
            [[0, 3], [1, 4], [2, 5]], [[0.1, 0.1]] * 3, bw=np.full(3, 1e6)
        ),
    }
    for what, a in cases.items():
        with np.errstate(invalid="ignore"):  # a device without blocks has no finite upload
            ev = evaluate(scn, a)
        assert not ev.feasible and any(what in v for v in ev.violations), (what, ev.violations)
    no_blocks = Allocation(alloc.bits, alloc.bandwidth_hz, alloc.power_w, alloc.ids)
    assert any("give each device's blocks" in v for v in evaluate(scn, no_blocks).violations)
    doc = json.loads(alloc.to_json())
    del doc["devices"][1]["blocks"]
    with pytest.raises(AllocationError, match=r"devices\[1\]"):
        Allocation.from_dict(doc)


# ------------------------------------------------------------------------------ CLI


def test_cli_scenario_new_blocks_and_solve_json(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.toml"
    assert (
        main(["scenario", "new", "-n", "3", "--blocks", "6", "--seed", "2", "-o", str(path)]) == 0
    )
    scn = Scenario.from_toml(path)
    assert scn == with_resource_blocks(Scenario.default(3, 2), 6, 2)
    # Rayleigh fading around the path loss: the mean linear block gain is near the path gain.
    big = with_resource_blocks(Scenario.default(2, 0), 4000, 0)
    ratio = np.mean(10 ** ((big.devices.block_gain_db - big.devices.gain_db[:, None]) / 10), axis=1)
    np.testing.assert_allclose(ratio, 1.0, atol=0.06)
    capsys.readouterr()
    assert main(["solve", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    w = scn.resource_blocks.block_hz
    seen = []
    for row in doc["devices"]:
        assert len(row["blocks"]) == len(row["block_power_w"]) >= 1
        assert row["bandwidth_hz"] == pytest.approx(len(row["blocks"]) * w)
        assert row["power_w"] == pytest.approx(sum(row["block_power_w"]))
        seen += row["blocks"]
    assert sorted(seen) == list(range(6))
    assert main(["scenario", "new", "-n", "3", "--blocks", "2"]) == 2
    err = capsys.readouterr().err
    assert "--blocks 2" in err and len(err.strip().splitlines()) == 1


def test_levels_are_noise_over_gain() -> None:
    scn = small()
    g = 10 ** (scn.devices.block_gain_db / 10)
    np.testing.assert_allclose(
        block_levels(scn), scn.noise_w_per_hz * scn.resource_blocks.block_hz / g
    )
    assert dataclasses.replace(scn, resource_blocks=None).resource_blocks is None
