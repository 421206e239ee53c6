"""In-process against gloo training: rounds per second, bytes per round, communication share.

Usage::

    python benchmarks/distributed.py                        # sflam, 8 devices, gloo with 2 and 4 workers
    python benchmarks/distributed.py --protocol sfl --workers 2 --rounds 8 --json runs/dist.json

Every mode trains the same job (same seed, options and round plans): ``inprocess`` runs both
protocol halves in this process over :class:`~sflam_opt.training.transport.InProcessTransport`;
``gloo-K`` runs ``sflam-opt train --transport gloo --workers K`` (K worker processes plus the
server, all on this machine). Per mode it reports, over the rounds after ``--warmup``:

- rounds/s: 1 / mean wall time of the protocol's round (sending the plan, every participant's
  turn, FedAvg; not the trainer's evaluation and checkpoint, which both modes do alike);
- uplink and downlink bytes per round (whole frames), which must equal across modes;
- comm share: the server's time inside ``send``/``recv`` over the round's wall time. In-process
  that is encoding and decoding; over gloo it also includes waiting for the workers' replies, so
  it is the share of the round the server spends on the link rather than computing;
- per-worker wall time per round (gloo).

Process start-up (importing torch in every worker) is not in the rates; it is printed as
``start (s)``: from the call to the first round's end, minus that round's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sflam_opt.training import TrainConfig, train  # noqa: E402
from sflam_opt.training.data import load_dataset  # noqa: E402
from sflam_opt.training.models import build_split_model  # noqa: E402
from sflam_opt.training.partition import dirichlet_partition  # noqa: E402
from sflam_opt.training.protocols import PROTOCOLS, ClientData, RoundPlan  # noqa: E402
from sflam_opt.training.quantizer import FP32_BITS  # noqa: E402
from sflam_opt.training.trainer import sample_participants  # noqa: E402
from sflam_opt.training.transport import InProcessTransport  # noqa: E402


def _config(args: argparse.Namespace, **extra: Any) -> TrainConfig:
    return TrainConfig(
        protocol=args.protocol,
        devices=args.devices,
        rounds=args.rounds,
        local_iters=args.local_iters,
        batch_size=args.batch_size,
        bits=args.bits if PROTOCOLS[args.protocol].quantized else None,
        solver="equal",
        seed=args.seed,
        threads=1,
        **extra,
    )


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of the in-process protocol, timed around ``run_round`` (the trainer's plans)."""
    started = time.perf_counter()
    config = _config(args)
    torch.set_num_threads(1)
    data = load_dataset(config.dataset)
    parts = dirichlet_partition(
        data.y_train.numpy(), config.devices, config.alpha, seed=config.seed
    )
    dev, srv, _ = build_split_model(
        config.model,
        num_classes=data.num_classes,
        image_size=data.image_size,
        in_chans=data.in_chans,
        seed=config.seed,
    )
    client = ClientData.from_partition(data.x_train, data.y_train, parts, data.num_classes)
    transport = InProcessTransport(config.devices)
    cls = PROTOCOLS[config.protocol]
    protocol = cls(
        dev,
        srv,
        data=client,
        transport=transport,
        lr=config.lr,
        momentum=config.momentum,
        batch_size=config.batch_size,
        local_iters=config.local_iters,
    )
    width = config.bits if cls.quantized and config.bits is not None else FP32_BITS
    bits = np.full(config.devices, width, dtype=np.int64)
    rows = []
    for r in range(1, config.rounds + 1):
        participants = sample_participants(config.seed, r, config.devices, config.devices)
        transport.meter.reset()
        busy, t0 = transport.busy_s, time.perf_counter()
        protocol.run_round(RoundPlan(r, participants, bits, config.seed))
        wall = time.perf_counter() - t0
        if r == 1:
            start = time.perf_counter() - started - wall
        rows.append(
            {
                **transport.meter.summary(),
                "round_wall_time_s": wall,
                "server_comm_time_s": transport.busy_s - busy,
            }
        )
    return _figures("inprocess", rows, args.warmup, start)


def over_gloo(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """``train`` with ``--transport gloo --workers K``; rates from its per-round extras."""
    started = time.perf_counter()
    first: list[float] = []

    def progress(row: dict[str, Any]) -> None:
        if not first:
            first.append(time.perf_counter() - started - row["round_wall_time_s"])

    result = train(
        _config(args, transport="gloo", workers=workers, timeout_s=args.timeout_s),
        progress=progress,
    )
    return _figures(f"gloo-{workers}", result.metrics, args.warmup, first[0])


def _figures(mode: str, rows: list[dict[str, Any]], warmup: int, start: float) -> dict[str, Any]:
    timed = rows[warmup:] or rows
    wall = [r["round_wall_time_s"] for r in timed]
    comm = [r["server_comm_time_s"] for r in timed]
    out: dict[str, Any] = {
        "mode": mode,
        "rounds_timed": len(timed),
        "rounds_per_s": len(wall) / sum(wall),
        "uplink_bytes_per_round": statistics.fmean(r["uplink_bytes"] for r in timed),
        "downlink_bytes_per_round": statistics.fmean(r["downlink_bytes"] for r in timed),
        "comm_share": sum(comm) / sum(wall),
        "start_s": start,
        "uplink_bytes_by_round": [r["uplink_bytes"] for r in rows],
    }
    if "worker_wall_time_s" in timed[0]:
        per = np.array([r["worker_wall_time_s"] for r in timed])
        out["worker_wall_time_s_per_round"] = per.mean(axis=0).round(4).tolist()
    return out


def _print(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"{args.protocol}, vit-tiny/digits, {args.devices} devices (all per round), "
        f"tau={args.local_iters}, beta={args.batch_size}, {args.rounds} rounds "
        f"({args.warmup} warm-up not timed), 1 torch thread per process"
    )
    head = f"{'mode':<10} {'rounds/s':>9} {'up B/round':>12} {'down B/round':>13}"
    head += f" {'comm share':>10} {'start (s)':>9}  worker wall s/round"
    print(head)
    for r in results:
        workers = r.get("worker_wall_time_s_per_round", "-")
        print(
            f"{r['mode']:<10} {r['rounds_per_s']:>9.3f} {r['uplink_bytes_per_round']:>12,.0f} "
            f"{r['downlink_bytes_per_round']:>13,.0f} {r['comm_share']:>10.1%} "
            f"{r['start_s']:>9.1f}  {workers}"
        )
    same = all(r["uplink_bytes_by_round"] == results[0]["uplink_bytes_by_round"] for r in results)
    print(f"uplink bytes identical in every round across modes: {'yes' if same else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 1 if a mode's uplink bytes differ from in-process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="sflam", choices=sorted(PROTOCOLS))
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--local-iters", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bits", type=int, default=4, help="uniform bits (sflam)")
    parser.add_argument("--workers", default="2,4", help="comma-separated worker counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = [in_process(args)]
    for k in (int(tok) for tok in args.workers.split(",") if tok.strip()):
        results.append(over_gloo(args, k))
    _print(results, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )
    same = all(r["uplink_bytes_by_round"] == results[0]["uplink_bytes_by_round"] for r in results)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
