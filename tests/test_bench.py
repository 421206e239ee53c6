"""Benchmarks (issue 7): pieces of ``sflam-opt bench quick`` at tiny sizes.

Each end-to-end test runs a real benchmark section into a temporary directory and checks that the
CSV/JSON/PNG/markdown outputs exist and hold the values that were measured (re-measured here where
that is deterministic), so the benchmark code cannot rot silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sflam_opt import Scenario, solve
from sflam_opt.bench import report
from sflam_opt.bench.common import (
    PROFILES,
    BenchContext,
    Profile,
    peak_memory,
    read_csv,
    read_json,
    write_csv,
)
from sflam_opt.bench.solve import fit_exponent, gap_summary, small_instance
from sflam_opt.bench.train import run_row, summarize
from sflam_opt.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000  # a drawn figure, not an empty canvas


def _ctx(tmp_path: Path, profile: Profile) -> BenchContext:
    return BenchContext(tmp_path, profile, f"sflam-opt bench test --out {tmp_path}")


# ------------------------------------------------------------------------------- pure parts
def test_fit_exponent_recovers_power_law_on_large_n() -> None:
    sizes = [10, 100, 1000, 10_000, 100_000]
    # Overhead-dominated points (N = 10, 100) must not bend the fit: it uses the three largest.
    times = [0.5, 0.4, *(2e-4 * n**1.5 for n in sizes[2:])]
    fit = fit_exponent(sizes, times)
    assert fit is not None
    assert fit["exponent"] == pytest.approx(1.5, abs=1e-9)
    assert fit["coefficient_s"] == pytest.approx(2e-4, rel=1e-9)
    assert fit["fit_sizes"] == [1000.0, 10_000.0, 100_000.0]
    assert fit_exponent([10], [1.0]) is None


def test_gap_summary_counts_infeasible_as_infinite_gap() -> None:
    gaps = [0.0, 0.0005, 0.002, 0.01, None]  # None: no feasible allocation
    rows = [
        {"solver": "x", "exact_status": "optimal", "gap": g, "solve_time_s": 0.1 * (i + 1)}
        for i, g in enumerate(gaps)
    ]
    rows.append({"solver": "x", "exact_status": "infeasible", "gap": None, "solve_time_s": 9.0})
    (s,) = gap_summary(rows, ["x"])
    assert s["instances"] == 5 and s["feasible"] == 4
    assert s["median_gap"] == pytest.approx(0.002)
    assert math.isinf(s["p95_gap"]) and math.isinf(s["worst_gap"])
    assert s["best_gap"] == 0.0
    assert s["within_tol"] == pytest.approx(2 / 5)
    assert s["median_time_s"] == pytest.approx(0.3)


def test_small_instances_are_seeded_and_varied() -> None:
    a, kind_a = small_instance(3)
    b, kind_b = small_instance(3)
    assert a == b and kind_a == kind_b
    kinds = {small_instance(s)[1] for s in range(40)}
    assert kinds == {"none", "deadline", "energy"}
    assert {small_instance(s)[0].n_devices for s in range(40)} == {3, 4}


def test_peak_memory_sees_numpy_allocation() -> None:
    _, mem = peak_memory(lambda: np.ones(5_000_000).sum())  # 40 MB of float64
    assert 35 <= mem["traced_peak_mib"] < 80


def test_csv_round_trip_keeps_numbers_and_infinity(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": 0.1 + 0.2, "c": math.inf, "d": None, "e": "x", "f": [1, 2]}]
    path = write_csv(tmp_path / "t.csv", rows, ["a", "b", "c", "d", "e", "f"])
    (back,) = read_csv(path)
    assert back["a"] == 1 and back["b"] == 0.1 + 0.2 and math.isinf(back["c"])
    assert back["d"] is None and back["e"] == "x" and back["f"] == "[1, 2]"


def test_run_row_finds_first_round_at_target() -> None:
    acc = [0.2, 0.85, 0.91, 0.88, 0.95]
    metrics = [
        {
            "round": r + 1,
            "test_accuracy": a,
            "train_loss": 1.0,
            "grad_sq_norm": float(r + 1),
            "bound": 10.0,
            "uplink_bytes": 100,
            "latency_s": 2.0,
            "energy_j": 3.0,
        }
        for r, a in enumerate(acc)
    ]
    res = {
        "group": "protocols",
        "alpha": 0.5,
        "protocol": "sflam",
        "bits_mode": "solver",
        "seed": 0,
        "config": {"lr": 0.05},
        "metrics": metrics,
        "summary": {"mean_bits": 4.0},
    }
    row = run_row(res, 0.9)
    assert row["rounds_to_target"] == 3
    assert row["uplink_bytes_to_target"] == 300 and row["latency_to_target_s"] == 6.0
    assert row["energy_to_target_j"] == 9.0 and row["final_accuracy"] == 0.95
    assert row["final_grad_sq_norm_avg"] == pytest.approx(3.0)
    never = run_row({**res, "metrics": metrics[:2]}, 0.9)
    assert never["rounds_to_target"] is None and never["latency_to_target_s"] is None
    (s,) = summarize([row, {**never, "seed": 1}])
    assert s["reached_target"] == "1/2" and s["rounds_to_target_mean"] == 3
    assert s["final_accuracy_mean"] == pytest.approx((0.95 + 0.85) / 2)


# ------------------------------------------------------------------------------- sections
TINY = PROFILES["quick"].replace(
    name="tiny",
    repeats=2,
    bcd_sizes=(4,),
    fast_sizes=(10, 100, 300),
    optimality_instances=3,
    optimality_solvers=("fast", "equal", "bits-only"),
    savings_sizes=(10,),
    savings_solvers=("fast",),
    savings_baselines=("equal", "fixed-bits"),
    pareto_weights=(0.0, 0.5, 1.0),
    bcd_trace_sizes=(4,),
    train_alphas=(0.5,),
    train_protocols=("sflam", "fl"),
    train_seeds=(0,),
    train_rounds=4,
    train_devices=4,
    train_uniform_bits=(2,),
    train_workers=1,
    memory_model="vit-tiny",
    memory_batches=(4,),
)


def test_solve_section_writes_measured_values(tmp_path: Path) -> None:
    from sflam_opt.bench import solve as bench_solve

    ctx = _ctx(tmp_path, TINY.replace(bcd_sizes=(), bcd_trace_sizes=()))
    bench_solve.run(ctx, parts=("speed", "optimality", "savings", "pareto"))
    fig = tmp_path / "figures"
    speed = read_csv(fig / "solve_speed.csv")
    assert [(r["solver"], r["n_devices"]) for r in speed] == [
        ("fast", 10),
        ("fast", 100),
        ("fast", 300),
    ]
    ref = solve(Scenario.default(devices=10, seed=0), solver="fast")
    assert speed[0]["objective"] == pytest.approx(ref.objective, rel=1e-12)
    assert all(r["repeats"] == 2 and 0 < r["min_s"] <= r["median_s"] <= r["max_s"] for r in speed)
    doc = read_json(fig / "solve.json")
    assert doc["speed"]["fits"]["fast"]["fit_sizes"] == [100.0, 300.0]
    assert doc["meta"]["command"] == ctx.command and doc["optimality"]["seeds"] == [0, 1, 2]

    opt = read_csv(fig / "solve_optimality.csv")
    assert {r["solver"] for r in opt} == {"exact", "fast", "equal", "bits-only"}
    for r in opt:
        if r["solver"] == "equal" and r["gap"] is not None:
            assert r["gap"] == pytest.approx(1.0 / r["exact_objective"] - 1.0, rel=1e-9)
    savings = read_csv(fig / "solve_savings.csv")
    eq = next(r for r in savings if r["solver"] == "equal")
    assert eq["objective"] == pytest.approx(1.0)

    md = report.write(tmp_path).read_text(encoding="utf-8")
    for name in ("solve_speed", "solve_optimality", "solve_savings", "solve_pareto"):
        _png(fig / f"{name}.png")
        assert f"figures/{name}.png" in md
    assert ctx.command in md
    assert f"| fast | 10 | converged | {report.num(speed[0]['objective'])} |" in md
    assert report.num(eq["total_latency_s"]) in md
    assert "No data for: `sflam-opt bench train`, `sflam-opt bench memory`." in md


def test_bcd_parts_record_iterations(tmp_path: Path) -> None:
    from sflam_opt.bench import solve as bench_solve

    ctx = _ctx(tmp_path, TINY)
    doc = bench_solve.run(ctx, parts=("speed", "bcd"))
    trace = read_csv(tmp_path / "figures" / "solve_bcd_trace.csv")
    runs = doc["bcd"]["runs"]
    assert len(runs) == 4  # default N=4 plus deadline, energy-cap and latency-only variants
    for run in runs:
        mine = [r for r in trace if r["scenario"] == run["scenario"]]
        assert len(mine) == run["iterations"] >= 1
        assert mine[-1]["objective"] == pytest.approx(run["objective"], rel=1e-6)
    _png(tmp_path / "figures" / "solve_bcd_trace.png")
    md = report.render(tmp_path)
    assert "### BCD behaviour" in md and runs[0]["scenario"] in md


def test_train_section_runs_and_reports(tmp_path: Path) -> None:
    from sflam_opt.bench import train as bench_train
    from sflam_opt.bounds import effective_step

    bench_train.run(_ctx(tmp_path, TINY))
    fig = tmp_path / "figures"
    runs = read_csv(fig / "train_runs.csv")
    assert [(r["group"], r["protocol"], r["bits_mode"]) for r in runs] == [
        ("protocols", "sflam", "solver"),
        ("protocols", "fl", "fp32"),
        ("bits", "sflam", "uniform 2"),
    ]
    assert all(r["error"] is None and r["rounds"] == 4 for r in runs)
    assert runs[2]["mean_bits"] == 2
    curves = read_csv(fig / "train_curves.csv")
    assert len(curves) == 8  # two protocols x four rounds
    sflam = [c for c in curves if c["protocol"] == "sflam"]
    assert sflam[-1]["test_accuracy"] == pytest.approx(runs[0]["final_accuracy"])
    assert sflam[-1]["uplink_bytes_cum"] == runs[0]["uplink_bytes"]
    # SFLAM's quantized activations are fewer bytes than FedAvg's whole-model uploads.
    assert runs[0]["uplink_bytes"] < runs[1]["uplink_bytes"]
    bits_curves = read_csv(fig / "train_bits_curves.csv")
    assert {c["bits_mode"] for c in bits_curves} == {"solver", "uniform 2"}
    for name in ("train_accuracy", "train_gradnorm", "train_bits"):
        _png(fig / f"{name}.png")
    doc = read_json(fig / "train.json")
    cal = doc["calibration"]
    assert cal["error"] is None and cal["seed"] == TINY.calibration_seed
    const = cal["constants"]
    assert const["a"] > 0 and const["phi0"] >= 0 and const["q"] >= 0  # envelope: Phi0 may be 0
    for c in (c for c in curves if c["protocol"] == "fl"):  # fp32: Phi_q(32 bits) ~ 1e-19
        eta = effective_step(runs[1]["lr"], TINY.train_momentum)
        expect = const["a"] / (eta * TINY.train_local_iters * c["round"]) + const["phi0"]
        assert c["bound_calibrated"] == pytest.approx(expect, rel=1e-9)
    assert doc["cifar10"]["run"] is False and "no CUDA device" in doc["cifar10"]["reasons"]
    md = report.render(tmp_path)
    assert "## Training benchmarks" in md and "**Not run on this machine**" in md
    assert report.pct(runs[0]["final_accuracy"]) in md


def test_worker_processes_reproduce_in_process_runs(tmp_path: Path) -> None:
    from sflam_opt.bench import train as bench_train

    todo = [j for j in bench_train.jobs(TINY) if j["group"] == "protocols"]
    assert len(todo) == 2
    here = [bench_train._run_job(j) for j in todo]
    pooled = bench_train._execute(_ctx(tmp_path, TINY.replace(train_workers=2)), todo)
    for a, b in zip(here, pooled, strict=True):
        assert b["error"] is None and (b["protocol"], b["seed"]) == (a["protocol"], a["seed"])
        assert b["metrics"] == json.loads(json.dumps(a["metrics"]))  # same seed, same numbers


def test_memory_section_measures_both_protocols(tmp_path: Path) -> None:
    from sflam_opt.bench import memory as bench_memory

    bench_memory.run(_ctx(tmp_path, TINY))
    rows = read_csv(tmp_path / "figures" / "memory.csv")
    assert [(r["protocol"], r["batch"]) for r in rows] == [("sflam", 4), ("fl", 4)]
    sflam, fl = rows
    assert 0 < sflam["device_peak_mb"] < fl["device_peak_mb"]
    assert fl["trained_params"] > sflam["trained_params"]
    _png(tmp_path / "figures" / "memory.png")
    doc = read_json(tmp_path / "figures" / "memory.json")
    assert doc["ratios"][0]["fl_over_sflam"] == pytest.approx(
        fl["device_peak_mb"] / sflam["device_peak_mb"]
    )
    md = report.render(tmp_path)
    assert f"| sflam | 4 | {report.num(sflam['device_peak_mb'])} |" in md
    # `bench report` redraws from the data files alone.
    (tmp_path / "figures" / "memory.png").unlink()
    assert main(["bench", "report", "--out", str(tmp_path)]) == 0
    _png(tmp_path / "figures" / "memory.png")
    assert (tmp_path / "results.md").read_text(encoding="utf-8").count("## Memory benchmark") == 1


def test_solver_exception_is_recorded_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sflam_opt.bench import solve as bench_solve

    real = bench_solve.solve

    def flaky(scenario: Scenario, solver: str = "bcd", **kw: object) -> object:
        if solver == "bits-only":
            raise RuntimeError("boom")
        return real(scenario, solver=solver, **kw)

    monkeypatch.setattr(bench_solve, "solve", flaky)
    ctx = _ctx(tmp_path, TINY)
    bench_solve.run(ctx, parts=("optimality",))
    rows = read_csv(tmp_path / "figures" / "solve_optimality.csv")
    bad = [r for r in rows if r["solver"] == "bits-only"]
    assert len(bad) == 3 and all(r["status"] == "error" for r in bad)
    assert all(r["error"] == "RuntimeError: boom" for r in bad)
    assert all(r["error"] is None for r in rows if r["solver"] == "fast")
    errors = report.recorded_errors(ctx.written)
    assert len(errors) == 3 and all("bits-only" in e and "boom" in e for e in errors)
    md = report.render(tmp_path)
    assert "## Recorded errors" in md and "RuntimeError: boom" in md


# ------------------------------------------------------------------------------- CLI
def test_cli_lists_bench_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    for cmd in ("solve", "train", "memory", "all", "quick"):
        assert cmd in text


def test_cli_rejects_unknown_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "solve", "--profile", "huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--profile 'huge'" in err and "quick" in err
    assert not (tmp_path / "results.md").exists()


def test_report_lists_sections_not_run(tmp_path: Path) -> None:
    md = report.render(tmp_path)
    assert "No data for: `sflam-opt bench solve`, `sflam-opt bench train`, " in md
    assert "## Machine and date" not in md


def test_profiles_size_the_published_benchmarks() -> None:
    full, quick = PROFILES["all"], PROFILES["quick"]
    assert full.bcd_sizes == (10, 100, 1000)
    assert full.fast_sizes == (10, 100, 1000, 10_000, 100_000)
    assert full.optimality_instances == 200 and full.repeats == 3
    assert full.savings_sizes == (10, 50, 200, 1000)
    assert full.train_alphas == (0.1, 0.5, 1.0) and len(full.train_seeds) == 3
    assert full.train_protocols == ("sflam", "sfl", "fl", "sl")
    assert full.train_uniform_bits == (2, 4, 8, 32)
    assert full.memory_batches == (8, 32, 128) and full.memory_model == "vit-b32"
    assert json.loads(json.dumps(quick.to_dict()))["name"] == "quick"
