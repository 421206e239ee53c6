"""The sflam-opt command line: exit codes, one-line errors, no tracebacks, atomic outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sflam_opt import Allocation, Scenario
from sflam_opt.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_scenario_new_to_stdout_and_file_round_trips(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "scenario", "new", "--devices", "4", "--seed", "3")
    assert code == 0
    assert Scenario.from_toml_string(out) == Scenario.default(4, 3)
    path = tmp_path / "s.toml"
    code, _, _ = run(capsys, "scenario", "new", "-n", "4", "--seed", "3", "--out", str(path))
    assert code == 0 and Scenario.from_toml(path) == Scenario.default(4, 3)
    code, out, _ = run(capsys, "scenario", "show", str(path))
    assert code == 0 and "bandwidth_hz" in out and "2..16" in out


def test_solve_json_contract_and_evaluate(tmp_path: Path, capsys) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(3, 0).to_toml())
    alloc = tmp_path / "a.json"
    code, out, _ = run(
        capsys, "solve", str(scn), "--solver", "equal", "--json", "--out", str(alloc)
    )
    assert code == 0
    doc = json.loads(out)
    for key in (
        "status",
        "solver",
        "backend",
        "objective",
        "rounds",
        "rounds_ceil",
        "round_latency_s",
        "round_energy_j",
        "total_latency_s",
        "total_energy_j",
        "solve_time_s",
        "iterations",
        "devices",
    ):
        assert key in doc, key
    assert doc["objective"] == 1.0 and doc["solver"] == "equal"
    assert set(doc["devices"][0]) >= {
        "id",
        "bits",
        "bandwidth_hz",
        "power_w",
        "rate_bps",
        "upload_s",
        "latency_s",
        "energy_j",
    }
    assert json.loads(alloc.read_text()) == doc
    assert len(Allocation.load(alloc)) == 3  # the solve output is a valid allocation file
    code, out, _ = run(capsys, "evaluate", str(scn), str(alloc), "--json")
    assert code == 0 and json.loads(out)["objective"] == 1.0


def test_evaluate_lists_violations_and_exits_1(tmp_path: Path, capsys) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(2, 0).to_toml())
    bad = tmp_path / "a.json"
    bad.write_text(
        json.dumps(
            {
                "devices": [
                    {"id": 0, "bits": 40, "bandwidth_hz": 3e7, "power_w": 0.1},
                    {"id": 1, "bits": 8, "bandwidth_hz": 1e6, "power_w": 0.5},
                ]
            }
        )
    )
    code, out, _ = run(capsys, "evaluate", str(scn), str(bad))
    assert code == 1
    assert "bandwidth" in out and "power" in out and "bits" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["solve", "{missing}"], "no such scenario file"),
        (["solve", "{bad}"], "bandwith_hz: unknown key (did you mean 'bandwidth_hz'?)"),
        (["solve", "{good}", "--solver", "nope"], "solver='nope': unknown solver"),
        (["evaluate", "{good}", "{missing}"], "no such allocation file"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, args, needle) -> None:
    good = tmp_path / "good.toml"
    good.write_text(Scenario.default(2, 0).to_toml())
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("bandwidth_hz", "bandwith_hz", 1))
    paths = {"missing": str(tmp_path / "missing"), "bad": str(bad), "good": str(good)}
    code, out, err = run(capsys, *[a.format(**paths) for a in args])
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.strip().count("\n") == 0
    assert "Traceback" not in err + out


def test_failed_write_keeps_previous_file(tmp_path: Path, capsys, monkeypatch) -> None:
    target = tmp_path / "s.toml"
    target.write_text("previous contents\n")
    import sflam_opt.io as io

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    code, _, err = run(capsys, "scenario", "new", "--out", str(target))
    assert code == 1 and err.startswith("error: ") and "disk full" in err
    assert target.read_text() == "previous contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]  # no temp file left behind


def test_console_script_has_no_traceback_on_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sflam_opt.cli", "solve", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_written_files_get_normal_permissions(tmp_path: Path, capsys) -> None:
    import os

    mask = os.umask(0o022)
    try:
        target = tmp_path / "s.toml"
        assert main(["scenario", "new", "--out", str(target)]) == 0
        assert target.stat().st_mode & 0o777 == 0o644
        target.chmod(0o600)  # an existing file keeps its mode when rewritten
        assert main(["scenario", "new", "--out", str(target)]) == 0
        assert target.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["scenario", "new", "-n", "3"]])
def test_commands_that_do_not_train_start_without_torch(argv: list[str]) -> None:
    # torch takes ~2.5 s to import; help and the solver commands must not pay for it.
    code = (
        "import sys\n"
        "from sflam_opt.cli import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("argv", [["train", "--rounds", "1"], ["memory"]])
def test_training_commands_without_torch_say_so_in_one_line(argv: list[str]) -> None:
    # The trainer's commands are registered explicitly (no import hook); on a core install, where
    # torch is missing, they are still listed and fail with one line saying what to install.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # import torch now raises ModuleNotFoundError\n"
        "from sflam_opt.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "torch" in lines[0] and "pip install 'sflam-opt[train]'" in lines[0]
