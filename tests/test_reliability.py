"""What a user can type must not clobber files, crash with a traceback, or pass for success.

Each test covers a class of failure through the real entry point (``sflam_opt.cli.main``): exit
code, a single ``error:`` line on stderr, and the files left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sflam_opt import Scenario
from sflam_opt.cli import main

TRAIN = ["--devices", "3", "--rounds", "1", "--local-iters", "1", "--batch-size", "8"]
TRAIN += ["--solver", "equal", "--threads", "1"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "╭" not in err, err
    return errors[0]


@pytest.fixture
def scn(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(Scenario.default(3, 0).to_toml())
    return path


# ----------------------------------------------------------------------------- option errors
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--rounds", "abc"], "error: --rounds: 'abc' is not an integer"),
        (["scenario", "new", "--devices", "0"], "error: --devices: 0 is less than the minimum 1"),
        (["train", "--lr", "fast"], "error: --lr: 'fast' is not a number"),
        (["memory", "--seed", "-1"], "error: --seed: -1 is less than the minimum 0"),
        (["solve"], "error: Missing argument 'SCENARIO'"),
        (["solve", "s.toml", "--frobnicate"], "error: No such option: --frobnicate"),
        (["nosuchcommand"], "error: No such command 'nosuchcommand'"),
    ],
)
def test_option_errors_are_one_plain_line(capsys, args, expected) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert one_error_line(err).startswith(expected)


def test_verbose_works_after_the_subcommand(scn: Path) -> None:
    # In a fresh process: logging is configured once per process.
    code = f"import sys; from sflam_opt.cli import main; sys.exit(main({['solve', str(scn), '-s', 'equal', '-v']!r}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0 and "DEBUG" in proc.stderr


# ----------------------------------------------------------------------------- markup
def test_brackets_in_paths_and_messages_survive(capsys, tmp_path: Path, monkeypatch) -> None:
    # A relative path, so that the message fits a line whatever tmp_path's length (under
    # pytest -n it is longer than an 80-column console, which then wraps it).
    monkeypatch.chdir(tmp_path)
    odd = Path("x[/].toml")
    code, _, err = run(capsys, "scenario", "new", "-n", "2", "--out", str(odd))
    assert code == 0 and str(odd) in err and odd.is_file()
    code, out, _ = run(capsys, "scenario", "show", str(odd))
    assert code == 0 and "x[/].toml" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(odd.read_text().replace("kappa = 1e-28", "kappa = -1.0"))
    code, _, err = run(capsys, "solve", str(bad))
    assert code == 2 and "[system] kappa" in one_error_line(err)


# ----------------------------------------------------------------------------- --out targets
def test_solve_out_dev_null_keeps_the_device(capsys, scn: Path) -> None:
    before = os.stat("/dev/null")
    code, _, _ = run(capsys, "solve", str(scn), "-s", "equal", "--out", "/dev/null")
    after = os.stat("/dev/null")
    assert code == 0 and stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_solve_out_through_a_symlink_keeps_the_link(capsys, scn: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, _, _ = run(capsys, "solve", str(scn), "-s", "equal", "--out", str(link))
    assert code == 0 and link.is_symlink() and json.loads(real.read_text())["devices"]


@pytest.mark.parametrize(
    "command",
    [
        ["solve", "{scn}", "-s", "equal", "--out", "{bad}"],
        ["scenario", "new", "--out", "{bad}"],
        ["sweep", "{scn}", "-s", "equal", "--weights", "0,1", "--out", "{bad}"],
        ["calibrate", "--out", "{bad}"],
        ["train", *TRAIN, "--out", "{bad}"],
    ],
)
def test_every_writer_refuses_a_path_under_a_file_before_working(
    capsys, scn: Path, tmp_path: Path, command: list[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    bad = blocker / "out"
    args = [a.format(scn=scn, bad=bad) for a in command]
    code, out, err = run(capsys, *args)
    assert code == 2
    line = one_error_line(err)
    assert str(bad) in line and ".tmp" not in line
    assert out == ""  # refused before any result was produced
    assert blocker.read_text() == "a file, not a directory"


# ----------------------------------------------------------------------------- ranges, overflow
@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("noise_dbm_per_hz = -174.0", "noise_dbm_per_hz = 1e6", "noise_dbm_per_hz"),
        ("noise_dbm_per_hz = -174.0", "noise_dbm_per_hz = " + "9" * 400, "noise_dbm_per_hz"),
        ("samples = ", "samples = 99999999999999999999999\n#", "samples"),
        ("kappa = 1e-28", "kappa = 1e-3", "kappa"),
        ("bandwidth_hz = 20000000.0", "bandwidth_hz = 1e400", "bandwidth_hz"),
        ("distance_m = ", "gain_db = -4000.0\n#", "gain_db"),
        ("distance_m = ", "distance_m = 0.001\n#", "distance_m"),
        ("cpu_hz = ", "cpu_hz = 1e30\n#", "cpu_hz"),
        ("activation_elems = 37632", "activation_elems = " + "1" * 5000, "invalid TOML"),
    ],
)
def test_out_of_range_and_huge_numbers_are_one_line(
    capsys, scn: Path, old: str, new: str, field: str
) -> None:
    scn.write_text(scn.read_text().replace(old, new, 1))
    code, _, err = run(capsys, "solve", str(scn), "-s", "fast")
    assert code == 2
    line = one_error_line(err)
    assert field in line and len(line) < 300


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bits", "100000000000000000000"),
        ("bits", "1e20"),
        ("bandwidth_hz", "1" + "0" * 400),
        ("power_w", "-1.0"),
        ("bandwidth_hz", "1e400"),
    ],
)
def test_huge_allocation_numbers_are_one_line(capsys, scn: Path, tmp_path, key, value) -> None:
    alloc = tmp_path / "a.json"
    assert main(["solve", str(scn), "-s", "equal", "--out", str(alloc)]) == 0
    doc = json.loads(alloc.read_text())
    text = json.dumps(doc).replace(f'"{key}": {json.dumps(doc["devices"][1][key])}', "@", 1)
    alloc.write_text(text.replace("@", f'"{key}": {value}'))
    capsys.readouterr()
    code, _, err = run(capsys, "evaluate", str(scn), str(alloc))
    assert code == 2 and key in one_error_line(err)


# ----------------------------------------------------------------------------- fingerprint
def test_evaluate_warns_when_the_allocation_was_solved_for_another_scenario(
    capsys, scn: Path, tmp_path: Path
) -> None:
    alloc = tmp_path / "a.json"
    assert main(["solve", str(scn), "-s", "equal", "--out", str(alloc)]) == 0
    other = tmp_path / "other.toml"
    other.write_text(Scenario.default(3, 1).to_toml())
    capsys.readouterr()
    code, _, err = run(capsys, "evaluate", str(scn), str(alloc))
    assert code == 0 and "warning" not in err
    code, _, err = run(capsys, "evaluate", str(other), str(alloc))
    assert "warning" in err and "another scenario" in err
    # Files written before the fingerprint existed: no warning.
    doc = json.loads(alloc.read_text())
    del doc["scenario_sha256"]
    alloc.write_text(json.dumps(doc))
    code, _, err = run(capsys, "evaluate", str(other), str(alloc))
    assert "warning" not in err


# ----------------------------------------------------------------------------- statuses
def test_sweep_with_no_feasible_weight_exits_3(capsys, scn: Path, tmp_path: Path) -> None:
    scn.write_text(scn.read_text() + "\n[constraints]\nround_deadline_s = 1e-6\n")
    code, _, err = run(
        capsys, "sweep", str(scn), "-s", "fast", "--weights", "0,1", "--out", str(tmp_path / "w")
    )
    assert code == 3 and "infeasible" in err


def test_tables_never_cut_numbers(capsys, scn: Path) -> None:
    code, out, _ = run(capsys, "solve", str(scn), "-s", "fast")
    assert code == 0 and "…" not in out


# ----------------------------------------------------------------------------- training
def test_train_on_an_infeasible_scenario_exits_3(capsys, scn: Path) -> None:
    scn.write_text(scn.read_text() + "\n[constraints]\nround_deadline_s = 1e-6\n")
    code, _, err = run(capsys, "train", *TRAIN[:-4], "--solver", "fast", "--scenario", str(scn))
    assert code == 3 and "infeasible" in one_error_line(err)


def test_train_refuses_a_used_run_directory_and_a_locked_one(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, _ = run(capsys, "train", *TRAIN, "--out", str(out))
    assert code == 0
    first = (out / "metrics.jsonl").read_text()
    code, _, err = run(capsys, "train", *TRAIN, "--out", str(out))
    assert code == 2 and "--resume" in one_error_line(err) and "--overwrite" in err
    assert (out / "metrics.jsonl").read_text() == first
    # A foreign file in the directory is never deleted by --overwrite.
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "train", *TRAIN, "--out", str(out), "--overwrite")
    assert code == 2 and "notes.txt" in one_error_line(err)
    (out / "notes.txt").unlink()
    code, _, _ = run(capsys, "train", *TRAIN, "--out", str(out), "--overwrite")
    assert code == 0
    # Another process holding the run's lock: refused, naming its pid.
    with open(out / ".lock", "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write("424242\n")
        fh.flush()
        code, _, err = run(capsys, "train", *TRAIN, "--rounds", "2", "--out", str(out), "--resume")
        assert code == 2 and "in use by pid 424242" in one_error_line(err)
    code, _, _ = run(capsys, "train", *TRAIN, "--rounds", "2", "--out", str(out), "--resume")
    assert code == 0


def test_a_checkpoint_without_config_is_one_line(capsys, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": 1, "round": 1}, out / "checkpoint.pt")
    code, _, err = run(capsys, "train", *TRAIN, "--out", str(out), "--resume")
    assert code == 2 and "config" in one_error_line(err)


def test_a_diverging_run_exits_1_and_names_the_learning_rate(capsys) -> None:
    code, _, err = run(capsys, "train", *TRAIN[:2], "--rounds", "3", *TRAIN[4:], "--lr", "1e6")
    assert code == 1 and "--lr" in one_error_line(err)
