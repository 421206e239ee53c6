"""SflamStrategy, the client helpers and the example app, driven in-process by the test Grid."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import math
import os
import random
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
pytest.importorskip("flwr", reason="Flower is not installed: pip install 'sflam-opt[flower]'")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from sflam_opt import evaluate, solve  # noqa: E402
from sflam_opt.costs import downlink_time_s, payload_bits  # noqa: E402
from sflam_opt.errors import DataError, ScenarioError  # noqa: E402
from sflam_opt.integrations.flower import (  # noqa: E402
    SflamStrategy,
    calibration_metrics,
    channel_reply,
    pack_update,
    read_allocation,
    train_reply,
    unpack_update,
    update_scenario,
)
from sflam_opt.integrations.flower.client import read_update  # noqa: E402
from sflam_opt.integrations.flower.strategy import WARMUP_BITS  # noqa: E402
from sflam_opt.integrations.flower.testing import InProcessGrid  # noqa: E402

SHAPES = [(6, 40), (6,), (3, 6)]
D = sum(math.prod(s) for s in SHAPES)
N_DEV = 6
NOMINAL = np.linspace(-95.0, -110.0, N_DEV)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower"


def faded_gain(dev: int, rnd: int) -> float:
    """Block Rayleigh fading around the nominal gain, seeded by (device, round)."""
    rng = np.random.default_rng([dev, rnd])
    return float(NOMINAL[dev] + 10 * np.log10(rng.exponential()))


def client_update(dev: int, rnd: int) -> list[np.ndarray]:
    rng = np.random.default_rng([100 + dev, rnd])
    return [rng.normal(0.0, 0.1 * (1 + dev), s).astype(np.float32) for s in SHAPES]


def num_examples(dev: int) -> int:
    return 10 + 7 * dev


def make_app(
    bad_device: dict[int, object] | None = None,
    crash_train: set[int] | None = None,
    corrupt: set[int] | None = None,
):
    """A ClientApp whose device id is its partition id; updates are seeded per device and round."""
    app = ClientApp()

    @app.query("channel")
    def channel(msg: Message, context: Context) -> Message:
        dev = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        claimed = (bad_device or {}).get(dev, dev)
        return channel_reply(msg, claimed, faded_gain(dev, rnd))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        dev = int(context.node_config["partition-id"])
        if dev in (crash_train or set()):
            raise RuntimeError("out of memory")
        rnd = int(msg.content["config"]["server-round"])
        reply = train_reply(msg, client_update(dev, rnd), num_examples(dev), metrics={"loss": dev})
        if dev in (corrupt or set()):
            frame = reply.content["update"]["frame"]
            frame.data = frame.data[: len(frame.data) // 2]  # truncated on the way
        return reply

    return app


def initial_arrays() -> ArrayRecord:
    rng = np.random.default_rng(7)
    return ArrayRecord([rng.normal(size=s).astype(np.float32) for s in SHAPES])


def scenario(**sections):
    return update_scenario(D, gain_db=NOMINAL, device_cycles=1e6, **sections)


def run(strategy, app=None, rounds=2, grid=None, **start):
    random.seed(0)  # FedAvg samples with the global random module
    grid = grid or InProcessGrid(app or make_app(), N_DEV, seed=3)
    result = strategy.start(grid=grid, initial_arrays=initial_arrays(), num_rounds=rounds, **start)
    return grid, result


def strategy_for(scn=None, **kw):
    kw = {"fraction_evaluate": 0.0, "min_available_nodes": N_DEV, "min_train_nodes": 2, **kw}
    return SflamStrategy(scn if scn is not None else scenario(), **kw)


def deliveries(grid, message_type, rnd):
    return [
        d
        for d in grid.log
        if d.message.metadata.message_type == message_type
        and int(d.message.content["config"]["server-round"]) == rnd
    ]


def dev_of(grid, node_id):
    return grid.context(node_id).node_config["partition-id"]


# ----------------------------------------------------------------------------- the round's solve
def test_per_node_configs_equal_a_fresh_solve_of_the_round():
    scn = scenario()
    strat = strategy_for(scn, fraction_train=0.5, min_train_nodes=3)
    grid, _ = run(strat, rounds=3, train_config=ConfigRecord({"lr": 0.1}))
    assert len(strat.history) == 3
    seen = set()
    for rec in strat.history:
        rnd = rec.server_round
        assert len(rec.device_ids) == 3 and not rec.left_out and rec.fallback is None
        seen.update(rec.device_ids)
        gains = {dev_of(grid, n): faded_gain(dev_of(grid, n), rnd) for n in rec.node_ids}
        assert rec.device_ids == [dev_of(grid, n) for n in rec.node_ids]
        round_scn = scn.select(rec.device_ids).with_gains(gains)
        fresh = solve(round_scn, "fast")
        # What each node received, read back from its own copy of the message.
        got = {}
        for d in deliveries(grid, MessageType.TRAIN, rnd):
            alloc = read_allocation(d.message)
            assert d.message.content["config"]["lr"] == 0.1
            got[dev_of(grid, d.node_id)] = alloc
        assert sorted(got) == sorted(rec.device_ids)
        bits = np.array([got[k]["bits"] for k in rec.device_ids])
        bw = np.array([got[k]["bandwidth_hz"] for k in rec.device_ids])
        pw = np.array([got[k]["power_w"] for k in rec.device_ids])
        if rnd == 1:  # no warm start yet: the very same solve
            np.testing.assert_array_equal(bits, fresh.allocation.bits)
            np.testing.assert_allclose(bw, fresh.allocation.bandwidth_hz, rtol=1e-9)
            np.testing.assert_allclose(pw, fresh.allocation.power_w, rtol=1e-9)
        sent = fresh.allocation.__class__(bits, bw, pw, ids=tuple(rec.device_ids))
        ev = evaluate(round_scn, sent)
        assert ev.violations == []
        assert ev.objective == pytest.approx(fresh.objective, rel=1e-3)
        assert rec.latency_s == pytest.approx(ev.round_latency_s, rel=1e-12)
        assert rec.energy_j == pytest.approx(ev.round_energy_j, rel=1e-12)
    assert len(seen) > 3  # sampling really changes the participants


def test_each_node_gets_its_own_config_not_a_shared_record():
    strat = strategy_for()
    grid, _ = run(strat, rounds=1)
    rec = strat.history[0]
    a = rec.allocation
    assert np.unique(a.bandwidth_hz).size == a.bandwidth_hz.size  # gains differ, so must these
    for d in deliveries(grid, MessageType.TRAIN, 1):
        k = rec.node_ids.index(d.node_id)
        got = read_allocation(d.message)
        assert got == {
            "bits": int(a.bits[k]),
            "bandwidth_hz": float(a.bandwidth_hz[k]),
            "power_w": float(a.power_w[k]),
        }
    # The messages themselves: one RecordDict and ConfigRecord per node, caller's config untouched.
    strat2 = strategy_for()
    config = ConfigRecord({"lr": 0.5})
    grid2 = InProcessGrid(make_app(), N_DEV, seed=3)
    random.seed(0)
    msgs = list(strat2.configure_train(1, initial_arrays(), config, grid2))
    assert len({id(m.content) for m in msgs}) == len(msgs) == N_DEV
    assert len({id(m.content["config"]) for m in msgs}) == len(msgs)
    assert dict(config) == {"lr": 0.5}


# ----------------------------------------------------------------------------- aggregation
def test_aggregation_is_fedavg_of_the_updates_within_quantization_error():
    strat = strategy_for()
    grid, result = run(strat, rounds=1)
    rec = strat.history[0]
    assert sorted(rec.aggregated) == list(range(N_DEV))
    w = np.array([num_examples(d) for d in range(N_DEV)], dtype=float)
    w /= w.sum()
    exact = [
        init.astype(np.float64) + sum(w[d] * client_update(d, 1)[k] for d in range(N_DEV))
        for k, init in enumerate(initial_arrays().to_numpy_ndarrays())
    ]
    # Per element, a stochastic b-bit value is within one step of the true one.
    bits = {rec.device_ids[i]: int(b) for i, b in enumerate(rec.allocation.bits)}
    got = result.arrays.to_numpy_ndarrays()
    for k in range(len(SHAPES)):
        step = sum(w[d] * np.ptp(client_update(d, 1)[k]) / (2 ** bits[d] - 1) for d in range(N_DEV))
        err = np.abs(got[k] - exact[k])
        assert err.max() <= step * (1 + 1e-5) + 1e-6
        assert got[k].dtype == np.float32
    # And exactly the weighted mean of what was decoded from the frames.
    decoded = {}
    for d in deliveries(grid, MessageType.TRAIN, 1):
        frame, _ = read_update(d.reply)
        decoded[dev_of(grid, d.node_id)] = unpack_update(frame)
    for k, init in enumerate(initial_arrays().to_numpy_ndarrays()):
        mean = sum(w[d] * decoded[d][k].astype(np.float64) for d in range(N_DEV))
        np.testing.assert_allclose(got[k], init + mean, rtol=1e-6, atol=1e-7)
        assert not np.allclose(got[k], exact[k], atol=1e-9)  # the updates really were quantized


def test_uplink_bytes_are_the_sum_of_the_packed_frames():
    strat = strategy_for()
    grid, result = run(strat, rounds=2)
    for rnd in (1, 2):
        rec = strat.history[rnd - 1]
        frames = []
        for d in deliveries(grid, MessageType.TRAIN, rnd):
            frame, metrics = read_update(d.reply)
            assert metrics["uplink-bytes"] == len(frame)
            bits = read_allocation(d.message)["bits"]
            # Really packed at b bits: ceil(n b / 8) code bytes + 8 range bytes per array, plus a
            # few bytes of names and shapes.
            payload = sum(math.ceil(math.prod(s) * bits / 8) + 8 for s in SHAPES)
            assert payload <= len(frame) <= payload + 20 * len(SHAPES) + 5
            frames.append(len(frame))
        metrics = result.train_metrics_clientapp[rnd]
        assert metrics["uplink-bytes"] == sum(frames) == rec.uplink_bytes
        assert metrics["round-latency-s"] == rec.latency_s
        assert metrics["round-energy-j"] == rec.energy_j
        assert metrics["nodes"] == N_DEV
        w = np.array([num_examples(d) for d in range(N_DEV)], dtype=float)
        assert metrics["loss"] == pytest.approx(np.dot(w, np.arange(N_DEV)) / w.sum())


def test_integer_arrays_such_as_step_counters_stay_integers():
    app = ClientApp()

    @app.query("channel")
    def channel(msg: Message, context: Context) -> Message:
        return channel_reply(msg, int(context.node_config["partition-id"]), -100.0)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return train_reply(msg, [np.full(4, 0.5, np.float32), np.array([5], np.int64)], 10)

    scn = update_scenario(5, gain_db=[-100.0, -100.0])
    strat = SflamStrategy(scn, fraction_evaluate=0.0, min_available_nodes=2)
    grid = InProcessGrid(app, 2)
    init = ArrayRecord([np.zeros(4, np.float32), np.array([7], np.int64)])
    result = strat.start(grid=grid, initial_arrays=init, num_rounds=2)
    weights, steps = result.arrays.to_numpy_ndarrays()
    assert steps.dtype == np.int64 and steps.tolist() == [17]
    np.testing.assert_allclose(weights, 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- missing nodes
def test_a_node_that_does_not_answer_the_query_is_left_out(caplog):
    app = make_app(bad_device={4: 99}, crash_train={5}, corrupt={3})
    grid = InProcessGrid(app, N_DEV, seed=3)
    silent = grid.node_ids[1]
    grid.mute(silent, "query.channel")
    strat = strategy_for()
    scn = strat.scenario
    with caplog.at_level(logging.WARNING):
        run(strat, grid=grid, rounds=1)
    rec = strat.history[0]
    ids = grid.node_ids
    # Left out at the channel query (1, 4) and, after training, at the aggregation (3, 5).
    assert set(rec.left_out) == {silent, ids[4], ids[3], ids[5]}
    assert "no answer" in rec.left_out[silent]
    assert "99" in rec.left_out[ids[4]]
    assert sorted(rec.device_ids) == [0, 2, 3, 5]
    assert rec.allocation.bandwidth_hz.sum() == pytest.approx(scn.system.bandwidth_hz, rel=1e-6)
    trained = {d.node_id for d in grid.log if d.message.metadata.message_type == MessageType.TRAIN}
    assert silent not in trained and ids[4] not in trained
    assert sorted(rec.aggregated) == [0, 2]  # 5 crashed in training, 3 sent a truncated frame
    assert "out of memory" in rec.left_out[ids[5]]
    assert "does not decode" in rec.left_out[ids[3]]
    assert f"node {silent} left out" in caplog.text
    assert f"node {ids[3]} left out: update frame does not decode" in caplog.text


def test_an_infeasible_round_falls_back_to_the_equal_allocation(caplog):
    scn = scenario(constraints={"round_deadline_s": 1e-9})
    strat = strategy_for(scn)
    with caplog.at_level(logging.WARNING):
        grid, result = run(strat, rounds=1)
    rec = strat.history[0]
    assert rec.status == "infeasible"
    assert rec.fallback is not None and "infeasible" in rec.fallback
    a = rec.allocation
    np.testing.assert_array_equal(a.bits, np.full(N_DEV, scn.bits.max))
    np.testing.assert_allclose(a.bandwidth_hz, scn.system.bandwidth_hz / N_DEV)
    np.testing.assert_allclose(a.power_w, scn.devices.max_power_w)
    for d in deliveries(grid, MessageType.TRAIN, 1):
        assert read_allocation(d.message)["bits"] == scn.bits.max
    assert "falling back to the equal allocation" in caplog.text
    assert result.train_metrics_clientapp[1]["nodes"] == N_DEV  # the round still trained


# ----------------------------------------------------------------------------- pieces
def test_pack_update_round_trips_within_one_step_and_checks_input():
    rng = np.random.default_rng(0)
    upd = [rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=3)]
    frame, qs = pack_update(upd, 4, seed=1)
    back = unpack_update(frame)
    for u, b, q in zip(upd, back, qs, strict=True):
        assert b.shape == u.shape
        assert np.abs(b - u).max() <= q.delta * (1 + 1e-5)
    assert pack_update(upd, 4, seed=1)[0] == frame  # same seed, same codes
    with pytest.raises(DataError, match="update\\[0\\]"):
        pack_update([np.array([1.0, np.nan])], 4)
    with pytest.raises(DataError):
        unpack_update(b"S\x01")


def test_client_helpers_reject_bad_input():
    grid = InProcessGrid(make_app(), 1)  # sets the task identity Message() needs
    msg = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}), grid.node_ids[0], "train"
    )
    with pytest.raises(DataError, match="bits"):
        read_allocation(msg)
    with pytest.raises(DataError, match="gain_db"):
        channel_reply(msg, 0, float("nan"))
    with pytest.raises(DataError, match="device_id"):
        channel_reply(msg, 1.5, -90.0)
    cfg = ConfigRecord({"server-round": 1, "bits": 4, "bandwidth-hz": 1e6, "power-w": 0.1})
    msg = Message(RecordDict({"config": cfg}), grid.node_ids[0], "train")
    with pytest.raises(DataError, match="reserved"):
        train_reply(msg, [np.zeros(3, np.float32)], 5, metrics={"uplink-bytes": 1.0})
    with pytest.raises(DataError, match="num_examples"):
        train_reply(msg, [np.zeros(3, np.float32)], 0)


def test_update_scenario_is_the_fl_payload():
    scn = update_scenario(1000, gain_db=[-90.0, -100.0], ids=["a", "b"])
    np.testing.assert_array_equal(
        payload_bits(scn, np.array([4, 8])), [1000 * 4 + 64, 1000 * 8 + 64]
    )
    assert downlink_time_s(scn) == pytest.approx(32 * 1000 / scn.system.downlink_bps)
    assert scn.devices.ids == ("a", "b")
    with pytest.raises(ScenarioError, match="activation_elems"):
        update_scenario(10, gain_db=[-90.0], model={"activation_elems": 5})
    with pytest.raises(ScenarioError, match="17"):
        SflamStrategy(update_scenario(10, gain_db=[-90.0], bits=[8, 17]))


def test_the_grid_raises_instead_of_waiting_forever_for_nodes():
    strat = strategy_for(min_available_nodes=N_DEV + 1)
    with pytest.raises(RuntimeError, match="waiting for nodes"):
        run(strat, rounds=1)


# ----------------------------------------------------------------------------- the example app
def _example(module: str):
    """``sflam_flower.<module>`` of the example app, imported from its directory by location."""
    if "sflam_flower" not in sys.modules:
        init = EXAMPLE / "sflam_flower" / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            "sflam_flower", init, submodule_search_locations=[str(init.parent)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["sflam_flower"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"sflam_flower.{module}")


def _example_modules():
    return _example("server_app"), _example("client_app")


def _example_config(**overrides):
    cfg = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return {**cfg, "num-server-rounds": 3, **overrides}


def _run_example(client_module: str, cfg: dict, nodes: int):
    """The example's ServerApp over ``nodes`` in-process nodes running ``client_module``'s app."""
    server = _example("server_app")
    grid = InProcessGrid(_example(client_module).app, nodes, run_config=cfg, seed=0)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=cfg)
    random.seed(0)
    result, strategy = server.run(grid, context)
    return grid, result, strategy


@pytest.mark.slow
def test_the_example_app_learns_in_process():
    # The scenario's constants from round 1 (the default, online, sends 4 bits in its fit rounds).
    cfg = _example_config(calibration="scenario")
    _, result, strategy = _run_example("client_app", cfg, int(cfg["num-devices"]))
    acc = [result.evaluate_metrics_serverapp[r]["accuracy"] for r in range(4)]
    assert acc[-1] > acc[0] + 0.3
    assert all(rec.fallback is None for rec in strategy.history)
    # Stronger channels get more bits: at least one round gives its devices different widths.
    assert any(np.unique(rec.allocation.bits).size > 1 for rec in strategy.history)


@pytest.mark.ray
@pytest.mark.slow
def test_the_example_app_runs_in_the_simulation_engine(monkeypatch):
    pytest.importorskip(
        "ray", reason="the simulation engine needs ray: pip install 'flwr[simulation]'"
    )
    from flwr.simulation import run_simulation

    server, client = _example_modules()
    # Ray's workers import the ClientApp by module name.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    )
    server.LAST_RUN["history"] = []
    run_simulation(
        server_app=server.app,
        client_app=client.app,
        num_supernodes=4,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    rows = server.LAST_RUN["history"]
    rounds = _example("task").DEFAULTS["num-server-rounds"]
    assert len(rows) == rounds, "the ServerApp did not complete its rounds"
    assert all(r["uplink_bytes"] > 0 for r in rows)
    assert rows[-1]["accuracy"] > 0.5


def test_the_example_defaults_match_its_pyproject():
    task = _example("task")
    cfg = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert task.DEFAULTS == cfg


# ----------------------------------------------------------------------------- online calibration
def calibrating_app():
    """Clients that report calibration metrics of a run whose loss and gradients fall per round."""
    app = ClientApp()

    @app.query("channel")
    def channel(msg: Message, context: Context) -> Message:
        dev = int(context.node_config["partition-id"])
        return channel_reply(msg, dev, faded_gain(dev, int(msg.content["config"]["server-round"])))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        dev = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        update = client_update(dev, rnd)
        extra = calibration_metrics(
            msg,
            update,
            loss=2.3 * math.exp(-rnd / 3) + 0.01 * dev,
            grad_sq_norm=3.0 + 30 * math.exp(-rnd / 3) + 0.1 * dev,
            step=0.5,
        )
        return train_reply(msg, update, num_examples(dev), metrics=extra)

    return app


def fitted_from_replies(grid, scn, fit_rounds: int, target_rounds: int) -> dict[str, float]:
    """The constants a ConvergenceEstimator fits on the fit rounds' train replies in the log."""
    from sflam_opt import ConvergenceEstimator

    est = ConvergenceEstimator(
        step=scn.training.learning_rate, local_iters=scn.training.local_iters
    )
    for rnd in range(1, fit_rounds + 1):
        replies = [d.reply for d in deliveries(grid, MessageType.TRAIN, rnd)]
        metrics = [r.content["metrics"] for r in replies]
        w = [m["num-examples"] for m in metrics]
        est.add_round(
            float(np.average([m["calib-loss"] for m in metrics], weights=w)),
            float(np.average([m["calib-grad-sq"] for m in metrics], weights=w)),
            [m["calib-quant-err"] for m in metrics],
            [int(m["calib-quant-bits"]) for m in metrics],
        )
    return est.fit(target_rounds=target_rounds).as_convergence()


