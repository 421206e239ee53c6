"""The device <-> server link of the trainer: one small interface, bytes counted at the wire.

Everything the protocols exchange between a device and the server -- activations up (quantized in
SFLAM, arXiv 2504.09114; fp32 in SplitFed, Thapa et al. 2022), labels up, activation gradients down,
and models down/up for averaging -- goes through :class:`Transport`. The device half and the server
half of a protocol (:mod:`.protocols.roles`) only ever call

- ``send(direction, device, kind, message)``: the sending end (``"up"`` = device ``device`` to the
  server, ``"down"`` = server to device ``device``),
- ``recv(direction, device, kind)``: the receiving end, which gets the next message of that link.

A message is a float tensor (sent as fp32), an integer tensor (labels), a
:class:`~sflam_opt.training.quantizer.QuantizedTensor` (sent as its packed codes), or a state dict
(name -> tensor). :func:`encode` turns a message into one self-describing byte frame of the
torch-free :mod:`sflam_opt.codec` (which defines the format) and :func:`decode` turns it back; the
transport counts ``len(frame)`` and the *payload* part of it (the bytes docs/formulation.md §2
counts: packed codes + 8 range bytes per quantized tensor, 4 bytes per fp32 value, the raw
integers of labels). The remainder is framing: a tag byte, shapes, names. Kinds outside :data:`KINDS` (``"stats"``: the
training loss and gradient norms a device reports for the round's statistics; ``"control"``: round
plans of the multi-process runner) cross the link uncounted, since the simulated link does not
carry them.

:class:`InProcessTransport` really encodes and decodes every message, queueing the frames between
the two halves running in one process, so the receiver only ever sees what the bytes carry and
the counts are those of a real link. :class:`sflam_opt.training.gloo.GlooTransport` sends the same
frames between processes with torch.distributed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

from sflam_opt import codec
from sflam_opt.codec import Frame, QuantizedTensor
from sflam_opt.errors import DataError

__all__ = [
    "ALL_KINDS",
    "KINDS",
    "Direction",
    "Frame",
    "InProcessTransport",
    "Message",
    "TrafficMeter",
    "Transport",
    "decode",
    "encode",
]

logger = logging.getLogger(__name__)

Message: TypeAlias = Tensor | QuantizedTensor | Mapping[str, Tensor]

#: What may be exchanged; the traffic meter keeps one counter per (direction, kind).
KINDS = ("activations", "labels", "gradients", "model")
#: :data:`KINDS` and the uncounted kinds (module docstring), in wire-code order.
ALL_KINDS = (*KINDS, "stats", "control")

#: ``"up"``: a device sends to the server; ``"down"``: the server sends to a device.
Direction: TypeAlias = Literal["up", "down"]

# Integer dtypes an integer frame carries, in the codec's wire-code order (codec.INT_DTYPES).
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def _to_numpy(message: Message) -> QuantizedTensor | np.ndarray | dict[str, Any]:
    if isinstance(message, QuantizedTensor):
        return message
    if isinstance(message, Tensor):
        t = message.detach()
        if t.dtype in _INT_DTYPES:
            return t.cpu().contiguous().numpy()
        if not t.is_floating_point():
            raise DataError(f"transport: cannot send a tensor of dtype {t.dtype}")
        return t.to(torch.float32).cpu().numpy()
    if isinstance(message, Mapping):
        return {name: _to_numpy(value) for name, value in message.items()}
    raise DataError(f"transport: cannot send a message of type {type(message).__name__}")


def _to_torch(value: Any, device: torch.device | str | None) -> Message:
    if isinstance(value, QuantizedTensor):
        return value
    if isinstance(value, dict):
        return {name: _to_torch(v, device) for name, v in value.items()}
    return torch.from_numpy(value).to(device)


def encode(message: Message) -> Frame:
    """Serialize a message into one frame (the format of :mod:`sflam_opt.codec`).

    Parameters
    ----------
    message : Tensor, QuantizedTensor or mapping of str to Tensor
        Float tensors are sent as fp32 (exact for float32 models); integer and bool tensors as
        their raw values; a state dict as the frames of its tensors, in order, with their names.

    Returns
    -------
    Frame
    """
    return codec.encode(_to_numpy(message))


def decode(data: bytes, device: torch.device | str | None = None) -> Message:
    """Inverse of :func:`encode`; tensors are placed on ``device`` (default CPU).

    A quantized frame decodes to the :class:`QuantizedTensor` itself: dequantizing is the
    receiver's business. Raises :class:`~sflam_opt.errors.DataError` on a malformed frame.
    """
    return _to_torch(codec.decode(data), device)


@dataclass
class TrafficMeter:
    """Bytes sent per device and per (direction, kind) since the last :meth:`reset`.

    Attributes
    ----------
    uplink_bytes, downlink_bytes : ndarray of int64, shape (N,)
        Whole frames per device.
    uplink_payload, downlink_payload : ndarray of int64, shape (N,)
        Payload bytes per device (see :class:`Frame`).
    by_kind : dict
        ``{"up/activations": bytes, ...}`` whole frames per direction and kind.
    """

    n_devices: int
    uplink_bytes: np.ndarray = field(init=False)
    downlink_bytes: np.ndarray = field(init=False)
    uplink_payload: np.ndarray = field(init=False)
    downlink_payload: np.ndarray = field(init=False)
    by_kind: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        n = self.n_devices
        self.uplink_bytes = np.zeros(n, dtype=np.int64)
        self.downlink_bytes = np.zeros(n, dtype=np.int64)
        self.uplink_payload = np.zeros(n, dtype=np.int64)
        self.downlink_payload = np.zeros(n, dtype=np.int64)
        self.by_kind = {}

    def record(self, direction: str, device: int, kind: str, frame: Frame) -> None:
        """Count one frame sent ``"up"`` (device to server) or ``"down"`` for ``device``."""
        self.record_sizes(direction, device, kind, len(frame.data), frame.payload_nbytes)

    def record_sizes(
        self, direction: str, device: int, kind: str, nbytes: int, payload_nbytes: int
    ) -> None:
        """Count one frame of ``nbytes`` bytes, ``payload_nbytes`` of them payload.

        Kinds outside :data:`KINDS` are not counted.
        """
        if kind not in KINDS:
            return
        if direction == "up":
            self.uplink_bytes[device] += nbytes
            self.uplink_payload[device] += payload_nbytes
        else:
            self.downlink_bytes[device] += nbytes
            self.downlink_payload[device] += payload_nbytes
        key = f"{direction}/{kind}"
        self.by_kind[key] = self.by_kind.get(key, 0) + nbytes
        key = f"{direction}/{kind}/payload"
        self.by_kind[key] = self.by_kind.get(key, 0) + payload_nbytes

    def summary(self) -> dict[str, Any]:
        """Totals as plain JSON-ready data."""
        return {
            "uplink_bytes": int(self.uplink_bytes.sum()),
            "downlink_bytes": int(self.downlink_bytes.sum()),
            "uplink_payload_bytes": int(self.uplink_payload.sum()),
            "downlink_payload_bytes": int(self.downlink_payload.sum()),
            "traffic": dict(sorted(self.by_kind.items())),
        }


class Transport(ABC):
    """Device <-> server exchange; every message crosses as one counted frame.

    Parameters
    ----------
    n_devices : int
        Devices N; ``device`` arguments are positions in ``0..N-1``.

    Attributes
    ----------
    meter : TrafficMeter
        Bytes per device, direction and kind.
    busy_s : float
        Wall time spent inside :meth:`send` and :meth:`recv` (encoding, decoding and, between
        processes, waiting for the peer), seconds; never reset by the transport.
    """

    def __init__(self, n_devices: int) -> None:
        self.meter = TrafficMeter(n_devices)
        self.busy_s = 0.0

    def send(self, direction: Direction, device: int, kind: str, message: Message) -> None:
        """Send ``message`` on the link of ``device`` (``"up"``: from it, ``"down"``: to it)."""
        start = time.perf_counter()
        try:
            self._send(direction, device, kind, message)
        finally:
            self.busy_s += time.perf_counter() - start

    def recv(self, direction: Direction, device: int, kind: str) -> Message:
        """The next message of ``kind`` on the link of ``device`` in ``direction``."""
        start = time.perf_counter()
        try:
            return self._recv(direction, device, kind)
        finally:
            self.busy_s += time.perf_counter() - start

    @abstractmethod
    def _send(self, direction: Direction, device: int, kind: str, message: Message) -> None:
        """Implementation of :meth:`send`."""

    @abstractmethod
    def _recv(self, direction: Direction, device: int, kind: str) -> Message:
        """Implementation of :meth:`recv`."""


class InProcessTransport(Transport):
    """Both ends in this process: encode, count, queue the frame, decode on receipt.

    Parameters
    ----------
    n_devices : int
        Devices N.
    server_device, client_device : torch.device or str
        Where received tensors are placed on each side (the same device in a simulation).
    """

    def __init__(
        self,
        n_devices: int,
        server_device: torch.device | str = "cpu",
        client_device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(n_devices)
        self.server_device = torch.device(server_device)
        self.client_device = torch.device(client_device)
        self._queues: dict[tuple[str, int], deque[tuple[str, bytes]]] = {}

    def _send(self, direction: Direction, device: int, kind: str, message: Message) -> None:
        frame = encode(message)
        self.meter.record(direction, device, kind, frame)
        self._queues.setdefault((direction, device), deque()).append((kind, frame.data))

    def _recv(self, direction: Direction, device: int, kind: str) -> Message:
        queue = self._queues.get((direction, device))
        if not queue:
            raise RuntimeError(f"transport: no {kind!r} message queued {direction} for {device}")
        sent_kind, data = queue.popleft()
        if sent_kind != kind:
            raise RuntimeError(
                f"transport: expected {kind!r} {direction} for device {device}, got {sent_kind!r}"
            )
        return decode(data, self.server_device if direction == "up" else self.client_device)

    def to_server(self, device: int, kind: str, message: Message) -> Message:
        """Send ``message`` up from ``device`` and return what the server receives."""
        self.send("up", device, kind, message)
        return self.recv("up", device, kind)

    def to_device(self, device: int, kind: str, message: Message) -> Message:
        """Send ``message`` down to ``device`` and return what the device receives."""
        self.send("down", device, kind, message)
        return self.recv("down", device, kind)
