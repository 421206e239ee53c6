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
        (["solve", "{good}", "--solver", "nope"], "--solver 'nope': unknown solver"),
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


# ------------------------------------------------------------------------------ large outputs
def test_solve_document_is_the_result_to_dict_text(tmp_path: Path, capsys) -> None:
    # The CLI writes the device rows column-wise; the text must stay what to_dict gives.
    from sflam_opt.allocation import scenario_sha256
    from sflam_opt.blocks import with_resource_blocks
    from sflam_opt.cli import _solve_document
    from sflam_opt.jsonio import iter_json
    from sflam_opt.solvers import solve

    flat = Scenario.default(5, 1)
    blocks = with_resource_blocks(Scenario.default(3, 0), 5, seed=0)
    tight = flat.replace(constraints={"round_deadline_s": 1e-6})
    for scn, solver in ((flat, "fast"), (flat, "equal"), (blocks, "fast"), (tight, "fast")):
        res = solve(scn, solver=solver)
        expected = {"scenario_sha256": scenario_sha256(scn), **res.to_dict(scn)}
        got = "".join(iter_json(_solve_document(scn, res), "devices"))
        assert got == "".join(iter_json(expected, "devices")), (solver, res.status)


def test_npz_output_is_read_by_evaluate_like_json(tmp_path: Path, capsys) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(6, 2).to_toml())
    for name in ("a.json", "a.npz"):
        code, _, _ = run(capsys, "solve", str(scn), "-s", "fast", "--out", str(tmp_path / name))
        assert code == 0
    assert Allocation.load(tmp_path / "a.npz") == Allocation.load(tmp_path / "a.json")
    _, from_json, _ = run(capsys, "evaluate", str(scn), str(tmp_path / "a.json"), "--json")
    code, from_npz, err = run(capsys, "evaluate", str(scn), str(tmp_path / "a.npz"), "--json")
    assert code == 0 and from_npz == from_json and "warning" not in err


def test_npz_of_a_block_allocation_is_refused_before_solving(tmp_path: Path, capsys) -> None:
    scn = tmp_path / "b.toml"
    assert main(["scenario", "new", "-n", "3", "--blocks", "5", "--out", str(scn)]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, "solve", str(scn), "-s", "fast", "--out", str(tmp_path / "a.npz"))
    assert code == 2 and "--out" in err and "JSON only" in err
    assert not (tmp_path / "a.npz").exists()


def test_evaluate_lists_the_first_rows_and_all_with_all(tmp_path: Path, capsys) -> None:
    from sflam_opt.cli import SHOWN_ROWS

    n = SHOWN_ROWS + 7
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(n, 0).to_toml())
    alloc = tmp_path / "a.npz"
    assert main(["solve", str(scn), "-s", "equal", "--out", str(alloc)]) == 0
    capsys.readouterr()

    def device_lines(out: str) -> list[str]:
        return [ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()]

    code, out, _ = run(capsys, "evaluate", str(scn), str(alloc))
    assert code == 0 and len(device_lines(out)) == SHOWN_ROWS
    assert "... 7 more devices (--all lists every one)" in out and "rounds K" in out
    code, out, _ = run(capsys, "evaluate", str(scn), str(alloc), "--all")
    assert code == 0 and len(device_lines(out)) == n and "more devices" not in out


def test_plain_tables_keep_headers_and_numbers_whole(tmp_path: Path, capsys) -> None:
    # Output that is not a terminal: one line per row, whatever the width.
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(3, 0).to_toml())
    code, out, _ = run(capsys, "solve", str(scn), "-s", "fast")
    assert code == 0
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.split()[:2] == ["id", "bits"])
    assert header.split() == ("id bits bandwidth power W rate upload s latency s energy J".split())
    rows = lines[lines.index(header) + 2 : lines.index(header) + 5]
    assert [r.split()[0] for r in rows] == ["0", "1", "2"]
    assert all(r.split()[3] in ("Hz", "kHz", "MHz", "GHz") for r in rows)  # "4.038 MHz"