def test_online_calibration_fits_on_the_fit_rounds_and_resolves_with_the_constants():
    scn = scenario()
    strat = strategy_for(scn, fraction_train=0.5, min_train_nodes=3, calibration="online")
    grid, _ = run(strat, app=calibrating_app(), rounds=7)
    assert [r.calibration for r in strat.history] == ["fit"] * 5 + ["online"] * 2
    start = dataclasses.asdict(scn.convergence)
    for rec in strat.history[:5]:
        assert rec.convergence == start and rec.allocation.bits.tolist() == [WARMUP_BITS] * 3
    # The constants in force after round 5: the estimator fed rounds 1..5's reply metrics.
    fitted = fitted_from_replies(grid, scn, fit_rounds=5, target_rounds=7)
    for rec in strat.history[5:]:
        assert rec.convergence == pytest.approx(fitted, rel=1e-12)
        round_scn = strat.allocator.round_scenario(
            dict(zip(rec.device_ids, rec.gain_db, strict=True)), rec.device_ids
        )
        assert round_scn.convergence.q == pytest.approx(fitted["q"])
    assert fitted["q"] > 0 and fitted["a"] > 0
    with pytest.raises(ScenarioError, match="^calibration: invalid value 'x'"):
        strategy_for(scn, calibration="x")


