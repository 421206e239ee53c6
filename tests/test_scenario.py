"""Scenario loading, validation (one-line errors naming file/table/key) and round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sflam_opt import Scenario, ScenarioError
from sflam_opt.scenario import gain_db_from_distance

GOOD = Scenario.default(devices=3, seed=7).to_toml()


def load(text: str) -> Scenario:
    return Scenario.from_toml_string(text, source="s.toml")


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_default_matches_formulation_section_7() -> None:
    s = Scenario.default(devices=200, seed=3)
    assert s.n_devices == 200
    assert s.system.bandwidth_hz == 20e6 and s.system.noise_dbm_per_hz == -174
    assert s.system.downlink_bps == 200e6 and s.system.server_cycles_per_s == 1e13
    assert s.model.activation_elems == 49 * 768 and s.model.device_params == 2360064
    assert (s.training.batch_size, s.training.local_iters, s.training.learning_rate) == (
        128,
        20,
        0.01,
    )
    c = s.convergence
    assert (c.a, c.phi0, c.q, c.epsilon) == (4.6, 0.27, 1.5, 0.5)
    assert s.bits.levels == tuple(range(2, 17)) and s.objective.latency_weight == 0.5
    d = s.devices
    assert np.all((d.distance_m >= 50) & (d.distance_m <= 500))
    assert np.all((d.cpu_hz >= 0.5e9) & (d.cpu_hz <= 2e9)) and np.all(d.max_power_w == 0.2)
    assert np.all((d.samples >= 400) & (d.samples <= 500))


def test_default_is_seeded() -> None:
    assert Scenario.default(5, 1) == Scenario.default(5, 1)
    assert Scenario.default(5, 1) != Scenario.default(5, 2)


@pytest.mark.parametrize("n", [1, 3, 257])
def test_toml_round_trip_is_exact(n: int, tmp_path: Path) -> None:
    s = Scenario.default(devices=n, seed=n).replace(
        constraints={"round_deadline_s": 123.5}, bits=[2, 3, 8]
    )
    path = tmp_path / "s.toml"
    path.write_text(s.to_toml())
    back = Scenario.from_toml(path)
    assert back == s
    assert back.to_toml() == s.to_toml()


def test_gain_and_distance_units() -> None:
    # 1 km -> -128.1 dB; 100 m -> -128.1 + 37.6 = -90.5 dB; linear gain 10^(dB/10).
    assert gain_db_from_distance(1000.0) == pytest.approx(-128.1)
    assert gain_db_from_distance(100.0) == pytest.approx(-90.5)
    s = load(edit("distance_m = ", "gain_db = -100.0\n#", GOOD))
    assert s.gain[0] == pytest.approx(1e-10)
    assert math.isnan(s.devices.distance_m[0])
    # -174 dBm/Hz = 10^(-20.4) W/Hz
    assert s.noise_w_per_hz == pytest.approx(10 ** (-20.4))
    assert load(s.to_toml()) == s


def test_rho_sums_to_one() -> None:
    s = Scenario.default(10, 0)
    assert s.rho.sum() == pytest.approx(1.0)


def test_cached_gain_and_rho_follow_every_derived_scenario() -> None:
    # gain and rho are computed once per Scenario; each way of deriving a new scenario must give
    # the new devices' values, and no caller can write into the cached arrays.
    s = Scenario.default(6, 0)
    assert s.gain is s.gain and s.rho is s.rho
    with pytest.raises(ValueError):
        s.gain[0] = 1.0
    with pytest.raises(ValueError):
        s.rho[0] = 1.0
    ids = s.devices.ids
    derived = [
        s.replace(objective={"latency_weight": 0.2}),
        s.with_gains({ids[1]: -80.0}),
        s.for_round([ids[4], ids[1]], gain_db={ids[1]: -70.0}),
        s.select([ids[3], ids[0]]),
    ]
    for d in derived:
        np.testing.assert_array_equal(d.gain, np.power(10.0, d.devices.gain_db / 10.0))
        smp = d.devices.samples.astype(np.float64)
        np.testing.assert_array_equal(d.rho, smp / smp.sum())
    assert derived[1].gain[1] == pytest.approx(1e-8) and s.gain[1] != derived[1].gain[1]
    assert derived[2].gain[1] == pytest.approx(1e-7)


CASES = [
    # (description, transform of GOOD, expected substring of the one-line error)
    ("unparsable", lambda t: t.replace("[model]", "[model"), "invalid TOML"),
    (
        "unknown key (typo)",
        lambda t: edit("bandwidth_hz =", "bandwith_hz =", t),
        "[system] bandwith_hz: unknown key (did you mean 'bandwidth_hz'?)",
    ),
    ("unknown table", lambda t: t + "\n[sytem]\nx = 1\n", "[sytem]: unknown table"),
    ("missing key", lambda t: edit("kappa = 1e-28\n", "", t), "[system] kappa: missing key"),
    (
        "missing table",
        lambda t: t.replace("[objective]\nlatency_weight = 0.5\n", ""),
        "[objective]: missing table",
    ),
    (
        "wrong type",
        lambda t: edit("batch_size = 128", 'batch_size = "128"', t),
        "[training] batch_size: expected a whole number, got str",
    ),
    (
        "float for int",
        lambda t: edit("batch_size = 128", "batch_size = 12.5", t),
        "[training] batch_size: expected a whole number",
    ),
    ("nan", lambda t: edit("kappa = 1e-28", "kappa = nan", t), "[system] kappa: must be finite"),
    (
        "inf",
        lambda t: edit("bandwidth_hz = 20000000.0", "bandwidth_hz = inf", t),
        "[system] bandwidth_hz: must be finite",
    ),
    (
        "negative bandwidth",
        lambda t: edit("bandwidth_hz = 20000000.0", "bandwidth_hz = -5.0", t),
        "[system] bandwidth_hz: -5.0 is outside the valid range [1000, 1e+11] Hz",
    ),
    (
        "zero rate",
        lambda t: edit("downlink_bps = 200000000.0", "downlink_bps = 0", t),
        "[system] downlink_bps: 0 is outside the valid range [1000,",
    ),
    (
        "zero cpu",
        lambda t: edit("cpu_hz = ", "cpu_hz = 0.0\n#", t),
        "[[device]] id=0 cpu_hz: 0.0 is outside the valid range [1e+06, 1e+12] cycles/s",
    ),
    (
        "weight > 1",
        lambda t: edit("latency_weight = 0.5", "latency_weight = 1.5", t),
        "[objective] latency_weight: 1.5 is outside the valid range [0, 1]",
    ),
    (
        "weight < 0",
        lambda t: edit("latency_weight = 0.5", "latency_weight = -0.1", t),
        "[objective] latency_weight: -0.1 is outside the valid range [0, 1]",
    ),
    ("empty bits", lambda t: edit("min = 2\nmax = 16", "levels = []", t), "empty bit set"),
    ("min > max", lambda t: edit("min = 2\nmax = 16", "min = 9\nmax = 4", t), "min = 9 > max = 4"),
    (
        "bits out of range",
        lambda t: edit("min = 2\nmax = 16", "levels = [4, 40]", t),
        "[bits] levels[1]: bit width must be in 1..32, got 40",
    ),
    ("duplicate ids", lambda t: edit("id = 1\n", "id = 0\n", t), "duplicate device id 0"),
    ("no devices", lambda t: t[: t.index("[[device]]")], "no devices"),
    (
        "unknown device key",
        lambda t: edit("samples = ", "sample = ", t),
        "unknown key (did you mean 'samples'?)",
    ),
    (
        "gain and distance",
        lambda t: edit("distance_m = ", "gain_db = -90.0\ndistance_m = ", t),
        "give exactly one of gain_db or distance_m",
    ),
    (
        "bool for number",
        lambda t: edit("kappa = 1e-28", "kappa = true", t),
        "[system] kappa: expected a number, got bool",
    ),
    (
        "bad constraint",
        lambda t: t + "\n[constraints]\nround_deadline_s = -1.0\n",
        "[constraints] round_deadline_s: -1.0 is outside the valid range (0, 1e+09] s",
    ),
]


@pytest.mark.parametrize(("desc", "transform", "expected"), CASES, ids=[c[0] for c in CASES])
def test_validation_errors_are_one_line_and_name_the_key(desc, transform, expected) -> None:
    with pytest.raises(ScenarioError) as info:
        load(transform(GOOD))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("s.toml: ")
    assert expected in msg


def test_unparsable_toml_reports_line_number() -> None:
    bad = GOOD.replace("[model]", "[model", 1)
    line = GOOD[: GOOD.index("[model]")].count("\n") + 1
    with pytest.raises(ScenarioError, match=f"line {line}"):
        load(bad)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        Scenario.from_toml(tmp_path / "nope.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScenarioError, match="not a UTF-8 text file"):
        Scenario.from_toml(p)


def test_replace_validates_and_subset_keeps_order() -> None:
    s = Scenario.default(6, 0)
    with pytest.raises(ScenarioError, match="latency_weight"):
        s.replace(objective={"latency_weight": 2.0})
    with pytest.raises(ScenarioError, match="unknown section"):
        s.replace(modle={})
    sub = s.subset([4, 1])
    assert sub.devices.ids == (4, 1)
    assert sub.devices.cpu_hz[0] == s.devices.cpu_hz[4]
    with pytest.raises(ScenarioError, match="positions must lie"):
        s.subset([9])


def test_large_default_scenario_round_trips() -> None:
    s = Scenario.default(devices=20000, seed=5)
    assert Scenario.from_toml_string(s.to_toml()) == s


def test_fast_device_reader_agrees_with_tomllib_on_values_and_errors() -> None:
    import dataclasses
    import re
    import tomllib

    from sflam_opt.device_tables import read_device_columns

    base = Scenario.default(50, 4)
    dist = base.devices.distance_m.copy()
    dist[::3] = np.nan  # a mix of gain_db and distance_m devices
    mixed = dataclasses.replace(base, devices=dataclasses.replace(base.devices, distance_m=dist))
    text = mixed.to_toml()
    assert read_device_columns(text) is not None
    assert Scenario.from_toml_string(text) == Scenario.from_dict(tomllib.loads(text)) == mixed
    # Values the fast path must not read differently from TOML: either it declines, or the
    # outcome (value or first error) is the general parser's.
    for value in ("1.", ".5", "01.5", "1_000", "0x10", "inf", "nan", "+1e9", "1E9", "1e-05"):
        edited = re.sub(r"cpu_hz = \S+", f"cpu_hz = {value}", text, count=1)
        try:
            expected = Scenario.from_dict(tomllib.loads(edited), "s.toml").devices.cpu_hz[0]
        except tomllib.TOMLDecodeError:
            expected = "invalid TOML"
        except ScenarioError as exc:
            expected = str(exc)
        try:
            got = Scenario.from_toml_string(edited, "s.toml").devices.cpu_hz[0]
        except ScenarioError as exc:
            got = "invalid TOML" if "invalid TOML" in str(exc) else str(exc)
        assert got == expected, value
