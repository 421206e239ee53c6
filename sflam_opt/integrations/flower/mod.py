"""A Flower client mod: an unchanged ``ClientApp`` sends its update quantized at its allocation.

Add :func:`sflam_mod` to ``ClientApp(mods=[...])``. The app keeps answering train messages the
usual Flower way, with its trained arrays in an ``ArrayRecord`` and a ``MetricRecord`` holding
``"num-examples"``. On a train message from :class:`~sflam_opt.integrations.flower.SflamStrategy`
(one whose config holds ``"bits"``) the mod keeps the received arrays, calls the app, and replaces
its reply by :func:`~.client.train_reply` of ``trained - received`` at the allocated bits, with the
app's ``num-examples`` and its other metrics. Every other message, error replies, and replies
already made with ``train_reply`` pass through unchanged.

The strategy also asks each node for its device id and channel gain (``"query.channel"``). Flower
routes a message to a registered function before any mod runs, so the app registers a handler for
it: :func:`channel_query` answers from the node config, or write one with
:func:`~.client.channel_reply` to report a measured gain::

    app = ClientApp(mods=[sflam_mod])
    app.query("channel")(channel_query)
    # ... the app's existing @app.train() function, unchanged
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from sflam_opt.errors import DataError
from sflam_opt.integrations.flower.client import UPDATE_KEY, channel_reply, train_reply

__all__ = ["channel_query", "sflam_mod"]


def channel_query(msg: Message, context: Context) -> Message:
    """Answer ``"query.channel"`` from the node config: ``"device-id"`` (default
    ``"partition-id"``) and ``"gain-db"``, e.g. ``flower-supernode --node-config
    "partition-id=0 gain-db=-100.0"``.

    Raises
    ------
    DataError
        The node config has neither id key, or no ``"gain-db"``.
    """
    cfg = context.node_config
    device = cfg.get("device-id", cfg.get("partition-id"))
    if device is None:
        raise DataError("node config: set 'device-id' (or 'partition-id') for the channel query")
    if "gain-db" not in cfg:
        raise DataError(
            "node config: set 'gain-db' (the channel gain, dB), or answer the channel query with "
            "channel_reply()"
        )
    return channel_reply(msg, device, cfg["gain-db"])  # type: ignore[arg-type]


def _allocated(msg: Message) -> bool:
    if msg.metadata.message_type != MessageType.TRAIN:
        return False
    return any("bits" in rec for rec in msg.content.config_records.values())


def _only(records: Any, what: str) -> Any:
    if len(records) != 1:
        raise DataError(f"SFLAM client mod: the train reply needs exactly one {what}")
    return next(iter(records.values()))


def _packed_reply(msg: Message, received: dict[str, np.ndarray], reply: Message) -> Message:
    trained = _only(reply.content.array_records, "ArrayRecord")
    if list(trained.keys()) != list(received):
        raise DataError(
            "SFLAM client mod: the trained arrays' names differ from the received ones; return "
            "the model's arrays in the received order"
        )
    metrics = dict(_only(reply.content.metric_records, "MetricRecord"))
    if "num-examples" not in metrics:
        raise DataError("SFLAM client mod: the train reply's MetricRecord has no 'num-examples'")
    n = metrics.pop("num-examples")
    update = [trained[k].numpy() - r for k, r in received.items()]
    config_key = next(k for k, rec in msg.content.config_records.items() if "bits" in rec)
    return train_reply(msg, update, n, metrics=metrics, config_key=config_key)


def sflam_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod: pack a plain train reply at the node's allocation (module docstring).

    Raises
    ------
    DataError
        The app's train reply lacks one ``ArrayRecord`` with the received arrays' names, or a
        ``MetricRecord`` with ``"num-examples"`` (Flower turns it into an error reply).
    """
    if not _allocated(msg):
        return call_next(msg, context)
    received = {k: a.numpy() for k, a in _only(msg.content.array_records, "ArrayRecord").items()}
    reply = call_next(msg, context)
    if reply.has_error() or UPDATE_KEY in reply.content.array_records:
        return reply
    return _packed_reply(msg, received, reply)
