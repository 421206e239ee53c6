"""The gloo runner: device workers in other processes (torch.distributed, gloo backend).

Rank 0 is the server: it runs the trainer (allocation, evaluation, checkpoints, outputs) with the
protocol's server half (:mod:`.protocols.roles`). Ranks 1..K are device workers: worker ``k``
hosts the fixed share :func:`device_shares` of the devices, loads and partitions the data set
itself (same seed, same partition) and keeps only its devices' shards, and runs the protocol's
device half for them. Everything between the halves -- models down and up (FedAvg happens on the
server from the uploaded models), activations, labels, gradients -- crosses as the frames of
:func:`~sflam_opt.training.transport.encode` over :class:`~sflam_opt.training.gloo.GlooTransport`.

Each round the server sends every worker the round plan (participants, bits), then serves one
lane of turns per worker, alternating between lanes so that the workers compute in parallel
(sequential split learning has a single lane). The server folds the turns in participant order,
so a run gives the same models, metrics and bytes as in one process.

Launch:

- one machine: ``sflam-opt train --transport gloo --workers K ...`` (:func:`gloo_protocol` spawns
  the K workers and joins them when the run ends);
- several machines: ``torchrun --nnodes M --nproc_per_node P ... -m sflam_opt.training.distributed
  <train options>`` (:func:`sflam_opt.training.distributed.main`; rank 0 is the server, the
  world size is K + 1).

Failures: a worker that dies or stays silent for ``timeout_s`` ends the run with
:class:`~sflam_opt.errors.TrainingRuntimeError` (``worker K (devices ...) lost in round R: ...``);
the checkpoint of the last finished round can be resumed with any number of workers. Workers
exit as soon as the server is gone.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import nn

from sflam_opt.errors import SflamError, TrainingConfigError, TrainingRuntimeError
from sflam_opt.training.config import TrainConfig
from sflam_opt.training.data import load_dataset
from sflam_opt.training.gloo import GlooTransport, PeerLost, describe_failure
from sflam_opt.training.models import build_split_model
from sflam_opt.training.partition import dirichlet_partition
from sflam_opt.training.protocols import PROTOCOLS, ClientData, LocalTraining, Protocol, RoundPlan
from sflam_opt.training.protocols.base import RoundStats
from sflam_opt.training.protocols.roles import ServerRole, device_turns, server_lanes

__all__ = [
    "RemoteDevicesProtocol",
    "device_ranges",
    "device_shares",
    "gloo_protocol",
    "init_error",
    "mark_external_launch",
    "run_worker",
    "worker_totals",
]

logger = logging.getLogger(__name__)

_LOCALHOST = "127.0.0.1"
_STOP = 0
#: Seconds a spawned worker gets to exit on its own after the server is done.
_JOIN_S = 10.0
#: Environment of spawned workers: torch's C++ warnings (a stack dump when the server goes away)
#: would bury the server's one-line error.
_WORKER_ENV = {"TORCH_CPP_LOG_LEVEL": "ERROR"}

# Set by main() when torchrun started this process: the process group comes from the env.
_external_launch = False


def device_shares(n_devices: int, workers: int) -> list[list[int]]:
    """Devices hosted by each worker: ``workers`` contiguous, near-equal blocks of ``0..N-1``."""
    return [b.tolist() for b in np.array_split(np.arange(n_devices), workers)]


def device_ranges(devices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    runs: list[list[int]] = []
    for n in sorted(devices):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _owners(shares: Sequence[Sequence[int]], n_devices: int) -> list[int]:
    owners = [0] * n_devices
    for k, share in enumerate(shares, start=1):
        for n in share:
            owners[n] = k
    return owners


def _plan_message(plan: RoundPlan) -> torch.Tensor:
    parts = plan.participants.astype(np.int64)
    head = np.array([plan.index, plan.seed, len(parts), plan.probe_bits], dtype=np.int64)
    return torch.from_numpy(np.concatenate([head, parts, plan.bits.astype(np.int64)]))


def _read_plan(msg: torch.Tensor) -> RoundPlan | None:
    values = msg.numpy().astype(np.int64)
    if values[0] == _STOP:
        return None
    index, seed, k, probe = (int(v) for v in values[:4])
    return RoundPlan(index, values[4 : 4 + k].copy(), values[4 + k :].copy(), seed, probe)


def _json_message(obj: Any) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8)


def worker_totals(metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary entries of a gloo run: per-worker wall time summed over its rounds (seconds)."""
    rows = [m["worker_wall_time_s"] for m in metrics if "worker_wall_time_s" in m]
    if not rows:
        return {}
    width = max(len(r) for r in rows)
    totals = [float(sum(r[k] for r in rows if k < len(r))) for k in range(width)]
    return {"worker_wall_time_s": totals}


# ------------------------------------------------------------------------------ server side


