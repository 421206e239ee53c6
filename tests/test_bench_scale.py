"""``python -m benchmarks scale`` at a tiny N: every CLI step runs, is measured and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scale
from benchmarks.common import PROFILES, BenchContext
from benchmarks.sections import SECTIONS


@pytest.mark.slow
def test_scale_section_measures_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(scale.SIZES, "quick", (40,))
    ctx = BenchContext(tmp_path, PROFILES["quick"], "python -m benchmarks scale --profile quick")
    doc = scale.run(ctx)
    rows = doc["rows"]
    assert [r["step"] for r in rows] == list(scale.STEPS)
    for r in rows:
        assert r["ok"], r  # expected exit code; bad input gave exactly one error line
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mb"] > 10
    bad = {r["step"]: r["stderr"] for r in rows if r["exit"] == 2}
    assert "devices[" in bad["bad row (.json)"][-1] and "bandwidth_hz" in bad["bad row (.json)"][-1]
    assert "truncated" in bad["truncated .json"][-1]
    assert "not a readable .npz" in bad["truncated .npz"][-1]
    saved = json.loads((tmp_path / "figures" / "scale.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    md = "\n".join(scale.report(tmp_path / "figures", saved))
    assert "## CLI steps at scale" in md and "| evaluate --json .npz |" in md
    assert scale.headlines(tmp_path / "figures", saved)[0].startswith("CLI at N = 40:")
    assert SECTIONS["scale"].module == "benchmarks.scale"


def test_growth_is_the_exponent_between_the_two_largest_sizes() -> None:
    rows = [
        {"step": "s", "devices": 10, "cpu_s": 5.0},
        {"step": "s", "devices": 100, "cpu_s": 1.0},
        {"step": "s", "devices": 1000, "cpu_s": 10.0},
    ]
    assert scale.growth(rows, "s") == pytest.approx(1.0)
    assert scale.growth(rows[:1], "s") is None
