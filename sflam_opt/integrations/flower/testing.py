"""An in-process Flower ``Grid`` for testing strategies and ``ClientApp``\\s without ray or network.

:class:`InProcessGrid` drives ``Strategy.start`` in the current process: every message goes through
Flower's own protobuf serialization on the way to the node and back (so each node receives its own
copy, as over a real link, and whatever cannot travel fails here too), and the ``ClientApp`` is
called directly with one persistent ``Context`` per node. Node ids are random 64-bit integers, as
in Flower, drawn from a seed; ``node_config`` carries ``"partition-id"`` and ``"num-partitions"``
as in the simulation engine.

Example::

    grid = InProcessGrid(client_app, num_nodes=4, seed=0)
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=3)
    grid.mute(grid.node_ids[0], "query.channel")  # node 0 stops answering the channel query
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from sflam_opt.validation import is_int

__all__ = ["Delivery", "InProcessGrid"]

logger = logging.getLogger(__name__)

#: Consecutive ``get_node_ids`` calls without any message sent after which the grid concludes that
#: the strategy waits for nodes that will never come (Flower's ``sample_nodes`` polls once a second
#: forever while fewer than ``min_available_nodes`` nodes are connected).
_MAX_IDLE_POLLS = 4


@dataclass(frozen=True)
class Delivery:
    """One message as the node received it and the reply as the server received it.

    Attributes
    ----------
    node_id : int
        Destination node.
    message : Message
        The node's copy of the message (after serialization).
    reply : Message or None
        The server's copy of the reply; None when the node did not answer.
    """

    node_id: int
    message: Message
    reply: Message | None


@dataclass
class _Node:
    context: Context
    muted: set[str | None] = field(default_factory=set)


def _wire(msg: Message, message_id: str | None = None) -> Message:
    proto = message_to_proto(msg)
    if message_id is not None:
        proto.metadata.message_id = message_id
    return message_from_proto(proto)


class InProcessGrid(Grid):
    """A ``Grid`` whose nodes are ``ClientApp`` calls in this process.

    Parameters
    ----------
    client_app : callable
        A ``flwr.clientapp.ClientApp`` (or any ``(Message, Context) -> Message`` callable).
    num_nodes : int
        Number of nodes (>= 1).
    node_configs : sequence of mapping, optional
        Extra ``node_config`` entries per node (length ``num_nodes``), merged over
        ``{"partition-id": i, "num-partitions": num_nodes}``.
    run_config : mapping, optional
        The run config every node's ``Context`` holds.
    run_id : int
        Run id of the messages.
    seed : int
        Seed of the random 64-bit node ids.

    Notes
    -----
    Creating the grid sets Flower's process-wide ``TaskIdentity`` (task id, run id and the server's
    node id), which ``Message(...)`` needs outside a real ``ServerApp`` process. ``ClientApp``
    exceptions come back as error replies, as in Flower. If a strategy keeps polling
    ``get_node_ids`` without sending (it waits for more nodes than the grid has), the grid raises
    ``RuntimeError`` instead of letting it sleep forever.
    """

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        num_nodes: int,
        *,
        node_configs: Iterable[Mapping[str, Any]] | None = None,
        run_config: Mapping[str, Any] | None = None,
        run_id: int = 1,
        seed: int = 0,
    ) -> None:
        if not is_int(num_nodes) or num_nodes < 1:
            raise ValueError(f"num_nodes={num_nodes!r}: need a whole number >= 1")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed={seed!r}: need a whole number >= 0")
        n = int(num_nodes)
        extra = list(node_configs) if node_configs is not None else [{}] * n
        if len(extra) != n:
            raise ValueError(f"node_configs: {len(extra)} entries for num_nodes={n}")
        rng = np.random.default_rng(int(seed))
        ids: list[int] = []
        while len(ids) < n:
            nid = int(rng.integers(2, 2**63 - 1))
            if nid not in ids:
                ids.append(nid)
        self.client_app = client_app
        #: Node ids in partition order: ``node_ids[i]`` has ``"partition-id" == i``.
        self.node_ids: list[int] = ids
        self._nodes = {
            nid: _Node(
                Context(
                    run_id=run_id,
                    node_id=nid,
                    node_config={"partition-id": i, "num-partitions": n, **dict(extra[i])},
                    state=RecordDict(),
                    run_config=dict(run_config or {}),
                )
            )
            for i, nid in enumerate(ids)
        }
        #: Every delivery so far, in order.
        self.log: list[Delivery] = []
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}
        self._idle_polls = 0
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    # ------------------------------------------------------------------ test controls
    def context(self, node_id: int) -> Context:
        """The persistent ``Context`` of a node."""
        return self._nodes[node_id].context

    def mute(self, node_id: int, message_type: str | None = None) -> None:
        """Make a node stop answering messages of ``message_type`` (all messages if None)."""
        self._nodes[node_id].muted.add(message_type)

    def unmute(self, node_id: int) -> None:
        """Make a node answer every message again."""
        self._nodes[node_id].muted.clear()

    # ------------------------------------------------------------------ Grid interface
    def set_run(self, run: Run) -> None:
        """Set the run the grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """Run information."""
        return self._run

    def create_message(  # noqa: D102 (documented on Grid)
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The node ids, in partition order."""
        self._idle_polls += 1
        if self._idle_polls >= _MAX_IDLE_POLLS:
            raise RuntimeError(
                f"InProcessGrid: the strategy keeps waiting for nodes; this grid has "
                f"{len(self.node_ids)}: lower min_available_nodes / min_train_nodes or add nodes"
            )
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node now; returns the message ids."""
        self._idle_polls = 0
        ids: list[str] = []
        for msg in messages:
            mid = uuid.uuid4().hex
            ids.append(mid)
            delivered = _wire(msg, mid)
            node = self._nodes.get(msg.metadata.dst_node_id)
            if node is None:
                err = Error(ErrorCode.NODE_UNAVAILABLE, f"no node {msg.metadata.dst_node_id}")
                self._replies[mid] = _wire(Message(err, reply_to=delivered), uuid.uuid4().hex)
                continue
            if None in node.muted or msg.metadata.message_type in node.muted:
                self.log.append(Delivery(msg.metadata.dst_node_id, delivered, None))
                continue
            try:
                reply = self.client_app(delivered, node.context)
            except Exception as exc:  # noqa: BLE001 -- Flower turns ClientApp errors into replies
                logger.debug("ClientApp raised:\n%s", traceback.format_exc())
                reason = f"{type(exc).__name__}: {exc}"
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=delivered
                )
            received = _wire(reply, uuid.uuid4().hex)
            self._replies[mid] = received
            self.log.append(Delivery(msg.metadata.dst_node_id, delivered, received))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to these messages that have arrived (each is returned once)."""
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver the messages and return every reply (silent nodes simply give none)."""
        self._idle_polls = 0
        return self.pull_messages(self.push_messages(messages))