class RemoteDevicesProtocol:
    """A protocol's server half whose devices live in worker processes (rank 0's view).

    Offers what the trainer uses of :class:`~sflam_opt.training.protocols.Protocol`:
    :meth:`run_round`, :meth:`global_model`, :meth:`state_dict`, :meth:`load_state_dict`,
    :attr:`transport` and :meth:`round_extras`.

    Parameters
    ----------
    protocol_cls : type of Protocol
        The protocol.
    server : ServerRole
        Its server half over the global models.
    transport : GlooTransport
        Rank 0's transport.
    shares : list of list of int
        Devices of workers 1..K.
    """

    def __init__(
        self,
        protocol_cls: type[Protocol],
        server: ServerRole,
        transport: GlooTransport,
        shares: list[list[int]],
    ) -> None:
        self.protocol_cls = protocol_cls
        self.server = server
        self.transport = transport
        self.shares = shares
        self._owners = _owners(shares, len(server.sizes))
        self._ready = False
        self._extras: dict[str, Any] = {}

    def _lost(self, err: PeerLost, where: str) -> TrainingRuntimeError:
        share = self.shares[err.rank - 1] if 1 <= err.rank <= len(self.shares) else []
        devices = device_ranges(share)
        return TrainingRuntimeError(
            f"worker {err.rank} (devices {devices}) lost {where}: {err.reason}"
        )

    def start(self, setup: dict[str, Any]) -> None:
        """Send every worker its setup (config, threads, shares); answers are awaited later."""
        for k in range(1, len(self.shares) + 1):
            self.transport.send_control(k, _json_message(setup))

    def run_round(self, plan: RoundPlan) -> RoundStats:
        """Train one round on the workers; raises TrainingRuntimeError if a worker is lost."""
        try:
            return self._run_round(plan)
        except PeerLost as err:
            raise self._lost(err, f"in round {plan.index}") from None

    def _run_round(self, plan: RoundPlan) -> RoundStats:
        workers = range(1, len(self.shares) + 1)
        if not self._ready:
            for k in workers:
                self.transport.recv_control(k)
            self._ready = True
        started, busy = time.perf_counter(), self.transport.busy_s
        message = _plan_message(plan)
        for k in workers:
            self.transport.send_control(k, message)
        participants = plan.participants.tolist()
        if self.protocol_cls.sequential:
            lanes = [participants]
        else:
            lanes = [[n for n in participants if self._owners[n] == k] for k in workers]
        self.server.start_round(plan)
        active = server_lanes(self.server, plan, [lane for lane in lanes if lane])
        while active:
            for lane in list(active):
                if next(lane, StopIteration) is StopIteration:
                    active.remove(lane)
        stats = self.server.finish_round()
        walls = []
        for k in workers:
            report = self.transport.recv_control(k)
            walls.append(float(report[0]))
        self._extras = {
            "worker_wall_time_s": walls,
            "server_comm_time_s": self.transport.busy_s - busy,
            "round_wall_time_s": time.perf_counter() - started,
        }
        return stats

    def round_extras(self) -> dict[str, Any]:
        """Last round's per-worker wall time and the server's time in the transport (s)."""
        return dict(self._extras)

    def global_model(self) -> nn.Module:
        """The current global model (device part then server part)."""
        return self.server.global_model()

    def state_dict(self) -> dict[str, Any]:
        """The server half's state (workers keep nothing across rounds)."""
        return self.server.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.server.load_state_dict(state)

    def stop(self) -> None:
        """Tell every worker the run is over and wait until the messages left."""
        stop = torch.tensor([_STOP], dtype=torch.int64)
        for k in range(1, len(self.shares) + 1):
            self.transport.send_control(k, stop)
        self.transport.flush()


def init_error(err: BaseException, workers: int, timeout_s: float) -> TrainingRuntimeError:
    return TrainingRuntimeError(
        f"workers: the {workers} gloo workers did not all start "
        f"({describe_failure(err, timeout_s)}); check that every process can reach the server "
        "and raise --timeout-s if starting takes longer"
    )


@contextmanager
def gloo_protocol(
    config: TrainConfig,
    protocol_cls: type[Protocol],
    device_model: nn.Module,
    server_model: nn.Module,
    *,
    sizes: NDArray[np.int64],
    threads: int,
) -> Iterator[RemoteDevicesProtocol]:
    """The server side of a gloo run, with its workers started and stopped around it.

    Spawns ``config.workers`` worker processes on this machine, or, when :func:`main` runs under
    torchrun, joins the process group torchrun set up. On leaving, workers are told to stop (or,
    after an error, terminated) and joined, so none outlives the server.

    Raises
    ------
    TrainingRuntimeError
        The workers did not start or did not join within ``config.timeout_s``.
    """
    timeout = timedelta(seconds=config.timeout_s)
    workers = config.workers
    procs: list[Any] = []
    finished = False
    try:
        if _external_launch:
            world = dist.get_world_size()
            if world != workers + 1:
                raise TrainingConfigError(
                    f"workers: torchrun started {world} processes but --workers is {workers}; "
                    f"give --workers {world - 1}"
                )
        else:
            try:
                store = dist.TCPStore(
                    _LOCALHOST,
                    0,
                    workers + 1,
                    is_master=True,
                    timeout=timeout,
                    wait_for_workers=False,
                )
            except RuntimeError as err:
                raise init_error(err, workers, config.timeout_s) from None
            ctx = mp.get_context("spawn")
            with _child_env(_WORKER_ENV):
                for k in range(1, workers + 1):
                    proc = ctx.Process(
                        target=_worker_process,
                        args=(_LOCALHOST, store.port, k, workers + 1, config.timeout_s),
                        daemon=True,
                        name=f"sflam-worker-{k}",
                    )
                    proc.start()
                    procs.append(proc)
            try:
                dist.init_process_group(
                    "gloo", store=store, rank=0, world_size=workers + 1, timeout=timeout
                )
            except (RuntimeError, dist.DistError) as err:
                raise init_error(err, workers, config.timeout_s) from None
        shares = device_shares(config.devices, workers)
        transport = GlooTransport(
            config.devices, _owners(shares, config.devices), rank=0, timeout_s=config.timeout_s
        )
        hyper = LocalTraining(config.lr, config.momentum, config.batch_size, config.local_iters)
        server = protocol_cls.make_server(
            device_model, server_model, sizes=sizes, transport=transport, hyper=hyper
        )
        runner = RemoteDevicesProtocol(protocol_cls, server, transport, shares)
        runner.start({"config": config.to_dict(), "threads": threads, "shares": shares})
        yield runner
        try:
            runner.stop()
            finished = True
        except PeerLost as err:
            raise runner._lost(err, "at the end of the run") from None
    finally:
        _shut_down(procs, finished)


