"""Measurements behind the convergence-bound calibration, strong non-IID SFLAM and device memory.

Usage::

    python benchmarks/theory.py run GROUP [GROUP ...]   # train the runs of the groups (cached)
    python benchmarks/theory.py fit                     # fit the packaged calibration files
    python benchmarks/theory.py memory                  # device-step memory at several bits
    python benchmarks/theory.py report                  # docs/theory-results.md from the data

Every training run is ``train(TrainConfig(...))`` with one torch thread; its per-round metrics are
stored as one JSON file under ``docs/theory/runs/`` (a run whose file exists is not repeated, so
the groups can be run in any order, in several processes, and resumed). ``fit`` and ``report`` read
those files only, so every figure of ``docs/theory-results.md`` comes from committed data.

Groups:

- ``calib-a0.5``, ``calib-a0.1``: the default configuration (``sflam-opt train`` defaults) at
  alpha 0.5 / 0.1, calibration seeds 100 and 101: fp32 SFL and SFLAM at uniform 2 and 4 bits.
  ``fit`` turns them into ``sflam_opt/training/calibrations/vit-tiny_digits.json``.
- ``heldout``: the same configuration on seeds 0, 1, 2 (not used to fit): fp32 SFL and SFLAM with
  the solver's bits (which use the packaged calibration), and SFLAM at uniform 4 and 8 bits.
- ``noniid``: the training benchmark's configuration (10 devices, 60 rounds, lr 0.05, momentum
  0.9) at alpha 0.1, seeds 0, 1, 2: SFL and SFLAM at uniform 6, 8 and 16 bits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

RUNS = ROOT / "docs" / "theory" / "runs"
CAL_SEEDS = (100, 101)
CAL_BITS = (2, 4)
HELDOUT_SEEDS = (0, 1, 2)
BENCH = {"devices": 10, "rounds": 60, "lr": 0.05, "momentum": 0.9}
KEEP = ("round", "test_accuracy", "train_loss", "grad_sq_norm", "bound", "uplink_bytes")


def _label(cfg: dict[str, Any]) -> str:
    parts = [cfg["protocol"], f"a{cfg.get('alpha', 0.5):g}", f"s{cfg['seed']}"]
    if cfg.get("bits") is not None:
        parts.append(f"b{cfg['bits']}")
    for k in ("devices", "rounds", "lr", "momentum", "quant_range"):
        if k in cfg:
            parts.append(f"{k}{cfg[k]:g}" if not isinstance(cfg[k], str) else f"{k}-{cfg[k]}")
    return "_".join(parts)


def groups() -> dict[str, list[dict[str, Any]]]:
    """Every run of every group, as TrainConfig keyword arguments."""
    out: dict[str, list[dict[str, Any]]] = {}
    for alpha in (0.5, 0.1):
        runs = []
        for seed in CAL_SEEDS:
            runs.append({"protocol": "sfl", "alpha": alpha, "seed": seed})
            runs += [{"protocol": "sflam", "alpha": alpha, "seed": seed, "bits": b} for b in CAL_BITS]
        out[f"calib-a{alpha:g}"] = runs
    held = []
    for alpha in (0.5, 0.1):
        for seed in HELDOUT_SEEDS:
            held.append({"protocol": "sfl", "alpha": alpha, "seed": seed})
            held.append({"protocol": "sflam", "alpha": alpha, "seed": seed})
    for b in (4, 8):
        held += [{"protocol": "sflam", "alpha": 0.5, "seed": s, "bits": b} for s in HELDOUT_SEEDS]
    out["heldout-sfl"] = [r for r in held if r["protocol"] == "sfl"]
    out["heldout-sflam"] = [r for r in held if r["protocol"] == "sflam" and "bits" not in r]
    out["heldout-uniform"] = [r for r in held if "bits" in r]
    noniid = []
    for seed in HELDOUT_SEEDS:
        noniid.append({"protocol": "sfl", "alpha": 0.1, "seed": seed, **BENCH})
        for b in (6, 8, 16):
            noniid.append({"protocol": "sflam", "alpha": 0.1, "seed": seed, "bits": b, **BENCH})
    out["noniid"] = noniid
    return out


def run_one(cfg: dict[str, Any]) -> Path:
    """Train ``cfg`` unless its result file exists; returns the file."""
    from sflam_opt.training.trainer import TrainConfig, train

    path = RUNS / f"{_label(cfg)}.json"
    if path.exists():
        return path
    t0 = time.perf_counter()
    res = train(TrainConfig(threads=1, **cfg))
    s = res.summary
    doc = {
        "config": cfg,
        "metrics": [{k: m[k] for k in KEEP} for m in res.metrics],
        "summary": {
            k: s.get(k)
            for k in ("final_test_accuracy", "uplink_bytes", "mean_bits", "bits", "allocation")
        },
        "scenario_convergence": res.scenario.convergence.__dict__,
        "scenario_training": res.scenario.training.__dict__,
        "wall_time_s": time.perf_counter() - t0,
    }
    RUNS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    print(f"{path.name}: acc {s['final_test_accuracy']:.4f} in {doc['wall_time_s']:.0f} s", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("groups", nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        g = groups()
        for name in args.groups:
            for cfg in g[name]:
                run_one(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
