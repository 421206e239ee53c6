"""Peak device memory of one device-side training step, SFLAM versus plain FL.

The SFLAM paper (arXiv 2504.09114) motivates splitting a ViT after its embedding layer by the
device's memory: the device only trains the patch embedding (docs/formulation.md §1: ``M`` parameters) and
sends quantized activations (§3), while FL trains the whole model on the device. This module
measures that claim instead of assuming it.

One step, in a fresh process (so allocator state from earlier work cannot leak in):

- ``sflam``: device-part forward, ``bits``-bit stochastic quantization and packing of the
  activations (§3; any width 1..16, or 32 for fp32), backward from a received fp32 activation gradient (a random tensor of the
  activation shape), optimizer step.
- ``fl``: whole-model forward, cross-entropy loss, backward, optimizer step.

The optimizer is SGD with momentum 0.9 (one fp32 state tensor per parameter). A warm-up step runs
first, unmeasured, so the momentum buffers already exist as they do in every step but the first; the
second step is measured.

Measurement: the peak of *every live allocation* of the step, not process RSS. Two allocators
serve it. torch's: on CPU the step runs under ``torch.profiler.profile(profile_memory=True)``;
every allocation/free event is replayed in time order and the running peak of the net allocated
bytes is added to the bytes of tensors alive when the step starts (weights, momentum buffers, the
input batch). numpy's and Python's (the packing scratch and the packed ``bytes`` payload):
``tracemalloc``, which numpy reports its data buffers to, traces the same step and gives its peak.
The two peaks are added: an upper bound of the combined peak, exact when they coincide. (numpy
arrays that view torch tensors, e.g. the codes, are torch's memory and counted once.) On CUDA,
``torch.cuda.max_memory_allocated`` plus the host-side ``tracemalloc`` peak is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sflam_opt.errors import SflamError, SflamRuntimeError, TrainingConfigError
from sflam_opt.training.models import (
    PRESETS,
    DeviceModel,
    FullModel,
    ModelSpec,
    build_split_model,
    model_spec,
)
from sflam_opt.training.quantizer import quantize
from sflam_opt.validation import is_int

__all__ = ["measure_device_memory", "analytic_breakdown", "main", "PROTOCOLS", "MB"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("sflam", "fl")
MB = 1e6  # bytes per MB in every figure this module reports (SI, like the rest of the package)
_FP32 = 4
_LR = 0.01
_MOMENTUM = 0.9
_OPTIMIZER = f"SGD(lr={_LR}, momentum={_MOMENTUM}), fp32 momentum buffer per parameter"


def _validate(model: str, batch: int, protocol: str, bits: int) -> None:
    if model not in PRESETS:
        raise TrainingConfigError(
            f"model preset {model!r} is unknown; choose one of: {', '.join(PRESETS)}"
        )
    if not is_int(batch) or batch < 1:
        raise TrainingConfigError(f"batch={batch!r} is invalid; give a positive integer")
    if protocol not in PROTOCOLS:
        raise TrainingConfigError(
            f"protocol={protocol!r} is unknown; choose one of: {', '.join(PROTOCOLS)}"
        )
    if not is_int(bits) or not (1 <= bits <= 16 or bits == 32):
        raise TrainingConfigError(f"bits={bits!r} is unsupported; use an integer in 1..16 or 32")


def analytic_breakdown(spec: ModelSpec, batch: int, protocol: str, bits: int = 8) -> dict[str, int]:
    """Bytes of the big buffers alive during one device-side step, counted analytically.

    Parameters
    ----------
    spec : ModelSpec
        The split model.
    batch : int
        Mini-batch size ``beta``.
    protocol : {"sflam", "fl"}
        Which part is trained on the device.
    bits : int
        Uplink bit width (``sflam`` only).

    Returns
    -------
    dict
        ``weights``, ``gradients``, ``optimizer_state`` (one fp32 tensor per parameter each),
        ``input`` (the fp32 image batch, plus int64 labels for ``fl``) and ``activations``, bytes.
        ``sflam`` activations: the patch matrix saved for the weight gradient (input-sized), the
        output tokens, the fp32 scaled copy and the integer codes made by the quantizer, the packed
        payload, and the received fp32 gradient. ``fl`` activations: the
        tensors autograd saves for backward, per block ``17 N D + H N^2`` values per sample for
        ``N = num_patches + 1`` tokens of width ``D`` (norm inputs/outputs, qkv, scaled q, attention
        probabilities, attention output, MLP hidden before and after GELU), plus the patch tokens.
    """
    params = spec.device_params if protocol == "sflam" else spec.device_params + spec.server_params
    image = batch * spec.in_chans * spec.image_size**2 * _FP32
    acts = batch * spec.activation_elems
    if protocol == "sflam":
        code_bytes = 1 if bits <= 8 else 4
        payload = (acts * bits + 7) // 8 if bits != 32 else acts * _FP32
        scratch = 0 if bits == 32 else acts * (_FP32 + code_bytes)
        # + image: the patch matrix (the input laid out as patches) saved for the weight gradient.
        activations = 2 * acts * _FP32 + scratch + payload + image
        labels = 0
    else:
        n, d, h = spec.num_patches + 1, spec.dim, spec.heads
        per_sample = spec.depth * (17 * n * d + h * n * n) + 2 * n * d + spec.activation_elems
        activations = batch * per_sample * _FP32
        labels = batch * 8
    return {
        "weights": params * _FP32,
        "gradients": params * _FP32,
        "optimizer_state": params * _FP32,
        "activations": activations,
        "input": image + labels,
    }


def _storage_bytes(tensors: Sequence[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _allocation_peak(prof: torch.profiler.profile) -> int:
    """Running peak of net allocated bytes over the profiled region, from allocation events."""
    from torch._C._profiler import _EventType  # noqa: PLC0415  (profiler internals)

    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
    events.sort(key=lambda e: e[0])
    running = peak = 0
    for _, size in events:
        running += size
        peak = max(peak, running)
    return peak


def _device_step(
    spec: ModelSpec,
    batch: int,
    protocol: str,
    bits: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(seed)
    if protocol == "sflam":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same device weights build_split_model(seed) gives
            model: nn.Module = DeviceModel(spec.in_chans, spec.dim, spec.patch)
    else:
        dev, srv, _ = build_split_model(
            spec.preset,
            num_classes=spec.num_classes,
            image_size=spec.image_size,
            in_chans=spec.in_chans,
            seed=seed,
        )
        model = FullModel(dev, srv)
    model.to(device).train()
    x = torch.randn(
        batch, spec.in_chans, spec.image_size, spec.image_size, generator=gen, device=device
    )
    # Labels only live on the device under FL; in SFLAM the loss is computed on the server.
    y = torch.randint(
        0, spec.num_classes, (batch if protocol == "fl" else 0,), generator=gen, device=device
    )
    opt = torch.optim.SGD(model.parameters(), lr=_LR, momentum=_MOMENTUM)
    payload_nbytes = 0

    def step() -> None:
        nonlocal payload_nbytes
        opt.zero_grad(set_to_none=True)
        if protocol == "sflam":
            tokens = model(x)
            q = quantize(tokens, bits, gen)
            payload_nbytes = q.nbytes
            del q  # sent uplink
            grad = torch.randn(tokens.shape, generator=gen, device=device)  # received downlink
            tokens.backward(grad)
            del tokens, grad
        else:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            del loss
        opt.step()

    step()  # warm-up: creates the momentum buffers that every later step lives with
    opt.zero_grad(set_to_none=True)
    state = [t for s in opt.state.values() for t in s.values() if isinstance(t, Tensor)]
    params = list(model.parameters())
    baseline = _storage_bytes([*params, *state, x, *([y] if protocol == "fl" else [])])

    def traced_step() -> int:
        """Run the step under tracemalloc; returns its numpy/Python allocation peak, bytes."""
        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        host_peak = traced_step()
        torch.cuda.synchronize(device)
        torch_peak = torch.cuda.max_memory_allocated(device)
        peak = torch_peak + host_peak
        method = (
            "torch.cuda.max_memory_allocated over the step plus the tracemalloc peak of "
            "numpy/Python allocations (packing scratch, packed payload)"
        )
    else:
        from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            host_peak = traced_step()
        torch_peak = baseline + _allocation_peak(prof)
        peak = torch_peak + host_peak
        method = (
            "every allocation of the step: torch.profiler profile_memory (running peak of live "
            "torch allocations replayed from allocation/free events, plus tensors alive at step "
            "start: weights, optimizer state, input) plus the tracemalloc peak of numpy/Python "
            "allocations (packing scratch, packed payload); the sum of the two peaks, not "
            "process RSS"
        )
    return {
        "peak": peak,
        "torch_peak": torch_peak,
        "host_peak": host_peak,
        "baseline": baseline,
        "payload": payload_nbytes,
        "method": method,
        "trained_params": sum(p.numel() for p in params),
    }


def _measure_here(
    model: str, batch: int, protocol: str, image_size: int | None, seed: int, bits: int
) -> dict[str, Any]:
    spec = model_spec(model, image_size=image_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raw = _device_step(spec, batch, protocol, bits, seed, device)
    analytic = analytic_breakdown(spec, batch, protocol, bits)
    return {
        "device_peak_mb": raw["peak"] / MB,
        "breakdown_mb": {k: v / MB for k, v in analytic.items()},
        "analytic_mb": sum(analytic.values()) / MB,
        "model": model,
        "batch": batch,
        "protocol": protocol,
        "bits": bits if protocol == "sflam" else None,
        "image_size": spec.image_size,
        "trained_params": raw["trained_params"],
        "optimizer": _OPTIMIZER,
        "method": raw["method"],
        "device": device.type,
        "step_start_mb": raw["baseline"] / MB,
        "torch_peak_mb": raw["torch_peak"] / MB,
        "numpy_python_peak_mb": raw["host_peak"] / MB,
        "payload_mb": raw["payload"] / MB,
        "unit": "MB = 10^6 bytes",
        "torch": torch.__version__,
        "seed": seed,
    }


def measure_device_memory(
    model: str = "vit-b32",
    batch: int = 32,
    protocol: str = "sflam",
    *,
    image_size: int | None = None,
    seed: int = 0,
    in_subprocess: bool = True,
    bits: int = 8,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Measure the device's peak tensor memory during one training step.

    Parameters
    ----------
    model : str
        Model preset (:data:`sflam_opt.training.models.PRESETS`).
    batch : int
        Mini-batch size.
    protocol : {"sflam", "fl"}
        ``sflam`` trains only the patch embedding on the device; ``fl`` the whole model.
    image_size : int, optional
        Input side length, pixels (default: the preset's).
    seed : int
        Seed of weights, input, labels, quantizer noise and the received gradient.
    in_subprocess : bool
        Run in a fresh ``python -m sflam_opt.training.memory`` process (default) rather than in
        this one.
    bits : int
        Uplink bit width for ``sflam`` (default 8).
    timeout_s : float
        Give up on the subprocess after this many seconds.

    Returns
    -------
    dict
        ``device_peak_mb`` (measured), ``breakdown_mb`` (analytic ``weights``, ``gradients``,
        ``optimizer_state``, ``activations``, ``input``), ``analytic_mb`` (their sum), ``model``,
        ``batch``, ``protocol``, ``method`` (how the peak was measured), ``device``, and details
        (``optimizer``, ``step_start_mb``, ``payload_mb``, ``unit``...). MB are 10^6 bytes.

    Raises
    ------
    TrainingConfigError
        Unknown model or protocol, invalid batch, bits or image size.
    SflamRuntimeError
        The measuring subprocess failed or timed out.
    """
    _validate(model, batch, protocol, bits)
    model_spec(model, image_size=image_size)  # validates image_size before spawning
    if not in_subprocess:
        return _measure_here(model, batch, protocol, image_size, seed, bits)
    cmd = [
        sys.executable,
        "-m",
        "sflam_opt.training.memory",
        "--model",
        model,
        "--batch",
        str(batch),
        "--protocol",
        protocol,
        "--seed",
        str(seed),
        "--bits",
        str(bits),
        "--json",
    ]
    if image_size is not None:
        cmd += ["--image-size", str(image_size)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SflamRuntimeError(f"memory measurement timed out after {timeout_s} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SflamRuntimeError(f"memory measurement subprocess failed ({proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sflam_opt.training.memory``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m sflam_opt.training.memory",
        description="Peak device memory of one device-side training step (SFLAM or FL).",
    )
    parser.add_argument("--model", default="vit-b32", help="model preset (default vit-b32)")
    parser.add_argument("--batch", type=int, default=32, help="mini-batch size (default 32)")
    parser.add_argument("--protocol", default="sflam", help="sflam or fl (default sflam)")
    parser.add_argument("--image-size", type=int, default=None, help="input side, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=8, help="uplink bits for sflam (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        _validate(args.model, args.batch, args.protocol, args.bits)
        result = _measure_here(
            args.model, args.batch, args.protocol, args.image_size, args.seed, args.bits
        )
    except SflamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['model']} {result['protocol']} batch {result['batch']}: device peak "
            f"{result['device_peak_mb']:.1f} MB measured, {result['analytic_mb']:.1f} MB analytic"
        )
        for key, value in result["breakdown_mb"].items():
            print(f"  {key:16s} {value:9.1f} MB")
        print(f"  method: {result['method']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
