"""The client side of :class:`~sflam_opt.integrations.flower.SflamStrategy`, and the update codec.

A ``ClientApp`` that works with the strategy handles two message types:

- ``"query.channel"``: answer with :func:`channel_reply`, giving the node's scenario device id
  (Flower's node ids are random 64-bit integers, so the node must say which device it is) and its
  current channel gain in dB;
- ``"train"``: read the node's own bits, bandwidth and power with :func:`read_allocation`, train
  on the received arrays, and answer with :func:`train_reply`, which quantizes ``trained -
  received`` at the allocated bits and sends the packed frame.

The update travels as one frame of the torch-free :mod:`sflam_opt.codec` (a state frame of
:class:`~sflam_opt.codec.QuantizedTensor`, one per array named ``"0"``, ``"1"``, ..., each with its
own range), carried in a Flower ``Array`` whose ``data`` is exactly the frame's bytes. Neither side
needs torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from sflam_opt import codec
from sflam_opt.codec import QuantizedTensor, sendable_bits
from sflam_opt.errors import DataError
from sflam_opt.validation import check_int, check_real, is_int

__all__ = [
    "CALIBRATION_KEYS",
    "CHANNEL_KEY",
    "FRAME_STYPE",
    "QUERY_CHANNEL",
    "UPDATE_KEY",
    "calibration_metrics",
    "channel_reply",
    "decode_update",
    "pack_update",
    "read_allocation",
    "read_channel",
    "read_update",
    "sendable_bits",
    "train_reply",
    "unpack_update",
]

#: Message type of the per-round channel query (a Flower ``query`` with action ``channel``).
QUERY_CHANNEL = "query.channel"
#: Key of the ``ConfigRecord`` of a channel reply (``"device-id"``, ``"gain-db"``).
CHANNEL_KEY = "channel"
#: Key of the ``ArrayRecord`` of a train reply; it holds one ``Array`` named ``"frame"``.
UPDATE_KEY = "update"
#: ``Array.stype`` of a packed update frame (its ``data`` is the frame, byte for byte).
FRAME_STYPE = "sflam-opt.frame"
_FRAME_NAME = "frame"
_METRICS_KEY = "metrics"


def _seed_from(msg: Message, config_key: str) -> int:
    # A fresh, reproducible stream per (round, node): the same seed every round would reuse the
    # rounding draws position by position, correlating the quantization noise across rounds.
    cfg = _config(msg, config_key)
    rnd = cfg.get("server-round", 0)
    rnd = int(rnd) if is_int(rnd) else 0
    ss = np.random.SeedSequence([rnd, int(msg.metadata.dst_node_id) % 2**63])
    return int(ss.generate_state(1, dtype=np.uint64)[0] % 2**63)


def pack_update(
    update: Sequence[np.ndarray], bits: int, *, seed: int = 0
) -> tuple[bytes, list[QuantizedTensor]]:
    """Quantize each array of ``update`` at ``bits`` bits and pack them into one frame.

    Parameters
    ----------
    update : sequence of ndarray
        The arrays to send, any shapes, float or integer (e.g. a batch-norm step counter);
        quantized in float32.
    bits : int
        Bits per value, 1..16, or 32 for the fp32 passthrough.
    seed : int
        Seed of the stochastic rounding (a numpy ``Generator``; the codes do not depend on torch).

    Returns
    -------
    frame : bytes
        The packed frame (its length is what crosses the link).
    quantized : list of QuantizedTensor
        What was packed, one per array, in order.

    Raises
    ------
    DataError
        An array is neither float nor integer, or holds non-finite values.
    TrainingConfigError
        ``bits`` is not a supported bit width.
    """
    rng = np.random.default_rng(int(seed))
    quantized: list[QuantizedTensor] = []
    for i, arr in enumerate(update):
        a = np.asarray(arr)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise DataError(f"update[{i}]: dtype {a.dtype} is not numeric; send trained - received")
        if not np.all(np.isfinite(a)):
            raise DataError(f"update[{i}]: holds NaN or infinite values; training diverged")
        quantized.append(codec.quantize(a, bits, rng))
    frame = codec.encode({str(i): q for i, q in enumerate(quantized)})
    return frame.data, quantized


def unpack_update(frame: bytes) -> list[np.ndarray]:
    """Inverse of :func:`pack_update`: the dequantized arrays, float32, in order.

    Raises
    ------
    DataError
        The bytes are not an update frame.
    """
    return [codec.dequantize(q) for q in decode_update(frame)]


def decode_update(frame: bytes) -> list[QuantizedTensor]:
    """The quantized tensors of an update frame, in order, still packed.

    Raises
    ------
    DataError
        The bytes do not decode, or are not a state frame of quantized tensors named 0, 1, ...
    """
    msg = codec.decode(frame)
    if not isinstance(msg, Mapping) or not all(
        isinstance(q, QuantizedTensor) for q in msg.values()
    ):
        raise DataError("update frame: not a state frame of quantized tensors")
    if list(msg) != [str(i) for i in range(len(msg))]:
        raise DataError(f"update frame: tensor names {list(msg)[:3]}... are not 0, 1, 2, ...")
    return list(msg.values())


def _config(msg: Message, key: str) -> ConfigRecord:
    content = msg.content
    if key not in content.config_records:
        raise DataError(
            f"message of type {msg.metadata.message_type!r} has no ConfigRecord {key!r}; was it "
            "sent by SflamStrategy?"
        )
    return content.config_records[key]


def channel_reply(msg: Message, device_id: int | str, gain_db: float) -> Message:
    """Answer a ``"query.channel"`` message with this node's device id and channel gain.

    Parameters
    ----------
    msg : Message
        The received query.
    device_id : int or str
        The node's device id in the strategy's scenario.
    gain_db : float
        The node's current channel power gain, dB (e.g. measured or faded this round).

    Returns
    -------
    Message
        The reply, with a ``ConfigRecord`` ``"channel"`` holding ``"device-id"`` and ``"gain-db"``.

    Raises
    ------
    DataError
        ``device_id`` is neither a whole number nor a string, or ``gain_db`` is not finite.
    """
    if not (is_int(device_id) or isinstance(device_id, str)):
        raise DataError(f"device_id={device_id!r}: need a whole number or a string")
    gain = check_real(gain_db, "gain_db", error=DataError, hint=" (dB)")
    dev = int(device_id) if is_int(device_id) else device_id
    record = ConfigRecord({"device-id": dev, "gain-db": gain})
    return Message(RecordDict({CHANNEL_KEY: record}), reply_to=msg)


def read_channel(reply: Message) -> tuple[int | str, float]:
    """The ``(device id, gain dB)`` of a channel reply (the server side of :func:`channel_reply`).

    Raises
    ------
    DataError
        The reply lacks the record or holds a bad id or gain.
    """
    rec = _config(reply, CHANNEL_KEY)
    dev, gain = rec.get("device-id"), rec.get("gain-db")
    if not (is_int(dev) or isinstance(dev, str)):
        raise DataError(f"channel reply: device-id={dev!r}: need a whole number or a string")
    if not isinstance(gain, float | int) or isinstance(gain, bool) or not math.isfinite(gain):
        raise DataError(f"channel reply: gain-db={gain!r}: need a finite number (dB)")
    return dev, float(gain)


def read_allocation(msg: Message, config_key: str = "config") -> dict[str, Any]:
    """This node's allocation in a train message.

    Parameters
    ----------
    msg : Message
        A train message sent by the strategy.
    config_key : str
        Key of its ``ConfigRecord`` (the strategy's ``configrecord_key``).

    Returns
    -------
    dict
        ``{"bits": int, "bandwidth_hz": float (Hz), "power_w": float (W)}``.

    Raises
    ------
    DataError
        The message carries no allocation.
    """
    cfg = _config(msg, config_key)
    missing = [k for k in ("bits", "bandwidth-hz", "power-w") if k not in cfg]
    if missing:
        raise DataError(
            f"train message has no {', '.join(repr(k) for k in missing)} in its config; send "
            "it with SflamStrategy"
        )
    return {
        "bits": check_int(cfg["bits"], "bits", minimum=1, error=DataError),
        "bandwidth_hz": check_real(cfg["bandwidth-hz"], "bandwidth-hz", lower=0.0, error=DataError),
        "power_w": check_real(cfg["power-w"], "power-w", lower=0.0, error=DataError),
    }


def train_reply(
    msg: Message,
    update: Sequence[np.ndarray],
    num_examples: int,
    *,
    metrics: Mapping[str, float] | None = None,
    seed: int | None = None,
    config_key: str = "config",
) -> Message:
    """Answer a train message with the quantized, packed update.

    Parameters
    ----------
    msg : Message
        The received train message.
    update : sequence of ndarray
        ``trained - received`` for each array of the message's ``ArrayRecord``, in its order.
    num_examples : int
        Local training examples (> 0); the aggregation weight.
    metrics : mapping of str to float, optional
        Extra metrics (e.g. ``{"train-loss": 0.3}``); the strategy averages them weighted by
        ``num-examples``.
    seed : int, optional
        Seed of the stochastic rounding; by default derived from the round and the node, so that
        each round draws fresh rounding noise and a rerun draws the same.
    config_key : str
        Key of the message's ``ConfigRecord`` (the strategy's ``configrecord_key``).

    Returns
    -------
    Message
        ``ArrayRecord`` ``"update"`` with one ``Array`` ``"frame"`` (the packed frame) and
        ``MetricRecord`` ``"metrics"`` with ``"num-examples"``, ``"uplink-bytes"`` (the frame
        size) and ``metrics``.

    Raises
    ------
    DataError
        Bad ``num_examples``, ``metrics`` or update arrays, or a message without an allocation.
    """
    bits = read_allocation(msg, config_key)["bits"]
    n = check_int(num_examples, "num_examples", minimum=1, error=DataError)
    frame, _ = pack_update(update, bits, seed=_seed_from(msg, config_key) if seed is None else seed)
    record = MetricRecord({"num-examples": n, "uplink-bytes": len(frame)})
    for key, value in (metrics or {}).items():
        if key in record:
            raise DataError(f"metrics: key {key!r} is reserved; rename it")
        record[key] = check_real(value, f"metrics[{key!r}]", error=DataError)
    array = Array(dtype="uint8", shape=(len(frame),), stype=FRAME_STYPE, data=frame)
    content = RecordDict({UPDATE_KEY: ArrayRecord({_FRAME_NAME: array}), _METRICS_KEY: record})
    return Message(content, reply_to=msg)


def read_update(reply: Message, weight_key: str = "num-examples") -> tuple[bytes, MetricRecord]:
    """The frame and metrics of a train reply (the server side of :func:`train_reply`).

    Raises
    ------
    DataError
        The reply does not hold a frame and a ``MetricRecord`` with a positive ``weight_key``.
    """
    content = reply.content
    arrays = content.array_records.get(UPDATE_KEY)
    if arrays is None or _FRAME_NAME not in arrays or arrays[_FRAME_NAME].stype != FRAME_STYPE:
        raise DataError("train reply: no packed update frame; answer with train_reply()")
    metrics = content.metric_records.get(_METRICS_KEY)
    weight = None if metrics is None else metrics.get(weight_key)
    if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight > 0:
        raise DataError(
            f"train reply: no positive {weight_key!r} metric; answer with train_reply()"
        )
    return arrays[_FRAME_NAME].data, metrics


#: Train-reply metrics that feed ``SflamStrategy(calibration="online")`` (docs/formulation.md
#: §4.3): the mean training loss over the local steps, the mean squared norm of the local
#: stochastic gradients, the squared quantization error of the sent update in gradient units, and
#: the bits it was sent at.
CALIBRATION_KEYS = ("calib-loss", "calib-grad-sq", "calib-quant-err", "calib-quant-bits")


def calibration_metrics(
    msg: Message,
    update: Sequence[np.ndarray],
    *,
    loss: float,
    grad_sq_norm: float,
    step: float,
    seed: int | None = None,
    config_key: str = "config",
) -> dict[str, float]:
    """The :data:`CALIBRATION_KEYS` metrics of a train reply; pass them as ``train_reply(metrics=)``.

    Parameters
    ----------
    msg : Message
        The received train message (its bits are the ones the update is sent at).
    update : sequence of ndarray
        The update given to :func:`train_reply`.
    loss : float
        Mean training loss over this round's local steps.
    grad_sq_norm : float
        Mean squared norm of the local stochastic gradients over the same steps.
    step : float
        Model displacement per unit gradient over the round: the effective learning rate
        ``lr / (1 - momentum)`` times the local steps. ``||Q(u) - u||^2 / step^2`` puts the
        update's quantization error in the units of ``grad_sq_norm``.
    seed : int, optional
        As in :func:`train_reply` (the same default, so the error is that of the frame sent).

    Returns
    -------
    dict of str to float
        ``calib-loss``, ``calib-grad-sq`` and, below 32 bits, ``calib-quant-err`` and
        ``calib-quant-bits``.
    """
    bits = read_allocation(msg, config_key)["bits"]
    step = check_real(step, "step", lower=0.0, open_lower=True, error=DataError)
    out = {
        "calib-loss": check_real(loss, "loss", lower=0.0, error=DataError),
        "calib-grad-sq": check_real(grad_sq_norm, "grad_sq_norm", lower=0.0, error=DataError),
    }
    if bits == codec.FP32_BITS:
        return out
    _, sent = pack_update(update, bits, seed=_seed_from(msg, config_key) if seed is None else seed)
    err = sum(
        float(np.sum(np.square(codec.dequantize(q).astype(np.float64) - np.asarray(u))))
        for q, u in zip(sent, update, strict=True)
    )
    out["calib-quant-err"] = err / step**2
    out["calib-quant-bits"] = float(bits)
    return out