@contextmanager
def _child_env(values: dict[str, str]) -> Iterator[None]:
    # Spawned processes copy os.environ when they start.
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shut_down(procs: Sequence[Any], clean: bool) -> None:
    deadline = time.monotonic() + (_JOIN_S if clean else 0.0)
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ device workers


def _worker_process(host: str, port: int, rank: int, world: int, timeout_s: float) -> None:
    sys.exit(run_worker(rank, world, timeout_s, store=(host, port)))


def _worker_setup(
    transport: GlooTransport, setup: dict[str, Any], rank: int
) -> tuple[Any, set[int]]:
    config = TrainConfig(**{**setup["config"], "resume": False, "out": None})
    torch.set_num_threads(int(setup["threads"]))
    hosted = [int(n) for n in setup["shares"][rank - 1]]
    transport.owners = _owners(setup["shares"], config.devices)
    data = load_dataset(config.dataset, config.data_dir)
    parts = dirichlet_partition(
        data.y_train.numpy(), config.devices, config.alpha, seed=config.seed
    )
    where = torch.device(config.device)
    client = ClientData.from_partition(
        data.x_train, data.y_train, parts, data.num_classes, where, hosted=hosted
    )
    # Weights come with every download; only the architecture matters here.
    device_model, server_model, _ = build_split_model(
        config.model,
        num_classes=data.num_classes,
        image_size=data.image_size,
        in_chans=data.in_chans,
        seed=config.seed,
    )
    device_model.to(where)
    server_model.to(where)
    transport.where = where
    hyper = LocalTraining(config.lr, config.momentum, config.batch_size, config.local_iters)
    role = PROTOCOLS[config.protocol].make_device(
        device_model, server_model, data=client, transport=transport, hyper=hyper
    )
    return role, set(hosted)


def run_worker(
    rank: int, world: int, timeout_s: float, *, store: tuple[str, int] | None = None
) -> int:
    """Run device worker ``rank`` until the server stops it or is gone.

    Parameters
    ----------
    rank, world : int
        This worker's rank (1..K) and the world size K + 1.
    timeout_s : float
        Longest wait for any message (and for joining), seconds.
    store : (str, int), optional
        Host and port of the server's TCP store; default: torchrun's environment.

    Returns
    -------
    int
        Exit code: 0 after a clean stop, 1 when the server was lost or the setup failed (one
        ``error:`` line on stderr in the latter case).
    """
    timeout = timedelta(seconds=timeout_s)
    try:
        if store is not None:
            tcp = dist.TCPStore(store[0], store[1], world, is_master=False, timeout=timeout)
            dist.init_process_group("gloo", store=tcp, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        transport = GlooTransport(0, [], rank=rank, timeout_s=timeout_s)
        setup = json.loads(transport.recv_control(0).numpy().tobytes().decode("utf-8"))
        role, hosted = _worker_setup(transport, setup, rank)
        transport.send_control(0, torch.tensor([1], dtype=torch.int64))
        while (plan := _read_plan(transport.recv_control(0))) is not None:
            started = time.perf_counter()
            device_turns(role, plan, [n for n in plan.participants.tolist() if n in hosted])
            transport.flush()
            transport.send_control(0, torch.tensor([time.perf_counter() - started]))
        transport.flush()
        dist.destroy_process_group()
        return 0
    except (PeerLost, KeyboardInterrupt):
        return 1
    except (RuntimeError, dist.DistError) as err:
        print(f"error: worker {rank}: {describe_failure(err, timeout_s)}", file=sys.stderr)
        return 1
    except SflamError as err:
        print(f"error: worker {rank}: {err}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------ torchrun entry


def mark_external_launch() -> None:
    """Record that an external launcher (torchrun) started the processes: the server joins the
    existing process group instead of spawning its workers."""
    global _external_launch
    _external_launch = True