def test_terminal_tables_never_break_a_header_word_or_number(capsys, monkeypatch) -> None:
    from rich.console import Console
    from rich.table import Table

    from sflam_opt.console import print_table

    console = Console(force_terminal=True, width=30, markup=False, color_system=None)
    t = Table(title="narrow")
    for h in ("bandwidth MHz", "rate Mbit/s", "upload s"):
        t.add_column(h, justify="right")
    t.add_row("8.761e+05", "123.4 kbit/s", "0.0001234")
    print_table(console, t)
    out = capsys.readouterr().out
    for word in ("bandwidth", "MHz", "Mbit/s", "upload", "8.761e+05", "0.0001234", "kbit/s"):
        assert word in out, (word, out)


def test_si_units_keep_four_significant_digits() -> None:
    from sflam_opt.cli import _si

    fmt = _si("Hz")
    assert fmt([20.0, 19.87, 4.038e6, 2e7, 1.2e9, 0.0]) == [
        "20 Hz",
        "19.87 Hz",
        "4.038 MHz",
        "20 MHz",
        "1.2 GHz",
        "0 Hz",
    ]


def test_block_solve_table_shows_each_devices_blocks(tmp_path: Path, capsys) -> None:
    from sflam_opt.cli import _block_list

    assert _block_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8" and _block_list([3]) == "3"
    scn = tmp_path / "b.toml"
    assert main(["scenario", "new", "-n", "3", "--blocks", "6", "--out", str(scn)]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "solve", str(scn), "-s", "fast")
    assert code == 0
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.split()[:2] == ["id", "bits"])
    assert header.split()[2] == "blocks"
    shown = [ln.split()[2] for ln in lines[lines.index(header) + 2 :][:3]]
    got = sorted(
        b
        for text in shown
        for part in text.split(",")
        for b in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
    )
    assert got == list(range(6))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["solve", "{s}", "-s", "equal", "--max-iter", "3"], "--max-iter 3: not an option"),
        (["solve", "{s}", "-s", "fast", "--bits", "3"], "options it takes here: --max-iter"),
        (["solve", "{s}", "-s", "bcd", "--cvx-solver", "NOPE"], "--cvx-solver 'NOPE'"),
        (["solve", "{s}", "-s", "fixed-bits", "--bits", "99"], "--bits 99"),
        (["sweep", "{s}", "-s", "fast", "--weights", "2"], "--weights '2'"),
        (["scenario", "new", "-n", "5", "--blocks", "2"], "--blocks 2"),
    ],
)
def test_errors_name_the_command_line_option(tmp_path: Path, capsys, args, needle) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(3, 0).to_toml())
    code, _, err = run(capsys, *[a.format(s=scn) for a in args])
    assert code == 2 and needle in err, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0
    for internal in ("max_iter", "cvx_solver", "weights=", "blocks=", "bits="):
        assert internal not in err


def test_train_reads_an_npz_allocation(tmp_path: Path, capsys) -> None:
    # train --allocation goes through the public loader, which tells .npz from JSON. The
    # scenario sends vit-tiny's 256 activation values per sample, as the trained model does
    # (an allocation solved for another model is refused).
    scn = tmp_path / "s.toml"
    scn.write_text(Scenario.default(3, 0).replace(model={"activation_elems": 256}).to_toml())
    alloc = tmp_path / "a.npz"
    assert main(["solve", str(scn), "-s", "fast", "--out", str(alloc)]) == 0
    capsys.readouterr()
    args = ["train", "--scenario", str(scn), "--allocation", str(alloc), "--devices", "3"]
    args += ["--rounds", "1", "--local-iters", "1", "--batch-size", "8", "--threads", "1"]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert json.loads(out)["allocation"]["source"] == f"allocation:{alloc}"
