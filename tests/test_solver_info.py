"""Solver wiring and results: the explicit solver table, and every solver's documented info keys.

``sflam_opt.solvers.registry`` lists every built-in solver by name (imported functions, no
import by name); ``sflam_opt.solvers.info`` documents what each solver puts in
``SolveResult.info``. These tests hold the registry, the CLI's solver list and the documented
keys to what the solvers do on the reference scenarios.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from reference_scenarios import named, small_set

from sflam_opt import Allocator, Scenario, SolverArgumentError, solve
from sflam_opt.blocks import with_resource_blocks
from sflam_opt.solvers import available_solvers, get_solver
from sflam_opt.solvers.base import get_block_solver
from sflam_opt.solvers.info import (
    ALLOCATOR_KEYS,
    BLOCK_INFO_KEYS,
    INFO_KEYS,
    info_key_problems,
    info_keys,
)
from sflam_opt.solvers.registry import BLOCK_SOLVERS, SOLVERS

ROOT = Path(__file__).resolve().parents[1]

#: ``sflam-opt solvers`` lists exactly these names (a CLI contract).
NAMES = [
    "bandwidth-only",
    "bcd",
    "bits-only",
    "equal",
    "exact",
    "fast",
    "fixed-bits",
    "greedy",
    "power-only",
    "round-robin",
]


def test_the_table_is_what_solve_dispatches_on():
    assert sorted(SOLVERS) == NAMES == list(available_solvers())
    for name, func in SOLVERS.items():
        assert get_solver(name) is func
    assert sorted(BLOCK_SOLVERS) == ["bcd", "equal", "exact", "fast", "greedy", "round-robin"]
    for name, func in BLOCK_SOLVERS.items():
        assert get_block_solver(name) is func
    desc = available_solvers()
    assert desc["fast"] == "exact continuous block + Dinkelbach bits search, no general solver"
    assert desc["bcd"].startswith("Block coordinate descent: the joint CVXPY continuous block")
    assert desc["equal"].startswith("Equal split: B_n = B/N")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=120,
    )


def test_importing_the_package_does_not_load_the_solvers_and_third_parties_still_register():
    # The table imports CVXPY; a CLI command that never solves should not pay for it. A solver
    # registered before the first dispatch sits beside the built-ins.
    proc = _run(
        """
        import sys
        import sflam_opt, sflam_opt.cli
        assert "cvxpy" not in sys.modules and "sflam_opt.solvers.bcd" not in sys.modules
        from sflam_opt.solvers import register_solver, solve, available_solvers, SOLVERS
        from sflam_opt.solvers.baselines import solve_equal

        @register_solver("mine", "a third-party solver")
        def mine(scenario):
            return solve_equal(scenario)

        res = solve(sflam_opt.Scenario.default(3), "mine")
        assert res.solver == "mine" and res.success, res
        assert available_solvers()["mine"] == "a third-party solver"
        assert "mine" not in SOLVERS and "bcd" in available_solvers()
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_first_fast_call_imports_neither_cvxpy_nor_scipy_optimize():
    # The solver table lists bcd, exact and the baselines beside fast; their CVXPY and
    # scipy.optimize imports (~0.65 s) belong to their first use, not to the first fast call.
    proc = _run(
        """
        import sys
        from sflam_opt import Scenario, solve
        res = solve(Scenario.default(devices=10, seed=0), "fast")
        assert res.success, res
        print(sorted(m for m in ("cvxpy", "scipy.optimize") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_solver_has_documented_keys():
    continuous = [n for n in SOLVERS if n not in ("greedy", "round-robin")]
    assert sorted(INFO_KEYS) == sorted(continuous)
    assert sorted(BLOCK_INFO_KEYS) == sorted(BLOCK_SOLVERS)
    for keys in [*INFO_KEYS.values(), *BLOCK_INFO_KEYS.values(), ALLOCATOR_KEYS]:
        names = [k.name for k in keys]
        assert len(names) == len(set(names))
        assert all(k.meaning for k in keys)
    with pytest.raises(KeyError):
        info_keys("greedy")


def _reference():
    blocks = [with_resource_blocks(Scenario.default(3, seed=s), 6, seed=s) for s in (0, 1)]
    return [*named().values(), *small_set(6)], blocks


def _check(name: str, res, *, blocks: bool) -> None:
    problems = info_key_problems(
        name, res.info, blocks=blocks, has_allocation=res.allocation is not None
    )
    assert problems == [], (res.status, res.message)


@pytest.mark.parametrize("name", NAMES)
def test_info_has_exactly_the_documented_keys_on_the_reference_scenarios(name):
    continuous, blocks = _reference()
    seen = set()
    if name in INFO_KEYS:
        for scn in continuous:
            if name == "exact" and len(scn.bits.levels) ** scn.n_devices > 200_000:
                continue  # beyond exact's default max_combinations
            res = solve(scn, name)
            _check(name, res, blocks=False)
            seen.add(res.status)
        assert seen & {"optimal", "converged"}
    for scn in blocks if name in BLOCK_INFO_KEYS else []:
        res = solve(scn, name)
        _check(name, res, blocks=True)
        assert res.success


def test_a_documented_key_that_a_solver_stops_filling_is_reported():
    res = solve(Scenario.default(4, seed=0), "fast")
    info = dict(res.info)
    del info["polish_moves"]
    info["surprise"] = 1
    assert info_key_problems("fast", info, blocks=False, has_allocation=True) == [
        "fast: undocumented info key 'surprise'",
        "fast: documented info key 'polish_moves' missing",
    ]


def test_allocator_steps_keep_to_the_documented_keys():
    scn = Scenario.default(6, seed=2)
    for name in ("bcd", "fast", "exact"):
        alloc = Allocator(scn, name)
        for devices in ([0, 2, 4], [5, 2, 1, 0]):
            res = alloc.step(devices=devices)
            _check(name, res, blocks=False)
        if name == "bcd":  # started from fast's bits: no baselines tried, a presolve recorded
            assert res.info["warm_start"] == "start_bits" and "presolve" in res.info
            assert "warm_start_candidates" not in res.info


def test_unknown_solver_and_bad_options_still_name_the_choices():
    scn = Scenario.default(3)
    with pytest.raises(SolverArgumentError, match="unknown solver; choose one of bandwidth-only"):
        solve(scn, "nope")
    with pytest.raises(
        SolverArgumentError, match="not an option of solver 'equal'; valid options: none"
    ):
        solve(scn, "equal", tol=1.0)
    assert np.isfinite(solve(scn, "equal").objective)
