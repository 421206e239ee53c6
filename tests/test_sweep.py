"""Pareto sweep over latency weights: weight parsing, rows, CSV and the PNG plot."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import reference_scenarios as rs

from sflam_opt import sweep
from sflam_opt.errors import SolverArgumentError


# ------------------------------------------------------------------------------ parse_weights
def test_start_stop_count():
    np.testing.assert_allclose(sweep.parse_weights("0:1:11"), np.linspace(0, 1, 11))
    np.testing.assert_allclose(sweep.parse_weights(" 0.2 : 0.4 : 3 "), [0.2, 0.3, 0.4])
    np.testing.assert_allclose(sweep.parse_weights("0.5:0.5:1"), [0.5])


def test_lists_and_single_values_are_sorted_and_distinct():
    np.testing.assert_allclose(sweep.parse_weights("1,0,0.5,0.5"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(sweep.parse_weights("0.25"), [0.25])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("", "empty"),
        ("0:2:11", "outside [0, 1]"),
        ("-0.1,0.5", "outside [0, 1]"),
        ("a:1:3", "'a' is not a number"),
        ("0:1", "expected 3 fields"),
        ("0:1:0", "COUNT must be >= 2"),
        ("0:1:1", "COUNT must be >= 2"),
        ("0:1:2.5", "not a whole number"),
        ("1:0:3", "START 1 is above STOP 0"),
        ("0,,1", "empty entry"),
        ("nan", "outside [0, 1]"),
    ],
)
def test_bad_weight_specs_raise_one_line_errors(spec, needle):
    with pytest.raises(SolverArgumentError) as err:
        sweep.parse_weights(spec)
    msg = str(err.value)
    assert needle in msg and f"weights={spec!r}" in msg and "\n" not in msg
    assert "0:1:11" in msg  # the fix: an accepted form


# ------------------------------------------------------------------------------ pareto
@pytest.fixture(scope="module")
def exact_rows():
    calls = []
    rows = sweep.pareto(
        rs.named()["two_device"],
        [0.0, 0.25, 0.5, 0.75, 1.0],
        solver="exact",
        progress=lambda i, row: calls.append((i, row["weight"])),
    )
    return rows, calls


def test_rows_have_every_column_and_progress_is_reported(exact_rows):
    rows, calls = exact_rows
    assert calls == [(i, w) for i, w in enumerate([0.0, 0.25, 0.5, 0.75, 1.0])]
    for r in rows:
        assert tuple(r) == sweep.COLUMNS
        assert r["status"] == "optimal"
        assert r["total_latency_s"] == pytest.approx(r["rounds"] * r["round_latency_s"])
        assert r["total_energy_j"] == pytest.approx(r["rounds"] * r["round_energy_j"])


def test_weighted_sum_front_trades_latency_for_energy(exact_rows):
    """For global optima, raising the latency weight never raises latency nor lowers energy."""
    rows, _ = exact_rows
    lat = np.array([r["total_latency_s"] for r in rows])
    en = np.array([r["total_energy_j"] for r in rows])
    assert np.all(np.diff(lat) <= 1e-9 * lat[:-1])
    assert np.all(np.diff(en) >= -1e-9 * en[:-1])
    assert lat[0] > lat[-1] and en[0] < en[-1]
    assert len(sweep.pareto_front(rows)) == len({(a, b) for a, b in zip(lat, en, strict=True)})


def test_bcd_sweep_matches_exact_sweep(exact_rows):
    rows, _ = exact_rows
    bcd_rows = sweep.pareto(rs.named()["two_device"], [0.25, 0.75], solver="bcd", max_iter=30)
    for r, e in zip(bcd_rows, (rows[1], rows[3]), strict=True):
        assert r["status"] == "converged"
        assert r["objective"] == pytest.approx(e["objective"], rel=1e-5)


def test_infeasible_weights_give_empty_totals():
    scn = rs.named()["deadline_infeasible"]  # infeasible at every weight
    rows = sweep.pareto(scn, [0.5], solver="fast")
    assert rows[0]["status"] == "infeasible"
    assert rows[0]["total_latency_s"] is None and rows[0]["objective"] is None
    assert "deadline" in rows[0]["message"]


def test_pareto_rejects_bad_arguments():
    scn = rs.named()["two_device"]
    with pytest.raises(SolverArgumentError, match="outside"):
        sweep.pareto(scn, [0.5, 1.5])
    with pytest.raises(SolverArgumentError, match="empty"):
        sweep.pareto(scn, [])
    with pytest.raises(SolverArgumentError, match="solver='nope'"):
        sweep.pareto(scn, [0.5], solver="nope")


def test_pareto_front_drops_dominated_and_infeasible_rows():
    def row(w, lat, en, status="optimal"):
        return {"weight": w, "status": status, "total_latency_s": lat, "total_energy_j": en}

    rows = [
        row(0.0, 10.0, 1.0),
        row(0.3, 12.0, 2.0),  # dominated by the first
        row(0.6, 5.0, 3.0),
        row(0.8, 5.0, 4.0),  # dominated (same latency, more energy)
        row(0.9, None, None, "infeasible"),
        row(1.0, 4.0, 9.0),
    ]
    front = sweep.pareto_front(rows)
    assert [r["weight"] for r in front] == [1.0, 0.6, 0.0]


# ------------------------------------------------------------------------------ files
def test_csv_round_trip(exact_rows, tmp_path):
    rows, _ = exact_rows
    rows = [*rows, {"weight": 0.9, "status": "infeasible", "message": "deadline: x, y"}]
    path = sweep.write_csv(rows, tmp_path / "out" / "pareto.csv")
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert tuple(back[0]) == sweep.COLUMNS
    assert len(back) == len(rows)
    for a, b in zip(rows[:-1], back[:-1], strict=True):
        assert float(b["total_energy_j"]) == a["total_energy_j"]  # full precision
        assert b["status"] == a["status"]
    assert back[-1]["total_latency_s"] == "" and back[-1]["message"] == "deadline: x, y"
    assert [p.name for p in path.parent.iterdir()] == ["pareto.csv"]  # no temp file left


def test_plot_writes_a_png(exact_rows, tmp_path):
    rows, _ = exact_rows
    scn = rs.named()["two_device"]
    out = tmp_path / "plots"
    p1 = sweep.plot_pareto(rows, out / "a.png", scenario=scn)
    p2 = sweep.plot_pareto(
        rows, out / "b.png", baselines={"fixed-bits": rows[1:3], "equal": (1e4, 1e4)}
    )
    p3 = sweep.plot_pareto([{"weight": 0.5, "status": "infeasible"}], out / "c.png")
    for p in (p1, p2, p3):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(x.name for x in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_an_off_scale_point_is_marked_at_the_edge_not_stretching_the_axis():
    # The omega = 0 point of a large scenario: a round time 10^4 times the others'.
    lat = [2e11, 3.0e6, 2.0e6, 1.5e6, 1.2e6]
    en = [1.0e5, 1.2e5, 1.6e5, 2.4e5, 4.0e5]
    rows = [
        {"weight": w, "status": "converged", "total_latency_s": t, "total_energy_j": e}
        for w, t, e in zip([0.0, 0.25, 0.5, 0.75, 1.0], lat, en, strict=True)
    ]
    fig = sweep._pareto_figure(rows, None, None, None)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert hi < 2e11 / 3600 / 100  # the axis is fitted to the other points ...
    assert lo < 1.2e6 / 3600 and hi > 3.0e6 / 3600  # ... which all lie inside it
    texts = [t.get_text() for t in ax.texts]
    marked = [t for t in texts if "off scale" in t]
    assert len(marked) == 1 and "ω=0" in marked[0] and "5.56e+07 h" in marked[0]
    # Without an outlier nothing is marked and every point is inside the axes.
    fig = sweep._pareto_figure(rows[1:], None, None, None)
    assert not [t for t in fig.axes[0].texts if "off scale" in t.get_text()]


def test_each_weight_is_the_scenario_with_only_its_objective_replaced():
    scn = rs.named()["two_device"]
    for omega in (0.0, 0.3, 1.0):
        assert sweep._with_weight(scn, omega) == scn.replace(objective={"latency_weight": omega})