@pytest.mark.slow
def test_the_example_clients_calibrate_online_then_solve_with_the_fitted_constants():
    """Both client styles: 4-bit fit rounds until the replies support a fit, then rounds
    solved with the constants fitted on those rounds' replies; the two styles send the same
    frames and calibration metrics."""
    from sflam_opt import UnsupportedFitError
    from sflam_opt.integrations.flower import CALIBRATION_KEYS

    cfg = _example_config(**{"num-server-rounds": 11, "fit-rounds": 5, "num-devices": 4})
    sent = {}
    for module in ("client_app", "client_app_mod"):
        grid, result, strategy = _run_example(module, cfg, 4)
        phases = [r.calibration for r in strategy.history]
        fit = phases.count("fit")
        # This MLP's gradient norm rises over its first rounds, so rounds 1..5 cannot support a
        # fit: the warm-up goes on and the strategy fits after the first round k that can, on
        # rounds 1..k only (docs/formulation.md §4.3).
        assert 5 < fit < 11 and phases == ["fit"] * fit + ["online"] * (11 - fit)
        assert all(set(r.allocation.bits.tolist()) == {WARMUP_BITS} for r in strategy.history[:fit])
        with pytest.raises(UnsupportedFitError):
            fitted_from_replies(grid, strategy.scenario, fit_rounds=fit - 1, target_rounds=11)
        fitted = fitted_from_replies(grid, strategy.scenario, fit_rounds=fit, target_rounds=11)
        for rec in strategy.history[fit:]:
            assert rec.convergence == pytest.approx(fitted, rel=1e-12)
            assert rec.aggregated == rec.device_ids
        assert strategy.allocator.scenario.convergence.epsilon == pytest.approx(fitted["epsilon"])
        replies = {
            (rnd, str(d.reply.metadata.src_node_id)): d.reply.content
            for rnd in range(1, 12)
            for d in deliveries(grid, MessageType.TRAIN, rnd)
        }
        for content in replies.values():
            assert set(CALIBRATION_KEYS) <= set(content["metrics"])
        sent[module] = {
            key: (
                content["update"]["frame"].data,
                {k: content["metrics"][k] for k in CALIBRATION_KEYS},
            )
            for key, content in replies.items()
        }
        rows = _example("server_app").LAST_RUN["history"]
        assert [r["calibration"] for r in rows] == phases
        assert result.evaluate_metrics_serverapp[11]["accuracy"] > 0.7
    assert sent["client_app"] == sent["client_app_mod"]


