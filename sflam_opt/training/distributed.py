"""Split-federated training across processes and machines: the ``torchrun`` entry point.

``torchrun --nnodes M --nproc_per_node P ... -m sflam_opt.training.distributed <train options>``
runs ``sflam-opt train`` on rank 0 (the server) and device workers on the other ranks; on one
machine ``sflam-opt train --transport gloo --workers K`` does the same without torchrun. The
runner itself (roles, device shares, failures) is :mod:`sflam_opt.training.gloo_runner`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

import torch.distributed as dist

from sflam_opt.training.config import TrainConfig
from sflam_opt.training.gloo_runner import (
    RemoteDevicesProtocol,
    device_ranges,
    device_shares,
    gloo_protocol,
    init_error,
    mark_external_launch,
    run_worker,
    worker_totals,
)

__all__ = [
    "RemoteDevicesProtocol",
    "device_ranges",
    "device_shares",
    "gloo_protocol",
    "main",
    "run_worker",
    "worker_totals",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point under torchrun: rank 0 runs ``sflam-opt train``, other ranks are workers.

    Every rank gets the same ``sflam-opt train`` options; ``--transport gloo --workers`` are set
    from the world size. Workers take only ``--timeout-s`` from them and the rest from the
    server.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        print(
            "error: run this module under torchrun (RANK/WORLD_SIZE unset), or use "
            "`sflam-opt train --transport gloo --workers K` on one machine",
            file=sys.stderr,
        )
        return 2
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world < 2:
        print("error: world size 1: give torchrun at least 2 processes", file=sys.stderr)
        return 2
    if rank > 0:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--timeout-s", type=float, default=TrainConfig.timeout_s)
        known, _ = parser.parse_known_args(args)
        return run_worker(rank, world, known.timeout_s)

    import typer

    from sflam_opt.training.cli import train_command

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--timeout-s", type=float, default=TrainConfig.timeout_s)
    known, _ = parser.parse_known_args(args)
    try:
        dist.init_process_group("gloo", timeout=timedelta(seconds=known.timeout_s))
    except (RuntimeError, dist.DistError) as err:
        print(f"error: {init_error(err, world - 1, known.timeout_s)}", file=sys.stderr)
        return 1
    mark_external_launch()
    app = typer.Typer(add_completion=False)
    app.command()(train_command)
    try:
        app(
            [*args, "--transport", "gloo", "--workers", str(world - 1)], prog_name="sflam-opt train"
        )
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
