"""End-to-end trainer: outputs, exact resume, cost-model link, participants, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sflam_opt.allocation import Allocation
from sflam_opt.bounds import bound
from sflam_opt.costs import breakdown, payload_bits
from sflam_opt.errors import (
    AllocationError,
    InfeasibleError,
    ScenarioError,
    SflamError,
    TrainingConfigError,
)
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import solve
from sflam_opt.training import TrainConfig, train
from sflam_opt.training.online import WARMUP_BITS
from sflam_opt.training.trainer import (
    CHECKPOINT_NAME,
    CURVES_NAME,
    METRICS_NAME,
    SUMMARY_NAME,
    diverged,
    load_metrics,
    sample_participants,
)

#: A small, fast configuration (4 devices, 2 local steps of 8 samples).
SMALL = dict(devices=4, rounds=3, local_iters=2, batch_size=8, solver="equal", threads=1)


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_outputs_and_summary(tmp_path):
    res = train(TrainConfig(protocol="sflam", bits=4, out=str(tmp_path), **SMALL))
    rows = load_metrics(tmp_path)
    assert rows == res.metrics and [r["round"] for r in rows] == [1, 2, 3]
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    for key in (
        "final_test_accuracy",
        "uplink_bytes",
        "downlink_bytes",
        "rounds",
        "total_latency_s",
        "total_energy_j",
    ):
        assert key in summary
    assert summary["rounds"] == 3
    assert summary["uplink_bytes"] == sum(r["uplink_bytes"] for r in rows)
    assert summary["total_latency_s"] == pytest.approx(sum(r["latency_s"] for r in rows))
    assert summary["final_test_accuracy"] == rows[-1]["test_accuracy"]
    assert summary["bits"] == [4, 4, 4, 4]
    assert summary["diverged"] is False
    assert (tmp_path / CURVES_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    for r in rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["grad_sq_norm"] > 0
        assert r["bound"] == pytest.approx(bound(res.scenario, res.allocation.bits, r["round"]))
    # The bound falls with k: A / (eta tau k) + Phi0 + Phi_q(b).
    assert rows[0]["bound"] > rows[1]["bound"] > rows[2]["bound"]


def test_resume_after_interruption_is_bit_for_bit(tmp_path):
    cfg = dict(protocol="sflam", bits=3, **SMALL)
    full = train(TrainConfig(out=str(tmp_path / "full"), **cfg))

    # Interrupt after round 1 of 3, then resume with the same options.
    def stop_after_first(row):
        if row["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "cut"), **cfg), progress=stop_after_first)
    assert len(load_metrics(tmp_path / "cut")) == 1
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, **cfg))
    assert resumed.metrics == full.metrics
    assert _same_weights(resumed, full)
    assert load_metrics(tmp_path / "cut") == full.metrics


def test_k_rounds_then_resume_to_r_equals_r_rounds_for_sl(tmp_path):
    # SL carries a server optimizer (momentum) state across rounds: it must be checkpointed too.
    cfg = dict(SMALL, protocol="sl", momentum=0.9, lr=0.05)
    full = train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    train(TrainConfig(out=str(tmp_path / "b"), **{**cfg, "rounds": 2}))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **cfg))
    assert resumed.metrics == full.metrics
    assert _same_weights(resumed, full)


def test_resume_checks_the_checkpoint(tmp_path):
    cfg = dict(protocol="sfl", **SMALL)
    with pytest.raises(TrainingConfigError, match="no checkpoint"):
        train(TrainConfig(out=str(tmp_path), resume=True, **cfg))
    train(TrainConfig(out=str(tmp_path), **{**cfg, "rounds": 2}))
    with pytest.raises(TrainingConfigError, match=r"--lr 0\.15, not 0\.2") as info:
        train(TrainConfig(out=str(tmp_path), resume=True, **{**cfg, "lr": 0.2}))
    assert "\n" not in str(info.value)
    # Options are named as on the command line, never as the config's fields.
    with pytest.raises(TrainingConfigError, match="--local-iters 2, not 3") as info:
        train(TrainConfig(out=str(tmp_path), resume=True, **{**cfg, "local_iters": 3}))
    assert "local_iters" not in str(info.value)
    with pytest.raises(TrainingConfigError, match="already has 2 rounds"):
        train(TrainConfig(out=str(tmp_path), resume=True, **{**cfg, "rounds": 1}))
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"garbage")
    with pytest.raises(TrainingConfigError, match="cannot read checkpoint"):
        train(TrainConfig(out=str(tmp_path), resume=True, **cfg))


def test_uplink_bytes_match_the_cost_model_payload():
    # Solve the default scenario with the trained model's tables and check what was really sent.
    res = train(TrainConfig(protocol="sflam", bits=5, **{**SMALL, "rounds": 1}))
    scen, alloc, spec = res.scenario, res.allocation, res.spec
    assert scen.model.activation_elems == spec.activation_elems
    assert scen.model.device_params == spec.device_params
    assert scen.model.device_cycles_per_sample == spec.device_flops_per_sample
    assert scen.model.server_cycles_per_sample == spec.server_flops_per_sample
    assert (scen.training.batch_size, scen.training.local_iters) == (8, 2)
    assert scen.training.learning_rate == res.config.lr / (1 - res.config.momentum)  # eta_eff
    row = res.metrics[0]
    w_bytes = payload_bits(scen, alloc.bits)[row["participants"]].sum() / 8
    sent = row["traffic"]["up/activations/payload"] + row["traffic"]["up/model/payload"]
    assert sent == w_bytes  # exactly: beta*d*b is a whole number of bytes here
    # Everything else on the uplink is framing (quantizer headers, names) and 1-byte labels.
    tau, beta, n = 2, 8, len(row["participants"])
    labels = tau * beta * n
    overhead = row["uplink_bytes"] - w_bytes - labels
    assert 0 < overhead <= n * (tau * 64 + 1024)
    assert overhead / row["uplink_bytes"] < 0.02
    # Simulated latency/energy of the round are the cost model's under that allocation.
    bd = breakdown(scen, alloc)
    assert row["latency_s"] == pytest.approx(bd.latency_s[row["participants"]].max())
    assert row["energy_j"] == pytest.approx(bd.energy_j[row["participants"]].sum())
    assert scen.devices.samples.sum() == 1437  # D_n from the partition of the digits train set


def test_default_scenario_uses_a_calibration_of_exactly_this_configuration(
    tmp_path, monkeypatch, caplog
):
    from sflam_opt.bounds import effective_step
    from sflam_opt.training.calibration_store import calibration_key, save_calibration

    monkeypatch.setenv("SFLAM_OPT_CALIBRATION_DIR", str(tmp_path / "store"))
    config = TrainConfig(protocol="sflam", **{**SMALL, "rounds": 1})
    # No stored calibration of this configuration: section 7's constants, and a warning.
    with caplog.at_level("WARNING"):
        res = train(config)
    assert res.scenario.convergence == Scenario.default(devices=4, seed=0).convergence
    assert res.summary["allocation"]["convergence"].startswith("uncalibrated")
    assert "uncalibrated" in caplog.text and "sflam-opt calibrate" in caplog.text
    # The bound's eta is the effective step of momentum SGD.
    assert res.scenario.training.learning_rate == pytest.approx(effective_step(0.15, 0.5))
    constants = {"a": 3.0, "phi0": 1.0, "q": 5.0, "epsilon": 1.2}
    save_calibration({"config": calibration_key(config), "convergence": constants, "command": "x"})
    res = train(config)
    c = res.scenario.convergence
    assert {k: getattr(c, k) for k in constants} == constants
    assert res.summary["allocation"]["convergence"].startswith("calibrated vit-tiny/digits")
    # Any other lr (or alpha, momentum, batch...) is another configuration: not used.
    other = train(TrainConfig(protocol="sflam", **{**SMALL, "rounds": 1, "lr": 0.1}))
    assert other.summary["allocation"]["convergence"].startswith("uncalibrated")
    # --calibration auto prefers the stored calibration to a scenario file's [convergence] table
    # (issue 21); --calibration scenario keeps the file's own table.
    scen = Scenario.default(devices=4, seed=0)
    (tmp_path / "s.toml").write_text(scen.to_toml())
    small = {**SMALL, "rounds": 1, "scenario": str(tmp_path / "s.toml")}
    auto = train(TrainConfig(**small))
    assert {k: getattr(auto.scenario.convergence, k) for k in constants} == constants
    assert auto.summary["calibration"]["source"] == "stored"
    own = train(TrainConfig(calibration="scenario", **small))
    assert own.scenario.convergence == scen.convergence
    assert own.summary["allocation"]["convergence"] == "scenario"
    assert own.summary["calibration"]["source"] == "scenario"


def test_devices_per_round_trains_and_costs_only_the_participants():
    res = train(TrainConfig(protocol="sflam", bits=4, devices_per_round=2, **SMALL))
    for row in res.metrics:
        part = row["participants"]
        assert len(part) == 2 and len(set(part)) == 2
        assert part == sample_participants(0, row["round"], 4, 2).tolist()
        # Re-solved for the participants only: they share the whole band.
        got = row["allocation"]
        assert got["bits"] == [4, 4] and sum(got["bandwidth_hz"]) == pytest.approx(20e6)
        alloc = Allocation(np.array(got["bits"]), got["bandwidth_hz"], got["power_w"])
        bd = breakdown(res.scenario.subset(part), alloc)
        assert row["latency_s"] == pytest.approx(bd.latency_s.max(), rel=1e-12)
        assert row["energy_j"] == pytest.approx(bd.energy_j.sum(), rel=1e-12)
    assert len({tuple(r["participants"]) for r in res.metrics}) > 1


def test_allocation_and_scenario_files(tmp_path):
    scen = Scenario.default(devices=4, seed=3)
    (tmp_path / "s.toml").write_text(scen.to_toml())
    alloc = Allocation(np.array([2, 3, 4, 5]), np.full(4, 5e6), np.full(4, 0.1))
    alloc.save(tmp_path / "a.json")
    res = train(
        TrainConfig(
            protocol="sflam",
            allocation=str(tmp_path / "a.json"),
            scenario=str(tmp_path / "s.toml"),
            **{**SMALL, "rounds": 1},
        )
    )
    assert res.allocation == Allocation(
        alloc.bits, alloc.bandwidth_hz, alloc.power_w, scen.devices.ids
    )
    assert res.summary["bits"] == [2, 3, 4, 5]
    assert res.scenario.devices.cpu_hz.tolist() == scen.devices.cpu_hz.tolist()
    assert res.scenario.model.activation_elems == res.spec.activation_elems  # replaced
    # A non-quantizing protocol uses the same bandwidth and power with fp32 activations.
    sfl = train(
        TrainConfig(protocol="sfl", allocation=str(tmp_path / "a.json"), **{**SMALL, "rounds": 1})
    )
    assert sfl.summary["bits"] is None
    assert sfl.metrics[0]["uplink_bytes"] > res.metrics[0]["uplink_bytes"]


def test_cifar10_end_to_end_on_a_fake_archive(tmp_path):
    from test_data import write_fake_cifar

    write_fake_cifar(tmp_path / "cifar", per_file=8)
    res = train(
        TrainConfig(
            dataset="cifar10",
            data_dir=str(tmp_path / "cifar"),
            protocol="sflam",
            bits=8,
            devices=2,
            rounds=1,
            local_iters=1,
            batch_size=4,
            solver="equal",
        )
    )
    assert (res.spec.image_size, res.spec.in_chans) == (32, 3)
    assert res.scenario.model.activation_elems == res.spec.activation_elems
    assert 0.0 <= res.summary["final_test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"protocol": "fedprox"}, "protocol: invalid value 'fedprox'"),
        ({"model": "resnet"}, "model"),
        ({"dataset": "mnist"}, "dataset"),
        ({"dataset": "cifar10"}, "--data-dir"),
        ({"devices": 0}, "devices"),
        ({"devices": True}, "devices"),
        ({"devices": 5, "devices_per_round": 6}, r"^--devices-per-round: .*1\.\.5"),
        ({"alpha": -1.0}, "alpha"),
        ({"rounds": 0}, "rounds"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": 2.5}, "^--batch-size: "),
        ({"local_iters": -3}, "^--local-iters: "),
        ({"bits": 20}, "bits"),
        ({"bits": 0}, "bits"),
        ({"protocol": "fl", "bits": 4}, "--protocol sflam only"),
        ({"seed": -1}, "seed"),
        ({"threads": 0}, "threads"),
        ({"device": "tpu:zz"}, "device"),
        ({"resume": True}, "--out"),
    ],
)
def test_bad_config_values_raise_one_line_errors(kwargs, match):
    with pytest.raises(TrainingConfigError, match=match) as info:
        TrainConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_files_and_infeasible_scenarios(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        train(TrainConfig(scenario=str(tmp_path / "missing.toml"), **SMALL))
    scen = Scenario.default(devices=3)
    (tmp_path / "three.toml").write_text(scen.to_toml())
    with pytest.raises(TrainingConfigError, match="has 3 devices but --devices is 4"):
        train(TrainConfig(scenario=str(tmp_path / "three.toml"), **SMALL))
    Allocation(np.full(3, 4), np.full(3, 1e6), np.full(3, 0.1)).save(tmp_path / "a3.json")
    with pytest.raises(AllocationError, match="3 devices but --devices is 4"):
        train(TrainConfig(allocation=str(tmp_path / "a3.json"), **SMALL))
    Allocation(np.full(4, 20), np.full(4, 1e6), np.full(4, 0.1)).save(tmp_path / "a20.json")
    with pytest.raises(TrainingConfigError, match="device 0 has bits=20"):
        train(TrainConfig(allocation=str(tmp_path / "a20.json"), **SMALL))
    hard = Scenario.default(devices=4).replace(convergence={"epsilon": 0.1})
    (tmp_path / "hard.toml").write_text(hard.to_toml())
    with pytest.raises(InfeasibleError, match="infeasible") as info:
        train(TrainConfig(scenario=str(tmp_path / "hard.toml"), **SMALL))
    assert "\n" not in str(info.value) and info.value.exit_code == 3
    with pytest.raises(SflamError, match="solver"):
        train(TrainConfig(**{**SMALL, "solver": "no-such-solver"}))


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(TrainingConfigError, match="CUDA is not available"):
        train(TrainConfig(device="cuda", **SMALL))


def test_defaults_sflam_sends_under_half_of_sfl_and_is_fastest_in_simulation():
    # One round of each protocol with every default (20 devices, fast solver's bits): the
    # uplink bytes per round and the simulated round latency do not change across rounds.
    res = {p: train(TrainConfig(protocol=p, rounds=1)) for p in ("sflam", "sfl", "fl", "sl")}
    up = {p: r.metrics[0]["uplink_bytes"] for p, r in res.items()}
    lat = {p: r.metrics[0]["latency_s"] for p, r in res.items()}
    assert res["sflam"].summary["allocation"]["solver"] == "fast"
    assert max(res["sflam"].summary["bits"]) < 16
    assert up["sflam"] <= 0.5 * up["sfl"]
    assert lat["sflam"] < lat["sfl"] < lat["sl"]
    assert lat["sflam"] < lat["fl"]
    # All protocols are costed under the same allocation (bandwidth and power).
    assert all(
        r.allocation.bandwidth_hz.tolist() == res["sflam"].allocation.bandwidth_hz.tolist()
        for r in res.values()
    )


@pytest.mark.slow
def test_default_sflam_run_meets_the_targets_against_sfl(tmp_path):
    # Issue 6's targets at every default (digits, 20 devices, alpha 0.5, seed 0) with the fast
    # solver's bits: >= 95 % test accuracy, at most 1 point below fp32 SFL, at most half of its
    # uplink bytes. The runs are deterministic; across seeds the gap moves by about a point (the
    # test set has 360 images), see benchmarks/bench_train_defaults.py.
    # The fp32 SFL reference trains meanwhile in a second process (`sflam-opt train --json`), so
    # on two cores the test lasts one run, not two.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    reference = subprocess.Popen(
        [sys.executable, "-m", "sflam_opt.cli", "train", "--protocol", "sfl", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        res = train(TrainConfig(out=str(tmp_path)))
        stdout, stderr = reference.communicate(timeout=1800)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert reference.returncode == 0, stderr
    ref = json.loads(stdout)
    assert ref["protocol"] == "sfl" and ref["rounds"] == 80
    s = res.summary
    assert s["allocation"]["solver"] == "fast"
    assert max(s["bits"]) <= 16
    assert Path(tmp_path / METRICS_NAME).is_file()
    assert s["final_test_accuracy"] >= 0.95
    assert s["final_test_accuracy"] >= ref["final_test_accuracy"] - 0.01
    assert s["uplink_bytes"] <= 0.5 * ref["uplink_bytes"]


def test_diverged_flags_runs_that_end_far_above_their_start_and_a_uniform_guess():
    ln10 = float(np.log(10))
    learning = [2.4, 1.8, 1.1, 0.6, 0.4, 0.3, 0.25, 0.2, 0.2, 0.18]
    assert not diverged(learning, 10)
    # Split learning at alpha 0.1 in the benchmark: finite losses of 4..14 after a start of 2.8.
    blown = [2.76, 3.98, 3.96, 8.33, 10.2, 9.2, 8.2, 14.2, 3.8, 7.3]
    assert diverged(blown, 10)
    # The early rise of a healthy small run (SMALL above, 10 rounds) is not divergence.
    assert not diverged([2.22, 2.58, 2.5, 2.78, 2.8, 2.46, 2.42, 2.78, 2.38, 2.29], 10)
    # Above the start but below twice ln C, or one round only: not flagged.
    assert not diverged([2.0, 3.0, 4.5], 10) and 4.5 < 2 * ln10
    assert not diverged([9.0], 10)
    # Only the last rounds count: a late recovery clears the flag.
    assert not diverged([2.3, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 0.5], 10)


def test_fading_and_devices_per_round_resolve_every_round_against_the_static_run(monkeypatch):
    from sflam_opt.training import schedule

    cfg = {**SMALL, "devices": 6, "solver": "fast", "rounds": 3}
    static = train(TrainConfig(protocol="sflam", **cfg))
    faded = train(TrainConfig(protocol="sflam", fading="rayleigh", devices_per_round=3, **cfg))
    # The static run applies its one solve every round, and says so in metrics.jsonl.
    for row in static.metrics:
        part = row["participants"]
        assert row["allocation"]["bits"] == static.allocation.bits[part].tolist()
        assert row["allocation"]["bandwidth_hz"] == static.allocation.bandwidth_hz[part].tolist()
        assert row["allocation"]["status"] == "converged"
    # The faded run re-solves each round for its 3 participants under that round's gains.
    ids = faded.scenario.devices.ids
    for row in faded.metrics:
        part = row["participants"]
        gains = schedule.faded_gain_db(faded.scenario.devices.gain_db, 0, row["round"], "rayleigh")
        devices = [ids[i] for i in part]
        round_scn = faded.scenario.with_gains(dict(zip(devices, gains[part], strict=True))).select(
            devices
        )
        fresh = solve(round_scn, "fast")
        got = row["allocation"]
        assert got["status"] == fresh.status and len(got["bits"]) == 3
        assert got["objective"] == pytest.approx(fresh.objective, rel=1e-3)
        assert sum(got["bandwidth_hz"]) == pytest.approx(20e6, rel=1e-9)
        used = Allocation(np.array(got["bits"]), got["bandwidth_hz"], got["power_w"])
        bd = breakdown(round_scn, used)
        assert row["latency_s"] == pytest.approx(bd.latency_s.max(), rel=1e-12)
        assert row["energy_j"] == pytest.approx(bd.energy_j.sum(), rel=1e-12)
        # Uplink bytes follow this round's bits: activations of 3 devices at their widths.
        assert (
            row["uplink_payload_bytes"] < static.metrics[row["round"] - 1]["uplink_payload_bytes"]
        )
    assert len({tuple(r["allocation"]["bandwidth_hz"]) for r in faded.metrics}) == 3
    # Fading draws are seeded: the same run again gives the same rows.
    again = train(TrainConfig(protocol="sflam", fading="rayleigh", devices_per_round=3, **cfg))
    assert again.metrics == faded.metrics

    # With every device and the fading switched to identity, the per-round Allocator path
    # reproduces the static run: same bits, so the same training, and costs to round-off.
    monkeypatch.setattr(schedule, "faded_gain_db", lambda g, s, r, m: np.asarray(g))
    forced = train(TrainConfig(protocol="sflam", fading="rayleigh", **cfg))
    assert _same_weights(forced, static)
    for a, b in zip(static.metrics, forced.metrics, strict=True):
        for key in ("train_loss", "test_accuracy", "uplink_bytes", "downlink_bytes", "bound"):
            assert a[key] == b[key]
        assert b["latency_s"] == pytest.approx(a["latency_s"], rel=1e-9)
        assert b["energy_j"] == pytest.approx(a["energy_j"], rel=1e-9)


def test_static_run_is_unchanged_by_the_schedule():
    """No fading, full participation: costs are exactly those of the one solve, as before."""
    res = train(TrainConfig(protocol="sflam", **{**SMALL, "solver": "fast", "rounds": 2}))
    sol = solve(res.scenario, "fast")
    assert res.allocation == sol.allocation
    bd = breakdown(res.scenario, sol.allocation)
    for row in res.metrics:
        part = row["participants"]
        assert row["latency_s"] == float(bd.latency_s[part].max())
        assert row["energy_j"] == float(bd.energy_j[part].sum())


def test_fading_needs_the_solver(tmp_path):
    with pytest.raises(TrainingConfigError, match="fading: --fading rayleigh re-solves"):
        TrainConfig(fading="rayleigh", allocation=str(tmp_path / "a.json"), **SMALL)
    with pytest.raises(TrainingConfigError, match="fading: invalid value 'rician'"):
        TrainConfig(fading="rician", **SMALL)


def test_resume_with_fading_is_bit_for_bit(tmp_path):
    cfg = {**SMALL, "devices": 6, "solver": "fast", "fading": "rayleigh", "devices_per_round": 4}
    full = train(TrainConfig(out=str(tmp_path / "full"), **cfg))
    train(TrainConfig(out=str(tmp_path / "cut"), **{**cfg, "rounds": 1}))
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, **cfg))
    assert resumed.metrics == full.metrics
    assert _same_weights(resumed, full)


# ------------------------------------------------------------------------------ online calibration
def _refit(rows, target_rounds: int) -> dict[str, float]:
    """The constants an estimator fits on the fit-round ``rows`` (SMALL: lr 0.15, momentum 0.5)."""
    from sflam_opt import ConvergenceEstimator
    from sflam_opt.bounds import effective_step

    est = ConvergenceEstimator(step=effective_step(0.15, 0.5), local_iters=2)
    for row in rows:
        p = row["calibration"]["probe_sq_diff"]
        est.add_round(row["train_loss"], row["grad_sq_norm"], p, [2] * len(p))
    return est.fit(target_rounds=target_rounds).as_convergence()


def test_online_calibration_fits_on_the_fit_rounds_then_solves_with_the_constants(caplog):
    config = TrainConfig(calibration="online", fit_rounds=5, **{**SMALL, "rounds": 7})
    res = train(config)
    fit, after = res.metrics[:5], res.metrics[5:]
    # Fit rounds: 8-bit warm-up, the probe of every participant, no constants in force yet.
    for row in fit:
        assert row["bound"] is None and row["allocation"]["bits"] == [WARMUP_BITS] * 4
        probe = row["calibration"]
        assert probe["probe_bits"] == 2 and len(probe["probe_sq_diff"]) == 4
        assert all(v > 0 for v in probe["probe_sq_diff"])
    # The constants are those of the estimator fed rounds 1..5 only.
    want = _refit(fit, target_rounds=7)
    cal = res.summary["calibration"]
    assert cal["source"] == "online" and cal["fit_rounds"] == 5
    assert {k: cal[k] for k in want} == pytest.approx(want, rel=1e-12)
    c = res.scenario.convergence
    assert {k: getattr(c, k) for k in want} == pytest.approx(want, rel=1e-12)
    # Later rows: no probe, the solver's bits for these constants, the bound with both.
    for row in after:
        assert "calibration" not in row
        bits = np.array(row["allocation"]["bits"])
        assert row["bound"] == pytest.approx(bound(res.scenario, bits, row["round"]))
    assert res.summary["bits"] == after[-1]["allocation"]["bits"]


def test_online_calibration_needs_rounds_to_fit_and_predict():
    with pytest.raises(TrainingConfigError, match=r"^rounds: .*first 5 rounds.*--rounds >= 6"):
        train(TrainConfig(calibration="online", **{**SMALL, "rounds": 5}))
    with pytest.raises(
        TrainingConfigError,
        match=r"^--calibration: invalid value 'foo'; choose one of auto, stored, online, scenario",
    ):
        TrainConfig(calibration="foo")
    # auto on a run too short to fit: the scenario's constants, as before.
    short = train(TrainConfig(**{**SMALL, "rounds": 1}))
    assert short.summary["calibration"]["source"] == "scenario"


def test_allocation_solved_for_another_model_is_refused(tmp_path):
    scen = Scenario.default(devices=4, seed=0)  # ViT-B/32's 37,632 activation values
    (tmp_path / "s.toml").write_text(scen.to_toml())
    from sflam_opt.allocation import scenario_sha256

    a = solve(scen, solver="equal").allocation
    solved = Allocation(
        a.bits, a.bandwidth_hz, a.power_w, a.ids, scenario_sha256=scenario_sha256(scen)
    )
    solved.save(tmp_path / "a.json")
    with pytest.raises(AllocationError, match="activation_elems=37632 .* activation_elems=256"):
        train(
            TrainConfig(
                scenario=str(tmp_path / "s.toml"),
                allocation=str(tmp_path / "a.json"),
                **{**SMALL, "rounds": 1},
            )
        )


def test_online_calibration_resumes_bit_for_bit_before_and_after_the_fit(tmp_path):
    cfg = dict(calibration="online", fit_rounds=5, **{**SMALL, "rounds": 7})
    full = train(TrainConfig(out=str(tmp_path / "full"), **cfg))
    for cut in (3, 6):  # inside the fit rounds, and after the fit
        resumed = _interrupted_and_resumed(cfg, cut, str(tmp_path / f"cut{cut}"))
        assert resumed.metrics == full.metrics
        assert resumed.summary["calibration"] == full.summary["calibration"]
        assert _same_weights(resumed, full)


def _interrupted_and_resumed(cfg: dict, cut: int, out: str):
    """The run of ``cfg`` stopped after round ``cut`` into ``out``, then resumed."""

    def stop(row):
        if row["round"] == cut:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=out, **cfg), progress=stop)
    return train(TrainConfig(out=out, resume=True, **cfg))


def _unsupported_before(monkeypatch, first: int) -> None:
    """Make the estimator refuse fits on fewer than ``first`` rounds (a rising trajectory)."""
    from sflam_opt.estimator import ConvergenceEstimator

    real = ConvergenceEstimator.support

    def support(self, rounds=None):
        r = self._check_rounds(rounds)
        return "the squared gradient norm has not fallen" if r < first else real(self, r)

    monkeypatch.setattr(ConvergenceEstimator, "support", support)


def test_online_calibration_waits_for_a_fit_the_rounds_support(monkeypatch, tmp_path, caplog):
    _unsupported_before(monkeypatch, 7)
    cfg = dict(calibration="online", fit_rounds=5, **{**SMALL, "rounds": 9})
    res = train(TrainConfig(out=str(tmp_path / "full"), **cfg))
    # Rounds 1..7: the warm-up and the probe go on until the fit after round 7 (rounds 1..7).
    fit, after = res.metrics[:7], res.metrics[7:]
    assert all(r["bound"] is None and r["allocation"]["bits"] == [WARMUP_BITS] * 4 for r in fit)
    assert all("calibration" in r for r in fit) and not any("calibration" in r for r in after)
    want = _refit(fit, target_rounds=9)
    cal = res.summary["calibration"]
    assert cal["fit_rounds"] == 7 and {k: cal[k] for k in want} == pytest.approx(want, rel=1e-12)
    assert all(r["bound"] is not None for r in after)
    # Resuming inside the longer warm-up and after the late fit gives the same run.
    for cut in (6, 8):
        resumed = _interrupted_and_resumed(cfg, cut, str(tmp_path / f"cut{cut}"))
        assert resumed.metrics == res.metrics
        assert resumed.summary["calibration"] == cal


def test_online_calibration_that_never_fits_warns_and_keeps_the_warm_up(monkeypatch, caplog):
    _unsupported_before(monkeypatch, 100)
    res = train(TrainConfig(calibration="online", fit_rounds=5, **{**SMALL, "rounds": 6}))
    assert all(r["bound"] is None and "calibration" in r for r in res.metrics)
    cal = res.summary["calibration"]
    assert cal["fit_rounds"] == 6 and "has not fallen" in cal["unsupported"]
    assert "online calibration: no round supported a fit" in caplog.text


def test_fading_keeps_gains_in_the_valid_range():
    # Devices at both ends of formulation §11's [-200, 0] dB: some fades would carry them past
    # it, which the Allocator refuses mid-training; the faded gains stay inside.
    from sflam_opt.training import schedule

    gains = np.array([-199.5, -0.5] * 200)
    faded = [schedule.faded_gain_db(gains, 0, r, "rayleigh") for r in range(1, 6)]
    assert all(((f >= -200.0) & (f <= 0.0)).all() for f in faded)
    # The clip only touches the ends: a mid-range device fades as before.
    mid = schedule.faded_gain_db(np.array([-100.0]), 0, 1, "rayleigh")
    rng = np.random.default_rng([0, 1, schedule.PURPOSE_FADING])
    assert mid[0] == -100.0 + 10.0 * np.log10(rng.standard_exponential(1))[0]
