"""Benchmarks: pieces of ``python -m benchmarks quick`` at tiny sizes.

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

from benchmarks import markdown, report
from benchmarks import memory as bench_memory
from benchmarks import solve as bench_solve
from benchmarks import train as bench_train
from benchmarks.__main__ import main
from benchmarks.common import (
    PROFILES,
    BenchContext,
    Profile,
    peak_memory,
    read_csv,
    read_json,
    write_csv,
)
from benchmarks.sections import SECTIONS
from benchmarks.solve import fit_exponent, gap_summary
from benchmarks.train import run_row, summarize
from sflam_opt import Scenario, solve
from sflam_opt.testing import small_instance

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000  # a drawn figure, not an empty canvas


def _ctx(tmp_path: Path, profile: Profile) -> BenchContext:
    return BenchContext(tmp_path, profile, f"python -m benchmarks test --out {tmp_path}")


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
    cold_runs=False,
)


def test_solve_section_writes_measured_values(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, TINY.replace(bcd_sizes=(), bcd_trace_sizes=(), cold_runs=True))
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
    # Cold: a fresh process pays the import and the first call, more than the solver's own time.
    assert all(r["cold_s"] > r["cold_import_s"] > 0 and r["cold_s"] > r["median_s"] for r in speed)
    assert all(r["first_s"] > 0 for r in speed)
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
    assert f"| fast | 10 | converged | {markdown.num(speed[0]['objective'])} |" in md
    assert markdown.num(eq["total_latency_s"]) in md
    missing = [f"`python -m benchmarks {name}`" for name in SECTIONS if name != "solve"]
    assert f"No data for: {', '.join(missing)}." in md


def test_bcd_parts_record_iterations(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, TINY)
    doc = bench_solve.run(ctx, parts=("speed", "bcd"))
    trace = read_csv(tmp_path / "figures" / "solve_bcd_trace.csv")
    runs = doc["bcd"]["runs"]
    # Default N=4 plus deadline, energy-cap and latency-only variants, each as shipped and pure.
    assert len(runs) == 8 and {r["solver"] for r in runs} == {"bcd", "bcd-pure"}
    for run in runs:
        mine = [
            r for r in trace if r["scenario"] == run["scenario"] and r["solver"] == run["solver"]
        ]
        assert len(mine) == run["iterations"] >= 1
        assert mine[-1]["objective"] == pytest.approx(run["objective"], rel=1e-6)
        assert run["gap_to_fast"] == pytest.approx(run["objective"] / run["fast_objective"] - 1)
    pure = next(r for r in runs if r["solver"] == "bcd-pure" and r["scenario"] == "default N=4")
    assert pure["warm_start"] == "equal" and pure["stall_escapes"] == 0
    first = next(r for r in trace if r["solver"] == "bcd-pure" and r["scenario"] == "default N=4")
    assert first["objective"] == pytest.approx(1.0)  # starts from the equal split, J = 1
    speed = read_csv(tmp_path / "figures" / "solve_speed.csv")
    assert [(r["solver"], r["n_devices"]) for r in speed][:2] == [("bcd", 4), ("bcd-pure", 4)]
    shipped = next(r for r in runs if r["solver"] == "bcd" and r["scenario"] == "default N=4")
    blocks = ("warm_start_s", "continuous_block_s", "bits_block_s", "escape_s")
    assert 0 < sum(shipped[b] for b in blocks) <= shipped["solve_time_s"]
    bits = {r["method"]: r for r in read_csv(tmp_path / "figures" / "solve_bits_methods.csv")}
    assert set(bits) == {"milp", "sweep", "relax"}
    # MILP and sweep are both exact for the block: the same J.
    assert bits["milp"]["objective"] == pytest.approx(bits["sweep"]["objective"], rel=1e-9)
    _png(tmp_path / "figures" / "solve_bcd_trace.png")
    md = report.render(tmp_path)
    assert "### BCD behaviour" in md and runs[0]["scenario"] in md
    assert "`bcd-pure` is pure block descent (`escape=False, warm_start=False`)" in md
    assert "Pure block descent (`bcd-pure`) solves the default scenario with N = 4" in md


def test_train_section_runs_and_reports(tmp_path: Path) -> None:
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
    assert markdown.pct(runs[0]["final_accuracy"]) in md


def test_worker_processes_reproduce_in_process_runs(tmp_path: Path) -> None:
    todo = [j for j in bench_train.jobs(TINY) if j["group"] == "protocols"]
    assert len(todo) == 2
    here = [bench_train.run_job(j) for j in todo]
    pooled = bench_train.execute(_ctx(tmp_path, TINY.replace(train_workers=2)), todo)
    for a, b in zip(here, pooled, strict=True):
        assert b["error"] is None and (b["protocol"], b["seed"]) == (a["protocol"], a["seed"])
        assert b["metrics"] == json.loads(json.dumps(a["metrics"]))  # same seed, same numbers


def test_memory_section_measures_both_protocols(tmp_path: Path) -> None:
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
    assert f"| sflam | 4 | {markdown.num(sflam['device_peak_mb'])} |" in md
    # `bench report` redraws from the data files alone.
    (tmp_path / "figures" / "memory.png").unlink()
    assert main(["report", "--out", str(tmp_path)]) == 0
    _png(tmp_path / "figures" / "memory.png")
    assert (tmp_path / "results.md").read_text(encoding="utf-8").count("## Memory benchmark") == 1


def test_solver_exception_is_recorded_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for cmd in ("solve", "train", "memory", "all", "quick"):
        assert cmd in text


def test_cli_rejects_unknown_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "--profile", "huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--profile 'huge'" in err and "quick" in err
    assert not (tmp_path / "results.md").exists()


def test_report_lists_sections_not_run(tmp_path: Path) -> None:
    md = report.render(tmp_path)
    missing = ", ".join(f"`python -m benchmarks {name}`" for name in SECTIONS)
    assert f"No data for: {missing}." in md
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
    # The training benchmark trains what `sflam-opt train` trains (and has a stored calibration).
    from sflam_opt.training.config import TrainConfig

    cfg = TrainConfig()
    assert (full.train_devices, full.train_rounds, full.train_lr, full.train_momentum) == (
        cfg.devices,
        cfg.rounds,
        cfg.lr,
        cfg.momentum,
    )
    assert (full.train_batch_size, full.train_local_iters) == (cfg.batch_size, cfg.local_iters)


def test_bound_verdicts_flag_ratios_outside_the_band() -> None:
    from benchmarks.train_report import _verdict

    assert _verdict([0.5, 0.9], "calibrated") == "holds"
    assert "not a bound" in _verdict([0.9, 1.2], "calibrated")
    assert "vacuous" in _verdict([0.1, 0.5], "calibrated")
    verdict = _verdict([3.0], "uncalibrated: docs/formulation.md §7 constants")
    assert verdict.startswith("uncalibrated") and "not a bound" in verdict


def test_gap_lines_compare_final_and_last_rounds() -> None:
    from benchmarks.train_report import _gap_lines

    def row(p: str, seed: int, fin: float, last: float) -> dict:
        return {
            "group": "protocols",
            "alpha": 0.1,
            "protocol": p,
            "seed": seed,
            "final_accuracy": fin,
            "last10_accuracy": last,
        }

    lines = _gap_lines(
        [
            row("sflam", 0, 0.90, 0.91),
            row("sflam", 1, 0.92, 0.93),
            row("sfl", 0, 0.93, 0.90),
            row("sfl", 1, 0.93, 0.90),
        ]
    )
    assert len(lines) == 1
    assert "-2.00 points, mean of 2 and 2 seeds" in lines[0] and "+2.00 points" in lines[0]


def test_sflam_opt_bench_runs_the_checkout_benchmarks(capfd: pytest.CaptureFixture[str]) -> None:
    from sflam_opt.cli import main as sflam_main

    assert sflam_main(["bench", "--help"]) == 0
    text = capfd.readouterr().out
    assert "python -m benchmarks" in text and "quick" in text


def test_sflam_opt_bench_outside_a_checkout_says_where_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sflam_opt.cli as cli

    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "sflam_opt" / "cli.py"))
    assert cli.main(["bench", "quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "python -m benchmarks" in err and "checkout" in err


def test_registered_section_is_run_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    from benchmarks import sections

    mod = types.ModuleType("bench_probe")

    def run(ctx: BenchContext) -> None:
        ctx.csv("probe", [{"x": 1.5}], ["x"])
        ctx.json("probe", {"meta": ctx.meta("probe", 0.0, "now")})

    mod.run = run
    mod.draw = lambda figures: []
    mod.report = lambda figures, doc: [
        "## Probe",
        "",
        f"x = {read_csv(figures / 'probe.csv')[0]['x']}",
    ]
    mod.headlines = lambda figures, doc: ["the probe ran"]
    monkeypatch.setitem(sys.modules, "bench_probe", mod)
    with pytest.raises(ValueError, match="taken"):
        sections.register("quick", "bench_probe", "clashes with a command")
    sections.register("probe", "bench_probe", "A probe.")
    try:
        from benchmarks.__main__ import run_sections

        times, errors = run_sections(["probe"], tmp_path, TINY, "python -m benchmarks probe")
        md = (tmp_path / "results.md").read_text(encoding="utf-8")
    finally:
        del sections.SECTIONS["probe"]
    assert list(times) == ["probe"] and errors == []
    assert "- the probe ran" in md and "## Probe" in md and "x = 1.5" in md
    assert "`python -m benchmarks solve`" in md  # the other sections are listed as not run


# ------------------------------------------------------------------------------- check
def _git(repo: Path, *args: str) -> str:
    import subprocess

    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "--short", "HEAD")


def _made_at(commit: str) -> str:
    return json.dumps({"meta": {"machine": {"git_commit": commit}}})


def test_check_lists_sections_whose_measured_code_changed_and_orphan_files(
    tmp_path: Path,
) -> None:
    from benchmarks.check import check, format_findings
    from benchmarks.sections import Report, Section

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    made = _commit(repo, {"pkg/a.py": "a = 1\n", "pkg/b.py": "b = 1\n"}, "code")
    links = "[a](figures/a.json) [b](figures/b.json) [c](figures/b.csv)\n"
    _commit(
        repo,
        {
            "docs/results.md": links,
            "docs/figures/a.json": _made_at(made),
            "docs/figures/b.json": _made_at(made),
            "docs/figures/b.csv": "x\n1\n",
            "docs/theory.md": "Made from docs/theory/runs/*.json.\n",
            "docs/theory/runs/r1.json": "{}",
        },
        "results",
    )
    sections = {
        "a": Section("a", "m", "h", measures=("pkg/a.py",)),
        "b": Section("b", "m", "h", measures=("pkg/b.py",)),
    }
    reports = {"t": Report("docs/theory.md", data=("docs/theory",), measures=("pkg/b.py",))}
    fresh = check(repo / "docs", sections=sections, reports=reports)
    assert fresh == [] and format_findings(fresh) == "nothing stale"

    _commit(repo, {"pkg/a.py": "a = 2\n", "docs/figures/old.png": "png"}, "change a")
    found = check(repo / "docs", sections=sections, reports=reports)
    assert [(f.kind, f.subject) for f in found] == [
        ("stale", "a (docs/results.md)"),
        ("orphan", "docs/figures/old.png"),
    ]
    assert f"made at {made} (2 commits ago)" in found[0].detail
    assert found[0].detail.endswith("since: pkg/a.py")

    # The theory-style report dates from its data's last commit; a link to a deleted file and a
    # section without data are listed too.
    _commit(repo, {"pkg/b.py": "b = 2\n", "docs/results.md": links + "[d](figures/d.csv)\n"}, "b")
    (repo / "docs/figures/old.png").unlink()
    kinds = {(f.kind, f.subject) for f in check(repo / "docs", sections=sections, reports=reports)}
    assert kinds == {
        ("stale", "a (docs/results.md)"),
        ("stale", "b (docs/results.md)"),
        ("stale", "t (docs/theory.md)"),
        ("missing", "docs/figures/d.csv"),
    }
    sections["c"] = Section("c", "m", "h")
    lines = format_findings(check(repo / "docs", sections=sections, reports=reports))
    assert "not run: c (docs/results.md): no docs/figures/c.json" in lines
    assert "unchecked: c (docs/results.md): declares no measured paths" in lines


def test_check_command_reports_and_rejects_a_bad_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--out", str(tmp_path / "nowhere")]) == 2
    assert "--out" in capsys.readouterr().err
    repo_docs = Path(__file__).resolve().parents[1] / "docs"
    assert main(["check", "--out", str(repo_docs)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["nothing stale"] or all(": " in line for line in out)


def test_declared_measured_paths_exist() -> None:
    from benchmarks.sections import REPORTS

    root = Path(__file__).resolve().parents[1]
    units = {**SECTIONS, **REPORTS}
    # A section registered without measures is listed as unchecked by `check`, not failed here.
    assert all(units[n].measures for n in ("solve", "train", "memory", "alloc", "theory"))
    for name, unit in units.items():
        for path in unit.measures:
            assert (root / path).exists(), f"section {name}: measured path {path} does not exist"


def test_allocator_headline_names_its_setup_and_says_why_bcd_differs_from_the_ladder(
    tmp_path: Path,
) -> None:
    from benchmarks import allocator

    machine = {"load_avg_1m_at_start": 1.5, "load_avg_1m": 2.25, "usable_cores": 2}
    summary = {
        "n": 1000,
        "solver": "bcd",
        "participants_median": 498.0,
        "step_median_s": 0.25,
        "fresh_median_s": 3.5,
        "min_j_gap": -1e-7,
        "max_j_gap": 0.0,
    }
    doc = {
        "meta": {"machine": {**machine, "git_commit": "bbbbbbb"}},
        "setup": {"seed": 0, "share": 0.5},
        "summary": [summary, {**summary, "solver": "fast"}],
    }
    heads = allocator.headlines(tmp_path, doc)
    assert len(heads) == 2  # no speed ladder data: nothing to compare with
    assert "fading redrawn every round; load 1.5 to 2.25 on 2 cores" in heads[0]
    write_csv(
        tmp_path / "solve_speed.csv",
        [{"solver": "bcd", "n_devices": 1000, "median_s": 0.6}],
        ["solver", "n_devices", "median_s"],
    )
    (tmp_path / "solve.json").write_text(json.dumps({"meta": {"machine": {"git_commit": "a1"}}}))
    heads = allocator.headlines(tmp_path, doc)
    assert len(heads) == 3  # one sentence, for bcd only
    assert heads[1].startswith(
        "`bcd` at N = 1,000 takes 0.6 s in the solver speed ladder but 3.5 s"
    )
    assert "about 498 participants" in heads[1] and "(a1 and bbbbbbb)" in heads[1]


def test_theory_run_stores_its_metrics_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import theory

    monkeypatch.setattr(theory, "RUNS", tmp_path)
    cfg = {"protocol": "sfl", "alpha": 0.5, "seed": 3, "devices": 3, "rounds": 2, "local_iters": 1}
    assert main(["theory", "one", json.dumps(cfg)]) == 0
    doc = read_json(tmp_path / "sfl_a0.5_s3_devices3_rounds2.json")
    assert doc["config"] == cfg and [m["round"] for m in doc["metrics"]] == [1, 2]
    assert doc["machine"]["usable_cores"] >= 1 and "load_avg_1m_at_start" in doc["machine"]
    assert theory.load_run(cfg) == doc


def test_fast_profile_section_accounts_for_the_solve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import fast_profile

    monkeypatch.setitem(fast_profile.PLANS, "tiny", (300, 1))
    fast_profile.run(_ctx(tmp_path, TINY))
    doc = read_json(tmp_path / "figures" / "fastprof.json")
    warm, first = doc["warm"], doc["first_call"]
    for part in (warm, first):
        assert part["devices"] == 300 and part["repeats"] == 1
        assert 0 < part["wall_s"]["min"] <= part["wall_s"]["median"]
        assert 0 < part["cpu_s"]["min"] <= part["cpu_s"]["median"]
        rows = part["phases"]
        assert [r["phase"] for r in rows][-2:] == ["other", "total"]
        total = rows[-1]["seconds"]
        top = [r for r in rows[:-1] if not r["phase"].startswith(" ")]
        # The phases and "other" add up to the measured total; shares are of that total.
        assert sum(r["seconds"] for r in top) == pytest.approx(total, rel=1e-9)
        assert all(r["seconds"] >= 0 for r in top)
        assert all(r["share"] == pytest.approx(r["seconds"] / total) for r in rows)
        by = {r["phase"]: r["seconds"] for r in rows}
        for phase in ("first continuous solve", "Dinkelbach steps", "evaluate"):
            assert by[phase] > 0, phase
    by_warm = {r["phase"]: r["seconds"] for r in warm["phases"]}
    by_first = {r["phase"]: r["seconds"] for r in first["phases"]}
    lookup = "solver lookup (first call: imports every solver module)"
    # Only a fresh process pays the imports.
    assert by_first["import sflam_opt"] > 0 and by_first[lookup] > 10 * by_warm[lookup]
    assert first["wall_s"]["median"] > first["import_s"]["median"] > 0
    ref = solve(Scenario.default(devices=300, seed=0), solver="fast")
    assert warm["objective"] == pytest.approx(ref.objective, rel=1e-12)
    md = report.render(tmp_path)
    assert "## Where `fast` spends its time" in md
    assert '`solve(Scenario.default(devices=300, seed=0), solver="fast")`' in md
    assert f"| **total** | {warm['phases'][-1]['seconds']:.3f} | 100 % |" in md


def test_faded_table_runs_alone_and_reports(tmp_path: Path) -> None:
    from benchmarks import solve_faded

    ctx = _ctx(tmp_path, TINY.replace(train_workers=2))
    doc = solve_faded.run(ctx)
    rows = read_csv(tmp_path / "figures" / "solve_faded.csv")
    # OTHER_SIZES: N = 8, two draws, each by fast, bcd and bcd-pure.
    assert len(rows) == 6 and {r["solver"] for r in rows} == {"fast", "bcd", "bcd-pure"}
    assert all(r["draw_seed"] >= solve_faded.EVAL_SEED0 for r in rows)
    assert not set(solve_faded.DESIGN_SEEDS) & {r["draw_seed"] for r in rows}
    for r in rows:
        assert r["status"] in ("optimal", "converged"), r
        if r["solver"] != "fast":
            assert r["fallbacks"] == 0 and r["failures"] == 0 and r["outer_iterations"] >= 1
            assert r["gap_to_fast"] > -1e-6
    summary = {r["solver"]: r for r in doc["summary"]}
    assert summary["bcd-pure"]["draws"] == 2
    md = report.render(tmp_path)
    assert "## Solvers under faded channels" in md and "### Faded channels" in md
    assert doc["workers"] == 2
    # The pool changes where the draws run, not what they give.
    alone = solve_faded.faded(_ctx(tmp_path / "one", TINY.replace(train_workers=1)))
    pooled = [(r["n_devices"], r["draw_seed"], r["solver"], r["status"]) for r in rows]
    one = read_csv(tmp_path / "one" / "figures" / "solve_faded.csv")
    assert [(r["n_devices"], r["draw_seed"], r["solver"], r["status"]) for r in one] == pooled
    assert [r["objective"] for r in one] == [r["objective"] for r in rows]
    assert alone["workers"] == 1


# ------------------------------------------------------------------------------- uncalibrated
def test_uncalibrated_section_runs_at_tiny_size_on_evaluation_seeds_only(tmp_path: Path) -> None:
    from benchmarks import uncalibrated

    assert not set(uncalibrated.EVAL_SEEDS) & set(uncalibrated.DESIGN_SEEDS)
    assert SECTIONS["uncalibrated"].module == "benchmarks.uncalibrated"
    # None of the configurations has a stored calibration: the bound is the online one.
    from sflam_opt.training.calibration_store import find_calibration
    from sflam_opt.training.config import TrainConfig

    for _, overrides in uncalibrated.CONFIGS:
        cfg = TrainConfig(**overrides)
        assert find_calibration(cfg) is None
    ctx = _ctx(tmp_path, PROFILES["quick"])
    doc = uncalibrated.run(ctx)
    row, flower = doc["rows"]
    assert row["seed"] in uncalibrated.EVAL_SEEDS and row["fit_rounds"] >= 5
    assert 0 < row["uplink_ratio"] < 1  # 4-bit fit rounds, then solved bits, against fp32
    assert flower["config"].startswith("Flower example") and flower["sfl_accuracy"] is None
    assert 5 <= flower["fit_rounds"] <= 12 and 0 < flower["uplink_ratio"] < 1
    for r in (row, flower):  # a run that fitted has ratios after the fit
        assert r["fit_rounds"] == 12 or r["max_ratio"] >= r["median_ratio"] > 0
    assert (tmp_path / "figures" / "uncalibrated_runs.csv").is_file()
    text = "\n".join(uncalibrated.report(tmp_path / "figures", doc))
    assert "## Bound on configurations never calibrated" in text and "seeds [21]" in text
    # The pool gives the rows of one process (every run is seeded).
    assert uncalibrated.rows_of(uncalibrated.PLANS["quick"], ctx.progress, workers=1) == doc["rows"]


def test_report_links_every_data_file_of_a_section(tmp_path: Path) -> None:
    from benchmarks.report import _unlinked_data

    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("scale.json", "scale_rows.csv", "scaled.json", "scale.png"):
        (figures / name).write_text("{}")
    doc = {"meta": {"command": "python -m benchmarks scale --out docs"}}
    lines = _unlinked_data(figures, "scale", doc, "see [`scale.json`](figures/scale.json)")
    assert len(lines) == 2 and "`python -m benchmarks scale --out docs`" in lines[0]
    # Only the section's own unlinked data: not another stem, not a figure, not what is linked.
    assert "(figures/scale_rows.csv)" in lines[0]
    assert "scaled.json" not in lines[0] and "scale.png" not in lines[0]
    assert "(figures/scale.json)" not in lines[0]
    linked = "[a](figures/scale.json) [b](figures/scale_rows.csv)"
    assert _unlinked_data(figures, "scale", doc, linked) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_run_spawned_returns_results_in_job_order(workers: int) -> None:
    from benchmarks.common import run_spawned

    finished: list[int] = []
    jobs = [(2, 3), (3, 2), (5, 1)]
    got = run_spawned(pow, jobs, workers, finished.append, order=[2, 0, 1])
    assert got == [8, 9, 5]
    assert sorted(finished) == [0, 1, 2]
    if workers == 1:
        assert finished == [2, 0, 1]  # in this process, in the order given


def test_same_code_compares_only_the_measured_paths(tmp_path: Path) -> None:
    import subprocess

    from benchmarks.check import same_code

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "data.json").write_text("{}\n")
    git("add", ".")
    git("commit", "-qm", "one")
    first = git("rev-parse", "--short", "HEAD")
    (tmp_path / "data.json").write_text('{"x": 1}\n')
    git("commit", "-qam", "data only")
    data = git("rev-parse", "--short", "HEAD")
    (tmp_path / "code.py").write_text("a = 2\n")
    git("commit", "-qam", "code")
    code = git("rev-parse", "--short", "HEAD")
    assert same_code(tmp_path, first, data, ["code.py"]) is True
    assert same_code(tmp_path, first, code, ["code.py"]) is False
    assert same_code(tmp_path, first, "0" * 12, ["code.py"]) is None


def test_design_runs_reads_only_default_configuration_runs(tmp_path: Path) -> None:
    import json
    import math

    from scipy.stats import t as student_t

    from benchmarks.design_runs import design_figures

    g = np.concatenate([np.linspace(20.0, 10.0, 8), [10.0, 12.0] * 4, np.full(64, 2.0)])
    g[-8:] = 3.0
    run = {"config": {"protocol": "sfl", "alpha": 0.5, "seed": 0}, "metrics": []}
    run["metrics"] = [{"grad_sq_norm": float(v)} for v in g]
    (tmp_path / "sfl_a0.5_s0.json").write_text(json.dumps(run))
    other = {**run, "config": {**run["config"], "devices": 10}}
    other["metrics"] = [{"grad_sq_norm": 100.0} for _ in g]
    (tmp_path / "sfl_a0.5_s0_devices10.json").write_text(json.dumps(other))
    f = design_figures(tmp_path)
    assert f["runs"] == 1 and f["fit_rounds"] == 16
    late = np.array([10.0, 12.0] * 4)  # rounds R/2..R (8..15)
    margin = student_t.ppf(0.95, 7) * late.std(ddof=1) / math.sqrt(8)
    assert math.isclose(f["margin_share_min"], margin / 11.0, rel_tol=1e-12)
    assert math.isclose(f["online_phi0_max"], 11.0 + margin, rel_tol=1e-12)
    assert f["last8_mean_min"] == f["last8_mean_max"] == 3.0
