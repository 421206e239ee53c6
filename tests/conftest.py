import sys
from pathlib import Path

# Make tests/reference_scenarios.py importable as a plain module from every test file, and the
# repository's benchmarks/ package (not installed with sflam-opt) from tests/test_bench.py.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _empty_user_calibration_store(tmp_path_factory, monkeypatch):
    # Calibrations a developer saved under ~/.cache must not change what the tests see.
    monkeypatch.setenv("SFLAM_OPT_CALIBRATION_DIR", str(tmp_path_factory.mktemp("calibrations")))


def pytest_collection_modifyitems(config, items):
    # Tests marked slow start first (a stable sort keeps the rest in order): with -n (xdist)
    # every worker takes tests in this order, so a long test collected last would otherwise
    # run alone at the end while the other workers sit idle.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
