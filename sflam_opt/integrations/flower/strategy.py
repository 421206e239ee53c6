"""``SflamStrategy``: FedAvg in which every sampled node gets its own bits, bandwidth and power.

Each training round of :class:`SflamStrategy`:

1. samples nodes as ``FedAvg`` does;
2. sends each a ``"query.channel"`` message and reads which scenario device it is and its current
   channel gain (a node that does not answer, or answers badly, is left out of the round; a node's
   first accepted device claim binds it to that device, see
   :class:`~sflam_opt.integrations.flower.validation.DeviceBindings`);
3. solves the round for those devices and gains with :class:`sflam_opt.Allocator`; an infeasible
   or failed solve falls back to the equal allocation (largest bit width, ``B/N``, full power), with
   a logged warning and the reason in :attr:`SflamStrategy.history`;
4. sends each node a train message of its own: the global arrays and a new ``ConfigRecord`` with
   the train config, ``"server-round"``, ``"bits"``, ``"bandwidth-hz"`` and ``"power-w"``;
5. checks every train reply (:mod:`sflam_opt.integrations.flower.validation`: the frame, its bits,
   shapes, size and values, and ``num-examples``), leaves out the ones that fail with the reason,
   dequantizes the rest and adds their ``num-examples``-weighted mean to the
   global arrays; its ``MetricRecord`` holds the **sum** of the uplink bytes received, the round's
   modelled latency (max over devices, s) and energy (sum, J), and the weighted mean of any other
   client metric.

The cost model of an FL update is described in :mod:`sflam_opt.integrations.fl_update` and in
``docs/formulation.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from sflam_opt.allocation import Allocation
from sflam_opt.allocator import Allocator
from sflam_opt.costs import breakdown, equal_allocation
from sflam_opt.device_arrays import gain_values
from sflam_opt.errors import DataError, ScenarioError
from sflam_opt.estimator import (
    MIN_FIT_ROUNDS,
    WARMUP_BITS,
    ConvergenceEstimator,
    UnsupportedFitError,
)
from sflam_opt.integrations.flower.client import QUERY_CHANNEL, read_channel, sendable_bits
from sflam_opt.integrations.flower.validation import DeviceBindings, check_train_reply
from sflam_opt.scenario import Scenario
from sflam_opt.solvers import SolveResult
from sflam_opt.validation import check_real

__all__ = ["SflamRound", "SflamStrategy"]

logger = logging.getLogger(__name__)


@dataclass
class SflamRound:
    """What happened in one training round.

    Attributes
    ----------
    server_round : int
        Round number, from 1.
    sampled : list of int
        Node ids sampled for the round.
    left_out : dict of int to str
        Nodes left out of the round, with the reason: no or bad channel reply, a device claim that
        conflicts with a binding, or a train reply that failed a check of
        :mod:`~sflam_opt.integrations.flower.validation` (then the node is also in ``node_ids``,
        since it was sent an allocation, but not in ``aggregated``).
    node_ids, device_ids : list
        Nodes taking part and their scenario device ids, aligned; the allocation's order.
    gain_db : list of float
        The gains (dB) the nodes reported, aligned with ``device_ids``.
    allocation : Allocation or None
        What was sent (None when no node took part).
    status, message : str
        The solver's status and message (``"skipped"`` when no node took part).
    fallback : str or None
        Why the equal allocation was used instead of the solver's, or None.
    objective : float
        J of the solver's allocation on the round's scenario (inf without one).
    latency_s, energy_j : float
        Modelled round latency (max over devices, s) and energy (sum, J) of ``allocation``.
    solve_time_s : float
        Wall time of the solve, s.
    aggregated : list
        Device ids whose update was aggregated.
    uplink_bytes : int
        Sum of the packed update frames received, bytes.
    num_examples : int
        Sum of the aggregated replies' ``num-examples``.
    convergence : dict
        ``a``, ``phi0``, ``q``, ``epsilon`` in force when the round was solved.
    calibration : str
        ``"scenario"`` (the scenario's constants), ``"fit"`` (an online fit round: sent at
        :data:`WARMUP_BITS`, constants not fitted yet) or ``"online"`` (fitted constants).
    """

    server_round: int
    sampled: list[int]
    left_out: dict[int, str]
    node_ids: list[int]
    device_ids: list[Any]
    gain_db: list[float]
    allocation: Allocation | None
    status: str
    message: str
    fallback: str | None = None
    objective: float = float("inf")
    latency_s: float = float("nan")
    energy_j: float = float("nan")
    solve_time_s: float = 0.0
    aggregated: list[Any] = field(default_factory=list)
    uplink_bytes: int = 0
    num_examples: int = 0
    convergence: dict[str, float] = field(default_factory=dict)
    calibration: str = "scenario"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (per-device decisions as lists aligned with ``device_ids``)."""
        a = self.allocation
        return {
            "server_round": self.server_round,
            "sampled": list(self.sampled),
            "left_out": {str(k): v for k, v in self.left_out.items()},
            "node_ids": list(self.node_ids),
            "device_ids": list(self.device_ids),
            "gain_db": list(self.gain_db),
            "bits": a.bits.tolist() if a is not None else [],
            "bandwidth_hz": a.bandwidth_hz.tolist() if a is not None else [],
            "power_w": a.power_w.tolist() if a is not None else [],
            "status": self.status,
            "message": self.message,
            "fallback": self.fallback,
            "objective": self.objective,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "solve_time_s": self.solve_time_s,
            "aggregated": list(self.aggregated),
            "uplink_bytes": self.uplink_bytes,
            "num_examples": self.num_examples,
            "convergence": dict(self.convergence),
            "calibration": self.calibration,
        }


