"""What the server checks before it trusts a node: the device it claims and the update it sends.

:class:`~sflam_opt.integrations.flower.SflamStrategy` calls these free functions from one place
each (the channel query and the aggregation), so they can be read and tested without a Flower
driver. Every check raises :class:`~sflam_opt.errors.DataError` with a one-line reason; the strategy
leaves the node out of the round and of the aggregate and stores the reason in
``SflamRound.left_out[node_id]``. Nothing here imports torch.

A train reply (:func:`check_train_reply`) is aggregated only when

1. it carries a frame and a ``MetricRecord`` (:func:`~.client.read_update`);
2. ``num-examples`` is a positive whole number no larger than the device's ``samples`` in the
   scenario (:func:`check_num_examples`): a node cannot buy itself a larger aggregation weight;
3. the frame decodes, as a state frame of quantized tensors named ``0, 1, ...``;
4. there is one tensor per array sent, each of that array's shape;
5. every tensor is packed at exactly the node's allocated bits;
6. every range and value is finite;
7. the frame is exactly as long as the allocation implies for the arrays sent
   (:func:`expected_frame_nbytes`), and an ``uplink-bytes`` metric, if sent, equals its length.

Device ids (:class:`DeviceBindings`): a node's first accepted claim binds it to that device for
the rest of the run. A later conflicting claim -- a second node claiming a bound device, or a
bound node claiming another device -- is left out with the reason. A binding is released when its
node is no longer connected (absent from ``grid.get_node_ids()``, i.e. the SuperLink has marked it
offline). A restarted SuperNode without a persistent authentication key comes back under a new
node id: it is left out while the SuperLink still lists its old id, and binds again to its device
once the old id has gone; a node restarted with the same key keeps its node id and its binding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Message

from sflam_opt.codec import FP32_BITS, dequantize, packed_nbytes
from sflam_opt.errors import DataError
from sflam_opt.integrations.flower.client import decode_update, read_update
from sflam_opt.validation import is_int

__all__ = [
    "DeviceBindings",
    "check_num_examples",
    "check_train_reply",
    "check_update",
    "expected_frame_nbytes",
]

_STATE_HEAD = 1 + 4  # tag, entry count
_ENTRY_HEAD = 2 + 4  # name length, frame length
_TENSOR_HEAD = 1 + 2  # tag, bits, ndim (then 4 bytes per dimension)
_RANGE = 8  # lo and hi as two float32


def expected_frame_nbytes(shapes: Sequence[tuple[int, ...]], bits: int) -> int:
    """Length of the update frame of arrays of these shapes packed at ``bits`` bits, bytes.

    Parameters
    ----------
    shapes : sequence of tuple of int
        Shapes of the arrays the server sent, in order.
    bits : int
        The node's allocated bits (1..16, or 32).

    Returns
    -------
    int
        The frame format of :mod:`sflam_opt.codec`: state header, then per array its name,
        its tensor header, ``ceil(n * bits / 8)`` bytes of codes and 8 range bytes (none at 32).
    """
    total = _STATE_HEAD
    for i, shape in enumerate(shapes):
        name = len(str(i))
        total += _ENTRY_HEAD + name + _TENSOR_HEAD + 4 * len(shape)
        total += packed_nbytes(math.prod(shape), bits) + (0 if bits == FP32_BITS else _RANGE)
    return total


def check_num_examples(value: Any, samples: int) -> int:
    """``num-examples`` as an int, if it is a whole number in ``1..samples``.

    Raises
    ------
    DataError
        Not a whole number, not positive, or more than the device's ``samples``.
    """
    if not is_int(value) or int(value) < 1:
        raise DataError(f"num-examples={value!r}: need a positive whole number")
    if int(value) > samples:
        raise DataError(
            f"num-examples={int(value)} exceeds the device's {samples} samples in the scenario"
        )
    return int(value)


def check_update(frame: bytes, shapes: Sequence[tuple[int, ...]], bits: int) -> list[np.ndarray]:
    """Decode an update frame and check it against the arrays sent and the allocated bits.

    Parameters
    ----------
    frame : bytes
        The packed update as received.
    shapes : sequence of tuple of int
        Shapes of the arrays the server sent, in order.
    bits : int
        The node's allocated bits.

    Returns
    -------
    list of ndarray
        The dequantized update, float32, one per array.

    Raises
    ------
    DataError
        Rules 3-7 of the module docstring (but the ``uplink-bytes`` metric), the first one broken.
    """
    try:
        tensors = decode_update(frame)
    except DataError as exc:
        raise DataError(f"update frame does not decode: {exc}") from None
    got = [q.shape for q in tensors]
    if got != [tuple(s) for s in shapes]:
        raise DataError(f"update shapes {got} differ from the arrays sent {list(shapes)}")
    for i, q in enumerate(tensors):
        if q.bits != bits:
            raise DataError(
                f"update[{i}] is packed at {q.bits} bits; the node was allocated {bits}"
            )
    values = []
    for i, q in enumerate(tensors):
        v = dequantize(q) if math.isfinite(q.lo) and math.isfinite(q.hi) else None
        if v is None or not np.isfinite(v).all():
            raise DataError(f"update[{i}] holds NaN or infinite values")
        values.append(v)
    # The codec's exact-length parsing makes this hold once the checks above pass; it stays as
    # the statement of the rule, next to the reply's own uplink-bytes claim.
    want = expected_frame_nbytes(shapes, bits)
    if len(frame) != want:
        raise DataError(
            f"update frame has {len(frame)} bytes; {bits} bits for the arrays sent make {want}"
        )
    return values


def check_train_reply(
    reply: Message,
    *,
    shapes: Sequence[tuple[int, ...]],
    bits: int,
    samples: int,
    weight_key: str = "num-examples",
) -> tuple[list[np.ndarray], int, int]:
    """Every check of the module docstring on one train reply.

    Parameters
    ----------
    reply : Message
        A train reply that is not an error.
    shapes : sequence of tuple of int
        Shapes of the arrays sent to the node.
    bits : int
        The node's allocated bits.
    samples : int
        The device's ``samples`` in the scenario.
    weight_key : str
        The metric that carries the number of examples.

    Returns
    -------
    update : list of ndarray
        The dequantized update.
    num_examples : int
        The aggregation weight.
    nbytes : int
        The frame's length, bytes.

    Raises
    ------
    DataError
        The first rule broken.
    """
    frame, metrics = read_update(reply, weight_key)
    n = check_num_examples(metrics[weight_key], samples)
    update = check_update(frame, shapes, bits)
    claimed = metrics.get("uplink-bytes")
    if claimed is not None and claimed != len(frame):
        raise DataError(f"uplink-bytes={claimed!r} but the frame has {len(frame)} bytes")
    return update, n, len(frame)


class DeviceBindings:
    """Which node is which scenario device: the first accepted claim binds (module docstring).

    Attributes
    ----------
    device_of : dict
        Node id -> the device it is bound to.
    """

    def __init__(self) -> None:
        self.device_of: dict[int, Any] = {}
        self._node_of: dict[Any, int] = {}

    def release_absent(self, connected: Iterable[int]) -> list[int]:
        """Release the bindings of nodes not in ``connected``; returns their node ids."""
        alive = set(connected)
        gone = [nid for nid in self.device_of if nid not in alive]
        for nid in gone:
            del self._node_of[self.device_of.pop(nid)]
        return gone

    def claim(self, node_id: int, device: Any, known: Iterable[Any]) -> None:
        """Accept ``node_id``'s claim to be ``device`` (binding it on first claim), or raise.

        Raises
        ------
        DataError
            The device is not in ``known`` (the scenario's ids), is bound to another node, or the
            node is bound to another device.
        """
        if device not in set(known):
            raise DataError(f"device id {device!r} is not in the scenario")
        bound = self.device_of.get(node_id)
        if bound is not None and bound != device:
            raise DataError(f"node is bound to device {bound!r}; it now claims {device!r}")
        holder = self._node_of.get(device)
        if holder is not None and holder != node_id:
            raise DataError(f"device id {device!r} is bound to node {holder}")
        self.device_of[node_id] = device
        self._node_of[device] = node_id
