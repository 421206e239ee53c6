# tests/reference_scenarios.py imports as a plain module because pytest puts tests/ (no
# __init__.py) on the path; the repository's benchmarks/ package (not installed with sflam-opt)
# imports because pyproject.toml's [tool.pytest.ini_options] pythonpath holds the root.
import pytest


@pytest.fixture(autouse=True)
def _empty_user_calibration_store(tmp_path_factory, monkeypatch):
    # Calibrations a developer saved under ~/.cache must not change what the tests see.
    monkeypatch.setenv("SFLAM_OPT_CALIBRATION_DIR", str(tmp_path_factory.mktemp("calibrations")))


def pytest_collection_modifyitems(config, items):
    # Tests marked slow start first (a stable sort keeps the rest in order): with -n (xdist)
    # every worker takes tests in this order, so a long test collected last would otherwise
    # run alone at the end while the other workers sit idle.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