def test_the_example_names_its_calibration_phases_and_short_runs():
    server = _example("server_app")
    cfg = _example_config(calibration="offline")
    assert server.calibration_kwargs(cfg) == {"calibration": "scenario"}
    cfg = _example_config(**{"num-server-rounds": 2, "fit-rounds": 5})
    assert server.calibration_kwargs(cfg) == {"calibration": "online", "fit_rounds": 5}
    for bad in (4, 5.5, "5"):
        with pytest.raises(ValueError, match=f"^run config fit-rounds={bad!r}: .* >= 5"):
            server.calibration_kwargs({**cfg, "fit-rounds": bad})
    assert server.calibration_kwargs({**cfg, "calibration": "scenario", "fit-rounds": 0}) == {
        "calibration": "scenario"
    }
    with pytest.raises(ValueError, match="^run config calibration='auto': choose \"online\""):
        server.calibration_kwargs({**cfg, "calibration": "auto"})
    fit = {"calibration": "fit", "convergence": {"epsilon": 1.0, "q": 2.0}, "fallback": None}
    rows = [
        {"round": k, "accuracy": 0.5, "uplink_bytes": 10, "bits": {0: 8}, **fit} for k in (1, 2)
    ]
    lines = server.table(rows, 5)
    assert lines[1].split()[3:6] == ["fit", "-", "-"]
    assert lines[-1].startswith("note: all 2 rounds are fit rounds") and "round 6" in lines[-1]
    online = {**rows[1], "calibration": "online", "fallback": "solver status 'infeasible'"}
    lines = server.table([rows[0], online], 5)
    assert lines[2].split()[3:6] == ["online*", "1", "2"]
    assert lines[-1].startswith("note: * no allocation meets these constants")
