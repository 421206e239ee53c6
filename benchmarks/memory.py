"""Memory benchmark: device peak memory of SFLAM's device versus an FL device.

For each batch size of the profile, one device-side training step of the profile's model
(``vit-b32``) is measured by :func:`sflam_opt.training.memory.measure_device_memory`, each in a
fresh process: ``sflam`` trains only the patch embedding and sends 8-bit activations; ``fl`` trains
the whole ViT on the device. Beside it, the time the device spends quantizing and packing one
batch of those activations (and the server unpacking them), at 2, 4 and 8 bits: the wire path's
cost, kept here as a figure rather than as a timed test. Output: ``figures/memory.{csv,json,png}``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import BenchContext, read_csv, utc_now
from benchmarks.markdown import figure, num, table
from benchmarks.plots import memory_figures as draw

__all__ = ["COLUMNS", "draw", "headlines", "report", "run"]

logger = logging.getLogger(__name__)

PARTS = ("weights", "gradients", "optimizer_state", "activations", "input")
COLUMNS = (
    "model",
    "protocol",
    "batch",
    "bits",
    "device_peak_mb",
    "analytic_mb",
    *(f"{p}_mb" for p in PARTS),
    "trained_params",
    "step_start_mb",
    "payload_mb",
    "device",
    "seconds",
    "seed",
    "error",
)


#: Bit widths of the quantizer timing.
QUANT_BITS = (2, 4, 8)
#: Repeats of each quantizer timing; the best is reported (the least disturbed by other jobs).
QUANT_REPEATS = 3


def quantizer_timings(batch: int, seed: int) -> list[dict[str, Any]]:
    """Best-of-:data:`QUANT_REPEATS` time of one ViT-B/32 activation batch through the wire path.

    The path is :func:`~sflam_opt.training.quantizer.quantize` (stochastic rounding and packing),
    ``to_bytes``, ``from_bytes`` and :func:`~sflam_opt.training.quantizer.dequantize`, on a
    ``(batch, 49, 768)`` fp32 tensor (ViT-B/32's patch-embedding output at 224 px).

    Parameters
    ----------
    batch : int
        Samples in the batch.
    seed : int
        Seed of the activations and the rounding noise.

    Returns
    -------
    list of dict
        Per bit width: ``bits``, ``values``, ``payload_bytes``, best ``wall_s`` and ``cpu_s``,
        and ``mvalues_per_s`` (millions of activation values per wall second).
    """
    import torch

    from sflam_opt.training.quantizer import QuantizedTensor, dequantize, quantize

    x = torch.randn(batch, 49, 768, generator=torch.Generator().manual_seed(seed))
    out = []
    for bits in QUANT_BITS:
        gen = torch.Generator().manual_seed(seed + bits)
        wall = cpu = math.inf
        for _ in range(QUANT_REPEATS):
            w0, c0 = time.perf_counter(), time.process_time()
            payload = quantize(x, bits, gen).to_bytes()
            y = dequantize(QuantizedTensor.from_bytes(payload))
            wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
        assert y.shape == x.shape
        out.append(
            {
                "bits": bits,
                "values": x.numel(),
                "payload_bytes": len(payload),
                "wall_s": wall,
                "cpu_s": cpu,
                "mvalues_per_s": x.numel() / wall / 1e6,
            }
        )
    return out


def run(ctx: BenchContext) -> dict[str, Any]:
    """Measure every (protocol, batch) pair; write ``memory.csv``, ``memory.json``, the figure."""
    from sflam_opt.training.memory import measure_device_memory

    p = ctx.profile
    started, started_utc = time.perf_counter(), utc_now()
    plan = [(proto, b) for b in p.memory_batches for proto in ("sflam", "fl")]
    rows: list[dict[str, Any]] = []
    method = None
    for proto, batch in plan:
        ctx.progress(f"memory: {p.memory_model} {proto} batch {batch}", 0.0)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"model": p.memory_model, "protocol": proto, "batch": batch}
        try:
            res = measure_device_memory(p.memory_model, batch, proto, seed=p.seed)
        except Exception as exc:  # noqa: BLE001 - recorded in the CSV and the report
            logger.warning("memory %s batch %d failed: %s", proto, batch, exc)
            row["error"] = f"{type(exc).__name__}: {exc}"
        else:
            method = res.get("method", method)
            row.update(
                bits=res.get("bits"),
                device_peak_mb=res["device_peak_mb"],
                analytic_mb=res.get("analytic_mb"),
                trained_params=res.get("trained_params"),
                step_start_mb=res.get("step_start_mb"),
                payload_mb=res.get("payload_mb"),
                device=res.get("device"),
                seed=res.get("seed", p.seed),
                **{f"{k}_mb": v for k, v in res.get("breakdown_mb", {}).items()},
            )
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        ctx.progress(f"memory: {p.memory_model} {proto} batch {batch}", 1.0 / len(plan))
    ratios = []
    by = {(r["protocol"], r["batch"]): r for r in rows}
    for b in p.memory_batches:
        s, f = by.get(("sflam", b)), by.get(("fl", b))
        if s and f and s.get("device_peak_mb") and f.get("device_peak_mb"):
            ratios.append(
                {
                    "batch": b,
                    "sflam_mb": s["device_peak_mb"],
                    "fl_mb": f["device_peak_mb"],
                    "fl_over_sflam": f["device_peak_mb"] / s["device_peak_mb"],
                }
            )
    ctx.progress("memory: quantizer timing", 0.0)
    quantizer = quantizer_timings(max(p.memory_batches), p.seed)
    ctx.csv("memory", rows, COLUMNS)
    ctx.json(
        "memory",
        {
            "meta": ctx.meta("memory", started, started_utc),
            "method": method,
            "ratios": ratios,
            "quantizer": quantizer,
        },
    )
    ctx.written.extend(draw(ctx.figures))
    return {"rows": rows, "ratios": ratios}


def report(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the memory section, from ``memory.csv`` and ``memory.json``."""
    meta = doc["meta"]
    rows = read_csv(figures / "memory.csv")
    out = ["## Memory benchmark", ""]
    model = meta["profile"]["memory_model"]
    out.append(
        f"Peak device memory of one training step of `{model}`: the SFLAM device trains only the "
        "patch embedding and sends 8-bit activations; the FL device trains the whole model. "
        f"Measurement: {doc.get('method') or '-'}. The breakdown is analytic "
        "(`sflam_opt.training.memory.analytic_breakdown`). MB = 10^6 bytes."
    )
    out.append("")
    out.append(
        table(
            [
                "protocol",
                "batch",
                "measured peak MB",
                "analytic MB",
                "weights",
                "gradients",
                "optimizer",
                "activations",
                "input",
                "trained params",
                "time (s)",
            ],
            [
                [
                    r["protocol"],
                    num(r["batch"]),
                    num(r.get("device_peak_mb")),
                    num(r.get("analytic_mb")),
                    num(r.get("weights_mb")),
                    num(r.get("gradients_mb")),
                    num(r.get("optimizer_state_mb")),
                    num(r.get("activations_mb")),
                    num(r.get("input_mb")),
                    num(r.get("trained_params")),
                    num(r.get("seconds"), 3),
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r.get("error"):
            out.append(f"\n{r['protocol']} batch {r['batch']} failed: {r['error']}")
    if doc.get("ratios"):
        out += [""] + [
            f"- batch {r['batch']}: FL device needs {num(r['fl_over_sflam'], 3)}x the SFLAM "
            f"device's peak ({num(r['fl_mb'])} MB vs {num(r['sflam_mb'])} MB)."
            for r in doc["ratios"]
        ]
    out += quantizer_report(doc.get("quantizer") or [], meta)
    out += [
        "",
        figure("memory.png", "device memory", meta["command"], ["memory.csv", "memory.json"]),
        "",
    ]
    return out


def quantizer_report(rows: list[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    """The quantizer-timing paragraph and table (empty when the data file predates it)."""
    if not rows:
        return []
    load = (meta.get("machine") or {}).get("load_avg_1m_at_start")
    return [
        "",
        f"Wire path of one batch of ViT-B/32 activations ({num(rows[0]['values'])} values): "
        "quantize with stochastic rounding, pack, serialize, parse, unpack and dequantize, "
        f"best of {QUANT_REPEATS}, one process; 1-minute load average at the section's start "
        f"{num(load, 3) if load is not None else 'not recorded'}.",
        "",
        table(
            ["bits", "payload bytes", "wall (s)", "CPU (s)", "M values/s"],
            [
                [
                    num(r["bits"]),
                    num(r["payload_bytes"]),
                    num(r["wall_s"], 3),
                    num(r["cpu_s"], 3),
                    num(r["mvalues_per_s"], 3),
                ]
                for r in rows
            ],
        ),
    ]


def headlines(figures: Path, doc: Mapping[str, Any]) -> list[str]:
    """The device-memory sentence of the report's headlines."""
    if not doc.get("ratios"):
        return []
    r = max(doc["ratios"], key=lambda r: r["batch"])
    return [
        f"Device memory at batch {r['batch']} (one device-side training step of "
        f"`{doc['meta']['profile']['memory_model']}`, each measured in a fresh process; bytes do "
        f"not depend on the machine load): the FL device peaks at {num(r['fl_mb'])} MB, "
        f"the SFLAM device at {num(r['sflam_mb'])} MB ({num(r['fl_over_sflam'], 3)}x less)."
    ]
