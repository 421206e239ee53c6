"""In-process against gloo training: rounds per second, bytes per round, communication share.

Usage::

    python -m benchmarks distributed                  # sflam, 8 devices, gloo with 2 and 4 workers
    python -m benchmarks distributed --protocol sfl --workers 2 --rounds 8 --json runs/dist.json

Every mode is one ``train()`` of the same job (same seed, options and round plans), so every mode
runs the trainer's own round loop: ``inprocess`` runs both protocol halves in this process over
:class:`~sflam_opt.training.transport.InProcessTransport`; ``gloo-K`` is ``sflam-opt train
--transport gloo --workers K`` (K worker processes plus the server, all on this machine). Per mode
it reports, over the rounds after ``--warmup``:

- rounds/s: 1 / mean wall time of the protocol's round (sending the plan, every participant's
  turn, FedAvg; not the trainer's evaluation and checkpoint, which both modes do alike);
- uplink and downlink bytes per round (whole frames), which must equal across modes;
- comm share: the server's time inside ``send``/``recv`` over the round's wall time. In-process
  that is encoding and decoding; over gloo it also includes waiting for the workers' replies, so
  it is the share of the round the server spends on the link rather than computing;
- per-worker wall time per round (gloo).

The gloo server reports the round's wall and transport time itself
(``round_extras()``); in process, :func:`_timed_rounds` adds the same two figures around the
protocol's ``run_round``. Process start-up (importing torch in every worker) is not in the rates;
it is printed as ``start (s)``: from the call to the first round's end, minus that round's time.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

__all__ = ["command", "run_mode"]


@contextmanager
def _timed_rounds(protocol: str) -> Iterator[None]:
    """While open, ``train()`` of ``protocol`` in process records each round's wall time and the
    server's time in the transport (``round_wall_time_s``, ``server_comm_time_s``) in its metrics,
    as the gloo server does; the protocol itself is unchanged."""
    from sflam_opt.training.protocols import PROTOCOLS

    base = PROTOCOLS[protocol]

    class Timed(base):  # type: ignore[misc,valid-type]
        def run_round(self, plan: Any) -> Any:
            busy, t0 = self.transport.busy_s, time.perf_counter()
            stats = super().run_round(plan)
            self._timing = {
                "round_wall_time_s": time.perf_counter() - t0,
                "server_comm_time_s": self.transport.busy_s - busy,
            }
            return stats

        def round_extras(self) -> dict[str, Any]:
            return {**super().round_extras(), **self._timing}

    PROTOCOLS[protocol] = Timed
    try:
        yield
    finally:
        PROTOCOLS[protocol] = base


def run_mode(options: dict[str, Any], workers: int | None) -> dict[str, Any]:
    """Train the job once in process (``workers`` None) or over gloo with ``workers`` workers."""
    from sflam_opt.training import TrainConfig, train
    from sflam_opt.training.protocols import PROTOCOLS

    proto = options["protocol"]
    config = TrainConfig(
        protocol=proto,
        devices=options["devices"],
        rounds=options["rounds"],
        local_iters=options["local_iters"],
        batch_size=options["batch_size"],
        bits=options["bits"] if PROTOCOLS[proto].quantized else None,
        solver="equal",
        seed=options["seed"],
        threads=1,
        **({} if workers is None else {"transport": "gloo", "workers": workers}),
        timeout_s=options["timeout_s"],
    )
    started = time.perf_counter()
    first: list[float] = []

    def progress(row: dict[str, Any]) -> None:
        if not first:
            first.append(time.perf_counter() - started - row["round_wall_time_s"])

    if workers is None:
        with _timed_rounds(proto):
            result = train(config, progress=progress)
    else:
        result = train(config, progress=progress)
    mode = "inprocess" if workers is None else f"gloo-{workers}"
    return _figures(mode, result.metrics, options["warmup"], first[0])


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


def _print(results: list[dict[str, Any]], o: dict[str, Any]) -> None:
    print(
        f"{o['protocol']}, vit-tiny/digits, {o['devices']} devices (all per round), "
        f"tau={o['local_iters']}, beta={o['batch_size']}, {o['rounds']} rounds "
        f"({o['warmup']} warm-up not timed), 1 torch thread per process"
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


def command(
    protocol: Annotated[str, typer.Option(help="Training protocol.")] = "sflam",
    devices: Annotated[int, typer.Option(help="Devices, all taking part every round.")] = 8,
    rounds: Annotated[int, typer.Option(help="Rounds per mode.")] = 6,
    warmup: Annotated[int, typer.Option(help="First rounds left out of the rates.")] = 1,
    local_iters: Annotated[int, typer.Option(help="Local steps per round.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = 16,
    bits: Annotated[int, typer.Option(help="Uniform uplink bits (sflam).")] = 4,
    workers: Annotated[str, typer.Option(help="Comma-separated gloo worker counts.")] = "2,4",
    seed: Annotated[int, typer.Option(help="Seed of data split, model and plans.")] = 0,
    timeout_s: Annotated[float, typer.Option(help="Gloo timeout (s).")] = 120.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """In-process training against gloo with 2 and 4 workers: rounds/s, bytes, comm share."""
    from sflam_opt.errors import SolverArgumentError

    options = {k: v for k, v in locals().items() if k not in ("workers", "json_out")}
    try:
        counts = [int(tok) for tok in workers.split(",") if tok.strip()]
    except ValueError:
        raise SolverArgumentError(
            f"--workers {workers!r}: give comma-separated worker counts, e.g. 2,4"
        ) from None
    results = [run_mode(options, None), *(run_mode(options, k) for k in counts)]
    _print(results, options)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        args = {**options, "workers": workers, "json": str(json_out)}
        json_out.write_text(json.dumps({"args": args, "results": results}, indent=2))
    if any(r["uplink_bytes_by_round"] != results[0]["uplink_bytes_by_round"] for r in results):
        raise typer.Exit(1)
