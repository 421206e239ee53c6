"""The core install works without torch and scikit-learn; the trainer lives in the train extra.

The import guard runs Python in a subprocess whose import system refuses torch and sklearn (as in
an environment where they are not installed), so any import of them on the core path fails the
test. The metadata test checks that ``pip install sflam-opt`` does not pull them in.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Makes ``import torch`` / ``import sklearn`` fail as when they are not installed.
GUARD = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "sklearn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", GUARD + code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_core_api_works_without_torch_and_sklearn():
    proc = _run(
        """
import sflam_opt
from sflam_opt import Allocator, Scenario, solve
scn = Scenario.default(devices=6, seed=0)
assert solve(scn, "fast").success
alloc = Allocator(scn, "bcd")
res = alloc.step(gain_db={1: -100.0}, devices=[1, 4, 2])
assert res.success and res.allocation.ids == (1, 4, 2)
assert "torch" not in sys.modules and "sklearn" not in sys.modules
print("ok")
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_core_commands_work_and_trainer_commands_ask_for_the_extra(tmp_path):
    cli = "from sflam_opt.cli import main; sys.exit(main(sys.argv[1:]))"
    scn = tmp_path / "s.toml"
    assert _run(cli, "scenario", "new", "--devices", "4", "--out", str(scn)).returncode == 0
    for args in (
        ["solve", str(scn), "--solver", "fast", "--json"],
        ["evaluate", str(scn), str(tmp_path / "missing.json")],
        ["sweep", str(scn), "--weights", "0:1:2", "--solver", "fast", "--out", str(tmp_path)],
        ["train", "--help"],
    ):
        proc = _run(cli, *args)
        assert "torch" not in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 2), (args, proc.stderr)
    assert (tmp_path / "pareto.csv").is_file() and (tmp_path / "pareto.png").is_file()
    for command in ("train", "calibrate", "memory"):
        proc = _run(cli, command)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert re.fullmatch(r"error: .* pip install 'sflam-opt\[train\]'", lines[0])


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(reqs: list[str]) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs]


def test_dependency_metadata_keeps_torch_in_the_train_extra():
    project = _project()
    core = _names(project["dependencies"])
    assert "torch" not in core and "scikit-learn" not in core
    extras = project["optional-dependencies"]
    train = dict(zip(_names(extras["train"]), extras["train"], strict=True))
    assert set(train) >= {"torch", "scikit-learn"}
    # A range for hosts, never one exact version.
    assert "==" not in train["torch"] and ">=" in train["torch"]
    dev = extras["dev"]
    assert "sflam-opt[train]" in dev  # so `pip install -e '.[dev]'` installs everything
    assert "torch==2.13.0" in dev  # the local CPU wheel; unpinned pulls a CUDA build
    assert {"pytest", "hypothesis"} <= set(_names(dev))
    # The README's test command spreads the tests over the cores with pytest-xdist's -n.
    readme = (ROOT / "README.md").read_text()
    test_cmd = readme.split("<!-- ci:test -->", 1)[1].split("```")[1]
    assert "-n auto" in test_cmd and "pytest-xdist" in _names(dev)


def test_readme_install_command_still_installs_the_extra():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- ci:install -->", 1)[1]
    assert "pip install -e '.[dev]'" in block.split("```")[1]


def test_flower_server_side_works_without_torch():
    """A Flower host without torch decodes and checks updates (the codec is numpy only)."""
    proc = _run(
        """
import numpy as np
from sflam_opt.integrations.flower import SflamStrategy, pack_update, sflam_mod, unpack_update
from sflam_opt.integrations.flower.validation import check_update
frame, _ = pack_update([np.ones((3, 4), np.float32)], 4, seed=0)
assert len(check_update(frame, [(3, 4)], 4)) == 1
assert "torch" not in sys.modules
print("ok")
"""
    )
    if "No module named 'flwr'" in proc.stderr:
        pytest.skip("Flower is not installed: pip install 'sflam-opt[flower]'")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_flower_extras_keep_torch_and_ray_apart():
    extras = _project()["optional-dependencies"]
    assert "torch" not in _names(extras["flower"]) and "flwr" in _names(extras["flower"])
    assert any(r.startswith("flwr[simulation]") for r in extras["flower-sim"])
