"""A :class:`~sflam_opt.training.transport.Transport` between processes over torch.distributed (gloo).

Rank 0 is the server; ranks 1..K are device workers, rank ``owners[n]`` hosting device ``n``.
Every message is the frame of :func:`~sflam_opt.training.transport.encode`, sent as two uint8 /
int64 tensors: first a header ``[frame bytes, payload bytes, kind code, device]``, then the frame
itself, so the wire carries exactly the packed codes the in-process transport counts. Sends are
asynchronous (``isend``); every receive waits at most ``timeout_s`` seconds, and a peer that has
died (connection reset) or stays silent for that long raises :class:`PeerLost` instead of
hanging. The server's :class:`~sflam_opt.training.transport.TrafficMeter` counts both directions
(downlink when sending, uplink when receiving), so its counts equal the in-process ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from sflam_opt.training.transport import (
    ALL_KINDS,
    Direction,
    Frame,
    Message,
    Transport,
    decode,
    encode,
)

__all__ = ["CONTROL_DEVICE", "GlooTransport", "PeerLost", "describe_failure"]

logger = logging.getLogger(__name__)

#: ``device`` field of control frames (round plans, reports), which belong to no device.
CONTROL_DEVICE = -1


class PeerLost(Exception):
    """A peer process died, stopped answering or broke the message order.

    Parameters
    ----------
    rank : int
        The peer's rank.
    reason : str
        One line saying what happened.
    """

    def __init__(self, rank: int, reason: str) -> None:
        super().__init__(f"rank {rank}: {reason}")
        self.rank = rank
        self.reason = reason


def describe_failure(err: BaseException, timeout_s: float) -> str:
    """One short line for a torch.distributed error (gloo messages span lines and name files)."""
    text = str(err).strip()
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        return f"no answer within {timeout_s:g} s (--timeout-s)"
    if "connection reset" in low or "connection closed" in low or "broken pipe" in low:
        return "connection reset by peer (the process exited)"
    first = text.splitlines()[0] if text else type(err).__name__
    first = first.rsplit("] ", 1)[-1]
    return first[:160]


class GlooTransport(Transport):
    """Frames between the server (rank 0) and device workers (ranks 1..K) over gloo.

    Parameters
    ----------
    n_devices : int
        Devices N.
    owners : sequence of int, length N
        Rank hosting each device (1..K).
    rank : int
        This process's rank (0 = server).
    timeout_s : float
        Longest wait of any receive, seconds.
    where : torch.device or str
        Where received tensors are placed.

    Notes
    -----
    Needs an initialised default process group (``torch.distributed.init_process_group`` with
    the gloo backend). Frames between two ranks arrive in the order they were sent; both ends
    follow the same schedule, and every frame's header is checked against the expected kind and
    device, so a schedule mismatch is reported instead of silently mis-decoded.
    """

    def __init__(
        self,
        n_devices: int,
        owners: Sequence[int],
        *,
        rank: int,
        timeout_s: float,
        where: torch.device | str = "cpu",
    ) -> None:
        super().__init__(n_devices)
        self.owners = [int(o) for o in owners]
        self.rank = rank
        self.timeout_s = float(timeout_s)
        self.where = torch.device(where)
        self._pending: list[tuple[dist.Work, Tensor, int]] = []

    # ---------------------------------------------------------------- the Transport interface
    def _peer(self, device: int) -> int:
        return self.owners[device] if self.rank == 0 else 0

    def _send(self, direction: Direction, device: int, kind: str, message: Message) -> None:
        frame = encode(message)
        if self.rank == 0:
            self.meter.record(direction, device, kind, frame)
        self.send_frame(self._peer(device), kind, device, frame)

    def _recv(self, direction: Direction, device: int, kind: str) -> Message:
        data, payload = self.recv_frame(self._peer(device), kind, device)
        if self.rank == 0:
            self.meter.record_sizes(direction, device, kind, len(data), payload)
        return decode(data, self.where)

    # ---------------------------------------------------------------- control messages
    def send_control(self, peer: int, message: Message) -> None:
        """Send an uncounted control message (round plan, report) to ``peer``."""
        self.send_frame(peer, "control", CONTROL_DEVICE, encode(message))

    def recv_control(self, peer: int) -> Message:
        """The next control message from ``peer``."""
        data, _ = self.recv_frame(peer, "control", CONTROL_DEVICE)
        return decode(data, self.where)

    # ---------------------------------------------------------------- frames
    def send_frame(self, peer: int, kind: str, device: int, frame: Frame) -> None:
        """Queue ``frame`` for ``peer``: the header, then the bytes (both asynchronous)."""
        head = torch.tensor(
            [len(frame.data), frame.payload_nbytes, ALL_KINDS.index(kind), device],
            dtype=torch.int64,
        )
        body = torch.frombuffer(bytearray(frame.data), dtype=torch.uint8)
        self._pending = [p for p in self._pending if not p[0].is_completed()]
        try:
            self._pending.append((dist.isend(head, peer), head, peer))
            self._pending.append((dist.isend(body, peer), body, peer))
        except RuntimeError as err:
            raise PeerLost(peer, describe_failure(err, self.timeout_s)) from None

    def recv_frame(self, peer: int, kind: str, device: int) -> tuple[bytes, int]:
        """The next frame from ``peer``, checked to be ``kind`` for ``device``.

        Returns
        -------
        (bytes, int)
            The frame and its payload byte count.

        Raises
        ------
        PeerLost
            The peer died, did not answer within the timeout, or sent something else.
        """
        head = torch.empty(4, dtype=torch.int64)
        self._wait(head, peer)
        nbytes, payload, code, got_device = head.tolist()
        got_kind = ALL_KINDS[code] if 0 <= code < len(ALL_KINDS) else f"code {code}"
        if got_kind != kind or got_device != device or nbytes <= 0:
            raise PeerLost(
                peer,
                f"out of step: expected {kind!r} for device {device}, got {got_kind!r} for "
                f"device {got_device}",
            )
        body = torch.empty(nbytes, dtype=torch.uint8)
        self._wait(body, peer)
        return body.numpy().tobytes(), int(payload)

    def _wait(self, buffer: Tensor, peer: int) -> None:
        try:
            work = dist.irecv(buffer, peer)
            work.wait(timeout=timedelta(seconds=self.timeout_s))
        except RuntimeError as err:
            raise PeerLost(peer, describe_failure(err, self.timeout_s)) from None

    def flush(self) -> None:
        """Wait (at most the timeout each) until every queued send has left."""
        pending, self._pending = self._pending, []
        for work, _, peer in pending:
            try:
                work.wait(timeout=timedelta(seconds=self.timeout_s))
            except RuntimeError as err:
                raise PeerLost(peer, describe_failure(err, self.timeout_s)) from None
