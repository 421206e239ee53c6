"""The trainer's CLI commands via typer's CliRunner: JSON output, tables, errors, files."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import typer
from typer.testing import CliRunner

from sflam_opt.scenario import Scenario
from sflam_opt.training.cli import register

SMALL = ["--devices", "3", "--rounds", "2", "--local-iters", "2", "--batch-size", "8"]
SMALL += ["--solver", "equal", "--threads", "1"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, as in the real sflam-opt app
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_train_json_prints_the_summary_and_writes_outputs(app, runner, tmp_path):
    res = runner.invoke(app, ["train", *SMALL, "--bits", "4", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    for key in ("final_test_accuracy", "uplink_bytes", "downlink_bytes", "rounds"):
        assert key in summary
    assert summary["rounds"] == 2 and summary["bits"] == [4, 4, 4]
    assert (
        json.loads((tmp_path / "summary.json").read_text())["uplink_bytes"]
        == summary["uplink_bytes"]
    )
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    # Resume to 3 rounds continues from the checkpoint.
    res = runner.invoke(
        app,
        [
            "train",
            *SMALL[2:],
            "--devices",
            "3",
            "--rounds",
            "3",
            "--bits",
            "4",
            "--json",
            "--out",
            str(tmp_path),
            "--resume",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rounds"] == 3


def test_train_table_output(app, runner):
    res = runner.invoke(app, ["train", *SMALL, "--protocol", "fl"])
    assert res.exit_code == 0, res.output
    assert "final test accuracy" in res.stdout and "uplink bytes" in res.stdout
    # Latency and energy are summed over the rounds, and the labels say so.
    assert "total simulated latency (s)" in res.stdout
    assert "total simulated energy (J)" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "nope"], "error: --protocol: invalid value 'nope'"),
        (["--bits", "40"], "error: --bits"),
        (["--alpha", "0"], "error: --alpha"),
        (["--dataset", "cifar10"], "error: --data-dir"),
        (["--devices-per-round", "9"], "error: --devices-per-round: invalid value 9"),
        (["--batch-size", "0"], "error: --batch-size: invalid value 0"),
        (["--resume"], "error: resume"),
        (["--scenario", "/no/such.toml"], "error: /no/such.toml: no such scenario file"),
        (
            ["--calibration", "foo"],
            "error: --calibration: invalid value 'foo'; choose one of auto, stored, online, scenario",
        ),
        (["--calibration", "online", "--rounds", "5"], "error: rounds: --calibration online"),
        (["--fit-rounds", "3"], "error: --fit-rounds: invalid value 3"),
    ],
)
def test_train_bad_input_exits_2_with_one_line(app, runner, args, message):
    res = runner.invoke(app, ["train", *SMALL, *args])
    assert res.exit_code == 2
    assert res.stderr.startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_calibrate_writes_a_scenario(app, runner, tmp_path):
    target = tmp_path / "cal.toml"
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--devices",
            "3",
            "--rounds",
            "4",
            "--alpha",
            "100",
            "--local-iters",
            "10",
            "--batch-size",
            "16",
            "--lr",
            "0.1",
            "--momentum",
            "0.9",
            "--bits",
            "3",
            "--threads",
            "1",
            "--seeds",
            "1",
            "--out",
            str(target),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    est = json.loads(res.stdout)
    assert "--bits 3 --seeds 1" in est["entry"]["command"]
    scen = Scenario.from_toml(target)
    c = scen.convergence
    assert (c.a, c.phi0, c.q, c.epsilon) == (est["a"], est["phi0"], est["q"], est["epsilon"])
    assert scen.n_devices == 3 and scen.training.local_iters == 10


@pytest.mark.slow
def test_train_calibrate_calibrates_saves_and_is_reused(app, runner):
    opts = ["--devices", "3", "--rounds", "4", "--alpha", "100", "--local-iters", "10"]
    opts += ["--batch-size", "16", "--lr", "0.1", "--momentum", "0.9", "--solver", "equal"]
    opts += ["--threads", "1", "--json"]
    res = runner.invoke(app, ["train", *opts, "--calibrate"])
    assert res.exit_code == 0, res.output
    assert "saved the bound's calibration" in res.stderr
    first = json.loads(res.stdout)
    assert first["allocation"]["convergence"].startswith("calibrated vit-tiny/digits")
    again = runner.invoke(app, ["train", *opts])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["allocation"] == first["allocation"]
    assert json.loads(again.stdout)["final_bound"] == first["final_bound"]
    other = runner.invoke(app, ["train", *opts, "--lr", "0.05", "--rounds", "1"])
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["allocation"]["convergence"].startswith("uncalibrated")


def test_calibrate_bad_bits(app, runner):
    res = runner.invoke(app, ["calibrate", "--bits", "2,x"])
    assert res.exit_code == 2 and res.stderr.startswith("error: bits: invalid list")


@pytest.mark.slow
def test_memory_json_and_bad_input(app, runner):
    res = runner.invoke(
        app, ["memory", "--model", "vit-tiny", "--batch", "4", "--protocol", "fl", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["device_peak_mb"] > 0 and out["protocol"] == "fl"
    res = runner.invoke(app, ["memory", "--protocol", "sl"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_train_says_where_it_stopped_and_resumes(
    app, runner, tmp_path, monkeypatch, signum
):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    from sflam_opt.training import trainer

    real_train = trainer.train

    def train_then_signal(config, *, progress):
        def after_round(row):
            progress(row)
            if row["round"] == 1:  # as a user pressing Ctrl-C (or `kill`) during round 2
                os.kill(os.getpid(), signum)

        return real_train(config, progress=after_round)

    monkeypatch.setattr(trainer, "train", train_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    args = ["train", *SMALL, "--rounds", "3", "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 130
    last = res.stderr.strip().splitlines()[-1]
    assert last == "interrupted after round 1; continue with --resume"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only set during the run
    monkeypatch.setattr(trainer, "train", real_train)
    res = runner.invoke(app, [*args, "--resume", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rounds"] == 3


def test_interrupted_message_says_when_there_is_nothing_to_resume(tmp_path):
    from sflam_opt.training.rundir import interrupted_message

    assert interrupted_message(None, 4).startswith("interrupted after round 4; nothing was saved")
    assert "--out DIR" in interrupted_message(None, 4)
    assert "nothing to resume" in interrupted_message(tmp_path, 0)
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    # The rounds saved on disk count, not the caller's last report.
    assert interrupted_message(tmp_path, 1) == "interrupted after round 2; continue with --resume"