class SflamStrategy(FedAvg):
    """FedAvg with a per-node SFLAM allocation and really quantized updates.

    Parameters
    ----------
    scenario : Scenario
        The devices that may take part, with their nominal gains; build it with
        :func:`~sflam_opt.integrations.fl_update.update_scenario`. Every bit level must be one the
        quantizer can send (1..16 or 32).
    solver : str
        Any registered solver (see ``sflam-opt solvers``).
    solver_options : mapping, optional
        Options passed to the solver.
    query_timeout : float
        Seconds to wait for the channel replies (> 0); nodes that have not answered by then are
        left out of the round.
    calibration : {"scenario", "online"}
        ``"online"``: the first ``fit_rounds`` rounds send :data:`WARMUP_BITS`-bit updates, the
        replies' :data:`~sflam_opt.integrations.flower.client.CALIBRATION_KEYS` metrics (from
        :func:`~sflam_opt.integrations.flower.client.calibration_metrics`) feed a
        :class:`~sflam_opt.ConvergenceEstimator`, and later rounds are solved with its constants
        (docs/formulation.md §4.3); while the measured rounds cannot support a fit
        (:class:`~sflam_opt.UnsupportedFitError`) the warm-up goes on and the fit is tried
        again after every round. ``"scenario"`` keeps the scenario's.
    fit_rounds : int
        Rounds the online calibration fits on (at least 5).
    **fedavg_kwargs
        ``FedAvg`` arguments (``fraction_train``, ``min_available_nodes``, ...).

    Attributes
    ----------
    history : list of SflamRound
        One record per training round.
    allocator : Allocator
        The per-round solver (its own ``history`` holds the solver's view of each round).
    bindings : DeviceBindings
        Which node is bound to which scenario device.
    """

    def __init__(
        self,
        scenario: Scenario,
        solver: str = "fast",
        *,
        solver_options: Mapping[str, Any] | None = None,
        query_timeout: float = 60.0,
        calibration: str = "scenario",
        fit_rounds: int = MIN_FIT_ROUNDS,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        if not isinstance(scenario, Scenario):
            raise ScenarioError(f"scenario: need a Scenario, got {type(scenario).__name__}")
        bad = [b for b in scenario.bits.levels if not sendable_bits(b)]
        if bad:
            raise ScenarioError(
                f"bits.levels: the quantizer cannot send {bad[0]} bits; allow only 1..16 or 32"
            )
        self.scenario = scenario
        self.solver = solver
        self.query_timeout = check_real(query_timeout, "query_timeout", lower=0.0, open_lower=True)
        self.allocator = Allocator(scenario, solver=solver, **dict(solver_options or {}))
        self.history: list[SflamRound] = []
        self.bindings = DeviceBindings()
        self._samples = dict(
            zip(scenario.devices.ids, scenario.devices.samples.tolist(), strict=True)
        )
        self._pending: dict[int, tuple[SflamRound, ArrayRecord]] = {}
        self._init_calibration(calibration, fit_rounds)

    # ------------------------------------------------------------------ online calibration
    def _init_calibration(self, calibration: str, fit_rounds: int) -> None:
        if calibration not in ("scenario", "online"):
            raise ScenarioError(
                f"calibration: invalid value {calibration!r}; choose one of scenario, online"
            )
        if not isinstance(fit_rounds, int) or fit_rounds < MIN_FIT_ROUNDS:
            raise ScenarioError(
                f"fit_rounds: invalid value {fit_rounds!r}; give a whole number >= {MIN_FIT_ROUNDS}"
            )
        self.fit_rounds = fit_rounds
        self.target_rounds: int | None = None
        self.estimator: ConvergenceEstimator | None = None
        #: The online fit is done (its constants are the allocator's).
        self.calibrated = False
        if calibration == "online":
            t = self.scenario.training
            self.estimator = ConvergenceEstimator(step=t.learning_rate, local_iters=t.local_iters)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, **kw: Any) -> Any:
        """``FedAvg.start``; the online calibration's ``eps`` targets ``num_rounds``."""
        self.target_rounds = num_rounds
        return super().start(grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds, **kw)

    def _calibration_plan(self, rec: SflamRound) -> None:
        """Record the constants in force; in a fit round, send every node WARMUP_BITS."""
        rec.convergence = dataclasses.asdict(self.allocator.scenario.convergence)
        if self.estimator is None:
            return
        fitting = not self.calibrated
        rec.calibration = "fit" if fitting else "online"
        if fitting and rec.allocation is not None:
            a = rec.allocation
            rec.allocation = Allocation(
                np.full(len(a), WARMUP_BITS), a.bandwidth_hz, a.power_w, a.ids
            )
            bd = breakdown(self.allocator.round_scenario(devices=rec.device_ids), rec.allocation)
            rec.latency_s, rec.energy_j = float(bd.latency_s.max()), float(bd.energy_j.sum())

    def _calibration_update(self, server_round: int, contents: list[RecordDict]) -> None:
        """Feed a fit round's reply metrics to the estimator; fit after the last fit round."""
        assert self.estimator is not None
        if self.calibrated:
            return
        rows = [c.metric_records.get("metrics", {}) for c in contents]
        rows = [m for m in rows if "calib-loss" in m and "calib-grad-sq" in m]
        if not rows:
            logger.warning("round %d: no calibration metrics in the replies", server_round)
            return
        w = np.array([float(m[self.weighted_by_key]) for m in rows])
        quant = [m for m in rows if "calib-quant-err" in m]
        self.estimator.add_round(
            float(np.average([m["calib-loss"] for m in rows], weights=w)),
            float(np.average([m["calib-grad-sq"] for m in rows], weights=w)),
            [float(m["calib-quant-err"]) for m in quant],
            [int(m["calib-quant-bits"]) for m in quant],
        )
        if self.estimator.rounds >= self.fit_rounds:
            target = self.target_rounds or self.fit_rounds + 1
            try:
                constants = self.estimator.fit(target_rounds=target)
            except UnsupportedFitError as exc:  # warm-up goes on; fit again after the next round
                logger.info("round %d: no fit yet: %s", server_round, exc)
                return
            self.calibrated = True
            self.allocator.recalibrate(constants)
            logger.info("round %d: online calibration fitted %s", server_round, constants)

    def summary(self) -> None:
        """Log the configuration."""
        super().summary()
        logger.info(
            "SflamStrategy: solver %r over %d devices", self.solver, self.scenario.n_devices
        )

    # ------------------------------------------------------------------ one round, server side
    def _solve(self, devices: list[Any], gains: dict[Any, float]) -> SolveResult:
        return self.allocator.step(gain_db=gains, devices=devices)

    def _query_channels(
        self, server_round: int, node_ids: list[int], grid: Grid
    ) -> tuple[dict[int, tuple[Any, float]], dict[int, str]]:
        messages = [
            Message(
                RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                dst_node_id=nid,
                message_type=QUERY_CHANNEL,
                group_id=str(server_round),
            )
            for nid in node_ids
        ]
        replies = grid.send_and_receive(messages, timeout=self.query_timeout)
        known = self.scenario.devices.ids
        answers: dict[int, tuple[Any, float]] = {}
        left_out: dict[int, str] = {}
        asked = set(node_ids)
        for reply in replies:
            nid = reply.metadata.src_node_id
            if nid not in asked or nid in answers or nid in left_out:
                continue
            if reply.has_error():
                left_out[nid] = f"channel query failed: {reply.error.reason}"
                continue
            try:
                dev, gain = read_channel(reply)
                # The Allocator refuses gains outside formulation §11's range; one node's bad
                # report leaves that node out instead of failing the round.
                gain_values({dev: gain})
                self.bindings.claim(nid, dev, known)
            except (DataError, ScenarioError) as exc:
                left_out[nid] = str(exc)
                continue
            answers[nid] = (dev, gain)
        for nid in node_ids:
            if nid not in answers and nid not in left_out:
                left_out[nid] = "no answer to the channel query"
        for nid, why in left_out.items():
            logger.warning("round %d: node %d left out: %s", server_round, nid, why)
        return answers, left_out

    def _plan(
        self,
        server_round: int,
        sampled: list[int],
        answers: dict[int, tuple[Any, float]],
        left_out: dict[int, str],
    ) -> SflamRound:
        # Node order as sampled, so the allocation lists the devices in a stable order.
        nodes = [nid for nid in sampled if nid in answers]
        devices = [answers[nid][0] for nid in nodes]
        gains = [answers[nid][1] for nid in nodes]
        rec = SflamRound(
            server_round,
            list(sampled),
            left_out,
            nodes,
            devices,
            gains,
            None,
            "skipped",
            "no node answered the channel query",
        )
        if not nodes:
            logger.warning(
                "round %d: no node answered the channel query; round skipped", server_round
            )
            return rec
        gain_map = dict(zip(devices, gains, strict=True))
        t0 = time.perf_counter()
        res = self._solve(devices, gain_map)
        rec.solve_time_s = time.perf_counter() - t0
        rec.status, rec.message, rec.objective = res.status, res.message, float(res.objective)
        round_scn = self.allocator.round_scenario(gain_map, devices)
        if res.success and res.allocation is not None:
            alloc = res.allocation
        else:
            alloc = equal_allocation(round_scn)
            rec.fallback = f"solver status {res.status!r}: {res.message}"
            logger.warning(
                "round %d: %s; falling back to the equal allocation", server_round, rec.fallback
            )
        bd = breakdown(round_scn, alloc)
        rec.allocation = alloc
        rec.latency_s = float(bd.latency_s.max())
        rec.energy_j = float(bd.energy_j.sum())
        return rec

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample, query the channels, solve the round and build one train message per node."""
        if self.fraction_train == 0.0:
            return []
        connected = list(grid.get_node_ids())
        self.bindings.release_absent(connected)
        num_nodes = int(len(connected) * self.fraction_train)
        sample_size = max(num_nodes, self.min_train_nodes)
        sampled, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        answers, left_out = self._query_channels(server_round, sampled, grid)
        rec = self._plan(server_round, sampled, answers, left_out)
        self._calibration_plan(rec)
        self.history.append(rec)
        if rec.allocation is None:
            return []
        self._pending[server_round] = (rec, arrays)
        a = rec.allocation
        messages = []
        for nid, b, w, p in zip(
            rec.node_ids, a.bits.tolist(), a.bandwidth_hz.tolist(), a.power_w.tolist(), strict=True
        ):
            # A new ConfigRecord and RecordDict per node: FedAvg shares one across all messages,
            # which would hand every node the last node's allocation.
            cfg = ConfigRecord(dict(config.items()))
            cfg["server-round"] = server_round
            cfg["bits"] = int(b)
            cfg["bandwidth-hz"] = float(w)
            cfg["power-w"] = float(p)
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            messages.append(
                Message(
                    content,
                    dst_node_id=nid,
                    message_type=MessageType.TRAIN,
                    group_id=str(server_round),
                )
            )
        logger.info(
            "round %d: %d of %d sampled nodes take part; bits %s",
            server_round,
            len(messages),
            len(sampled),
            a.bits.tolist(),
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Dequantize the updates and add their weighted mean to the global arrays."""
        pending = self._pending.pop(server_round, None)
        if pending is None:
            return None, None
        rec, base = pending
        keys = list(base.keys())
        glob = base.to_numpy_ndarrays()
        shapes = [g.shape for g in glob]
        dev_of = dict(zip(rec.node_ids, rec.device_ids, strict=True))
        bits_of = dict(zip(rec.node_ids, rec.allocation.bits.tolist(), strict=True))
        # Running sum of weight * update per array: memory of one model, whatever the node count.
        acc = [np.zeros(g.shape, dtype=np.float64) for g in glob]
        total = 0.0
        contents: list[RecordDict] = []
        nbytes = 0
        for reply in replies:
            nid = reply.metadata.src_node_id
            if nid not in dev_of or dev_of[nid] in rec.aggregated:
                logger.warning(
                    "round %d: reply of node %d ignored: not a node of this round",
                    server_round,
                    nid,
                )
                continue
            try:
                if reply.has_error():
                    raise DataError(f"train failed: {reply.error.reason}")
                update, weight, size = check_train_reply(
                    reply,
                    shapes=shapes,
                    bits=int(bits_of[nid]),
                    samples=int(self._samples[dev_of[nid]]),
                    weight_key=self.weighted_by_key,
                )
            except DataError as exc:
                rec.left_out[nid] = str(exc)
                logger.warning("round %d: node %d left out: %s", server_round, nid, exc)
                continue
            for a, u in zip(acc, update, strict=True):
                a += weight * u
            total += weight
            contents.append(reply.content)
            nbytes += size
            rec.aggregated.append(dev_of[nid])
            rec.num_examples += weight
        rec.uplink_bytes = nbytes
        if not contents:
            logger.warning("round %d: no usable update; global arrays unchanged", server_round)
            return None, None
        new = {}
        for key, g, a in zip(keys, glob, acc, strict=True):
            value = g.astype(np.float64) + a / total
            if not np.issubdtype(g.dtype, np.floating):  # e.g. batch-norm step counters
                value = np.rint(value)
            new[key] = Array(np.asarray(value, dtype=g.dtype))
        metrics_out = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        metrics_out["uplink-bytes"] = nbytes
        metrics_out["round-latency-s"] = rec.latency_s
        metrics_out["round-energy-j"] = rec.energy_j
        metrics_out["nodes"] = len(contents)
        if self.estimator is not None:
            self._calibration_update(server_round, contents)
        return ArrayRecord(new), metrics_out
