"""Run the example app in this process (InProcessGrid): the same ServerApp and ClientApp, no
SuperLink, no ray. Prints the same per-round table as deploy.sh.

    python examples/flower/in_process.py NODES ROUNDS [KEY=VALUE ...] [--mod] [--seed S]

NODES nodes with partition-id 0..NODES-1 and a scenario of NODES devices, as deploy.sh runs them;
KEY=VALUE pairs (TOML values) override the run config; --mod uses the mod-style ClientApp; --seed
seeds the node ids and Flower's node sampling (default 0). The run config's calibration is
"online" unless given (calibration="scenario"): rounds 1..fit-rounds are its fit rounds (more
while the measured gradient norm has not fallen yet), so a longer run shows rounds solved with
the fitted constants.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
import tomllib
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the app's package, as flwr run does

from flwr.app import Context, RecordDict  # noqa: E402
from sflam_flower import client_app, client_app_mod, server_app, task  # noqa: E402

from sflam_opt.integrations.flower.testing import InProcessGrid  # noqa: E402


def run_config(nodes: int, rounds: int, pairs: list[str]) -> dict:
    """The app's defaults, then num-devices and num-server-rounds, then the KEY=VALUE pairs."""
    cfg = {**task.DEFAULTS, "num-devices": nodes, "num-server-rounds": rounds}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in cfg:
            sys.exit(f"error: {pair!r}: need KEY=VALUE with KEY one of {', '.join(cfg)}")
        try:
            cfg[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            print(
                f"error: {pair!r}: {value} is not a TOML value; quote strings, e.g. "
                f"'{key}=\"{value}\"'",
                file=sys.stderr,
            )
            sys.exit(2)
    return cfg


def run_app(cfg: dict, nodes: int, seed: int = 0, mod: bool = False) -> tuple:
    """Run the ServerApp over ``nodes`` in-process nodes: ``(Result, SflamStrategy)``.

    ``seed`` seeds the node ids and Flower's node sampling; the same arguments give the same run.
    """
    app = (client_app_mod if mod else client_app).app
    grid = InProcessGrid(app, nodes, run_config=cfg, seed=seed)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=cfg)
    random.seed(seed)  # Flower samples the nodes with the global random module
    return server_app.run(grid, context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nodes", type=int)
    parser.add_argument("rounds", type=int)
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--mod", action="store_true", help="the mod-style ClientApp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_intermixed_args()  # options may come before or after the pairs
    if args.nodes < 2 or args.rounds < 1:
        sys.exit("error: need NODES >= 2 and ROUNDS >= 1")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    cfg = run_config(args.nodes, args.rounds, args.pairs)
    try:
        server_app.check_calibration(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    start, cpu0 = time.perf_counter(), time.process_time()
    _, strategy = run_app(cfg, args.nodes, args.seed, args.mod)
    rows = server_app.LAST_RUN["history"]
    print("\n".join(server_app.table(rows, int(cfg["fit-rounds"]))))
    if strategy.estimator is not None:  # what the online calibration measured in its fit rounds
        est = strategy.estimator
        print("fit rounds' mean loss:", " ".join(f"{v:.3g}" for v in est.loss))
        print(
            "fit rounds' mean squared gradient norm:",
            " ".join(f"{v:.3g}" for v in est.grad_sq_norm),
        )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"total time: {wall:.1f} s ({cpu:.1f} s CPU)")


if __name__ == "__main__":
    main()
