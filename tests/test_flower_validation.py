"""SflamStrategy trusts no node: each rule of integrations/flower/validation.py against a
misbehaving client, device-id binding, fewer devices than nodes, and the client mod."""

from __future__ import annotations

import dataclasses
import math
import os
import random

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
pytest.importorskip("flwr", reason="Flower is not installed: pip install 'sflam-opt[flower]'")

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402

from sflam_opt import codec  # noqa: E402
from sflam_opt.errors import DataError  # noqa: E402
from sflam_opt.integrations.flower import (  # noqa: E402
    SflamStrategy,
    channel_query,
    channel_reply,
    pack_update,
    read_allocation,
    sflam_mod,
    train_reply,
    update_scenario,
)
from sflam_opt.integrations.flower.client import FRAME_STYPE  # noqa: E402
from sflam_opt.integrations.flower.testing import InProcessGrid  # noqa: E402
from sflam_opt.integrations.flower.validation import (  # noqa: E402
    DeviceBindings,
    check_num_examples,
    expected_frame_nbytes,
)

SHAPES = [(5, 12), (5,), (2, 5)]
D = sum(math.prod(s) for s in SHAPES)
N = 4
SAMPLES = 40
BAD = 2  # the misbehaving node's partition (and device) id


def initial():
    rng = np.random.default_rng(1)
    return ArrayRecord([rng.normal(size=s).astype(np.float32) for s in SHAPES])


def update_of(dev, rnd):
    rng = np.random.default_rng([dev, rnd])
    return [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]


def scenario(n=N):
    return update_scenario(D, gain_db=np.linspace(-95, -105, n), samples=SAMPLES, device_cycles=1e6)


def app(tamper=None, device=lambda dev, rnd: dev, gain=lambda dev: -100.0 + dev):
    """Honest nodes; node BAD's train reply goes through ``tamper(msg, reply, bits)``."""
    a = ClientApp()

    @a.query("channel")
    def channel(msg, context):
        dev = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        return channel_reply(msg, device(dev, rnd), gain(dev))

    @a.train()
    def train(msg, context):
        dev = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        reply = train_reply(msg, update_of(dev, rnd), 10 + dev)
        if dev == BAD and tamper is not None:
            reply = tamper(msg, reply, read_allocation(msg)["bits"])
        return reply

    return a


def run(client_app, n_nodes=N, scn=None, rounds=1, grid=None):
    random.seed(0)
    strat = SflamStrategy(
        scn if scn is not None else scenario(),
        fraction_evaluate=0.0,
        min_available_nodes=1,
        min_train_nodes=1,
    )
    grid = grid or InProcessGrid(client_app, n_nodes, seed=5)
    result = strat.start(grid=grid, initial_arrays=initial(), num_rounds=rounds)
    return strat, grid, result


def with_frame(reply, frame, **metrics):
    """The reply with its frame (and metrics) replaced, as a node could send it."""
    m = dict(reply.content["metrics"])
    m.update(metrics)
    arr = Array(dtype="uint8", shape=(len(frame),), stype=FRAME_STYPE, data=frame)
    content = RecordDict({"update": ArrayRecord({"frame": arr}), "metrics": MetricRecord(m)})
    return Message(content, reply_to=reply_to_of(reply))


_REQUESTS: dict[str, Message] = {}


def reply_to_of(reply):
    return _REQUESTS[reply.metadata.reply_to_message_id]


def tampering(fn):
    def tamper(msg, reply, bits):
        _REQUESTS[msg.metadata.message_id] = msg
        return fn(msg, reply, bits)

    return tamper


def left_out_bad(tamper):
    strat, grid, result = run(app(tampering(tamper)))
    rec = strat.history[0]
    bad = grid.node_ids[BAD]
    assert BAD not in rec.aggregated and sorted(rec.aggregated) == [d for d in range(N) if d != BAD]
    assert rec.num_examples == sum(10 + d for d in range(N) if d != BAD)
    assert result.train_metrics_clientapp[1]["nodes"] == N - 1
    return rec.left_out[bad]


# ----------------------------------------------------------------------------- one test per rule
def test_a_frame_that_does_not_decode_is_left_out():
    why = left_out_bad(lambda m, r, b: with_frame(r, b"S\x03\x00\x00\x00garbage"))
    assert why.startswith("update frame does not decode")


def test_a_tensor_packed_at_more_bits_than_allocated_is_left_out():
    def more_bits(msg, reply, bits):
        frame, _ = pack_update(update_of(BAD, 1), 16 if bits != 16 else 8, seed=0)
        return with_frame(reply, frame, **{"uplink-bytes": len(frame)})

    assert "packed at 16 bits; the node was allocated" in left_out_bad(more_bits)


def test_shapes_that_differ_from_the_arrays_sent_are_left_out():
    def reshaped(msg, reply, bits):
        upd = update_of(BAD, 1)
        frame, _ = pack_update([upd[0].T, upd[1], upd[2]], bits, seed=0)
        return with_frame(reply, frame, **{"uplink-bytes": len(frame)})

    assert "differ from the arrays sent" in left_out_bad(reshaped)


def test_non_finite_values_are_left_out():
    def infinite(msg, reply, bits):
        qs = [codec.quantize(u, bits, np.random.default_rng(0)) for u in update_of(BAD, 1)]
        qs[1] = dataclasses.replace(qs[1], hi=float("inf"))
        frame = codec.encode({str(i): q for i, q in enumerate(qs)}).data
        return with_frame(reply, frame, **{"uplink-bytes": len(frame)})

    assert "NaN or infinite" in left_out_bad(infinite)


def test_a_size_other_than_the_allocation_implies_is_left_out():
    # The frame is right but the node claims fewer uplink bytes than it sent.
    why = left_out_bad(
        lambda m, r, b: with_frame(r, r.content["update"]["frame"].data, **{"uplink-bytes": 10})
    )
    assert why.startswith("uplink-bytes=10 but the frame has")


@pytest.mark.parametrize(
    ("claim", "reason"),
    [(777, "exceeds the device's 40 samples"), (2.5, "positive whole number"), (0, "positive")],
)
def test_num_examples_must_be_a_positive_whole_number_within_the_devices_samples(claim, reason):
    why = left_out_bad(
        lambda m, r, b: with_frame(r, r.content["update"]["frame"].data, **{"num-examples": claim})
    )
    assert reason in why


def test_the_rules_as_free_functions():
    assert check_num_examples(40, 40) == 40
    with pytest.raises(DataError, match="exceeds"):
        check_num_examples(41, 40)
    frame, _ = pack_update(update_of(0, 1), 3)
    assert len(frame) == expected_frame_nbytes(SHAPES, 3)
    frame32, _ = pack_update(update_of(0, 1), 32)
    assert len(frame32) == expected_frame_nbytes(SHAPES, 32)


# ----------------------------------------------------------------------------- device ids
def test_first_claim_binds_and_conflicting_later_claims_are_left_out():
    # Round 1: every node claims its own device. Round 2: node 1 switches to device 0's id
    # (bound to node 0) and node 3 to device 5 (not in the scenario); node 2 to device 2 again.
    def device(dev, rnd):
        return {1: 0, 3: 5}.get(dev, dev) if rnd == 2 else dev

    scn = update_scenario(D, gain_db=np.linspace(-95, -105, 6), samples=SAMPLES, device_cycles=1e6)
    strat, grid, _ = run(app(device=device), scn=scn, rounds=2)
    ids = grid.node_ids
    assert strat.history[0].device_ids == [0, 1, 2, 3] or sorted(strat.history[0].device_ids) == [
        0,
        1,
        2,
        3,
    ]
    rec = strat.history[1]
    assert rec.left_out[ids[1]] == "node is bound to device 1; it now claims 0"
    assert ids[3] in rec.left_out
    assert sorted(rec.device_ids) == [0, 2]
    assert strat.bindings.device_of == {ids[0]: 0, ids[1]: 1, ids[2]: 2, ids[3]: 3}


def test_a_second_node_claiming_a_bound_device_is_left_out():
    # Nodes 0 and 3 both claim device 0; whichever answers first binds it, for every round.
    strat, grid, _ = run(app(device=lambda dev, rnd: 0 if dev == 3 else dev), rounds=3)
    holder = next(n for n, d in strat.bindings.device_of.items() if d == 0)
    other = ({grid.node_ids[0], grid.node_ids[3]} - {holder}).pop()
    for rec in strat.history:
        assert rec.left_out == {other: f"device id 0 is bound to node {holder}"}
        assert holder in rec.node_ids


def test_a_restarted_node_binds_again_once_its_old_id_is_gone():
    """A SuperNode restarted without a persistent key comes back under a new node id."""

    class RestartGrid(InProcessGrid):
        gone: set[int] = set()

        def get_node_ids(self):
            return [n for n in super().get_node_ids() if n not in self.gone]

    # Node 3 plays node 0 restarted under a new id: silent at first, then claiming device 0.
    grid = RestartGrid(app(device=lambda dev, rnd: 0 if dev == 3 else dev), N, seed=5)
    old, new = grid.node_ids[0], grid.node_ids[3]
    grid.mute(new)
    strat, grid, _ = run(None, grid=grid, rounds=1)
    assert strat.bindings.device_of[old] == 0
    grid.unmute(new)  # back, while the SuperLink still lists the old id
    random.seed(0)
    strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    assert strat.history[-1].left_out[new] == f"device id 0 is bound to node {old}"
    grid.gone.add(old)  # the SuperLink has marked the old id offline
    random.seed(0)
    strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    rec = strat.history[-1]
    assert new not in rec.left_out and 0 in rec.device_ids and old not in rec.sampled
    assert strat.bindings.device_of[new] == 0 and old not in strat.bindings.device_of


def test_fewer_devices_than_answering_nodes_leaves_the_extra_nodes_out():
    strat, grid, result = run(app(), n_nodes=6, scn=scenario(3), rounds=2)
    for rec in strat.history:
        assert sorted(rec.device_ids) == [0, 1, 2]
        assert {
            grid.node_ids[k]: f"device id {k} is not in the scenario" for k in (3, 4, 5)
        }.items() <= rec.left_out.items()
        assert sorted(rec.aggregated) == [0, 1, 2]
    assert result.train_metrics_clientapp[2]["nodes"] == 3


def test_bindings_release_only_absent_nodes():
    b = DeviceBindings()
    b.claim(11, "a", ["a", "b"])
    b.claim(12, "b", ["a", "b"])
    assert b.release_absent([12]) == [11]
    b.claim(13, "a", ["a", "b"])
    assert b.device_of == {12: "b", 13: "a"}


# ----------------------------------------------------------------------------- the client mod
def plain_app(channel=channel_query):
    """An ordinary FedAvg ClientApp (trained arrays and num-examples, no SFLAM code) + the mod."""
    a = ClientApp(mods=[sflam_mod])
    a.query("channel")(channel)

    @a.train()
    def train(msg, context):
        dev = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        trained = [x + u for x, u in zip(arrays, update_of(dev, rnd), strict=True)]
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(trained),
                    "metrics": MetricRecord({"num-examples": 10 + dev, "train-loss": 0.5}),
                }
            ),
            reply_to=msg,
        )

    return a


def test_the_mod_packs_a_plain_clientapp_update_at_its_allocation():
    configs = [{"gain-db": -100.0 + k} for k in range(N)]  # as app() reports
    grid = InProcessGrid(plain_app(), N, node_configs=configs, seed=5)
    strat, grid, result = run(None, grid=grid, rounds=2)
    # The same rounds with clients that call train_reply themselves.
    strat2, _, result2 = run(app(), rounds=2)
    for rec, rec2 in zip(strat.history, strat2.history, strict=True):
        assert sorted(rec.aggregated) == list(range(N)) and not rec.left_out
        assert rec.uplink_bytes == sum(
            expected_frame_nbytes(SHAPES, b) for b in rec.allocation.bits
        )
        assert (
            rec.device_ids == rec2.device_ids
            and rec.allocation.bits.tolist() == rec2.allocation.bits.tolist()
        )
    for d in grid.log:
        if d.message.metadata.message_type == MessageType.TRAIN:
            assert d.reply.content["update"]["frame"].stype == FRAME_STYPE
    assert result.train_metrics_clientapp[2]["train-loss"] == pytest.approx(0.5)
    # Both aggregate the same updates: equal up to the quantization of two differently seeded
    # roundings (a few steps of the coarsest width).
    for a, b in zip(
        result.arrays.to_numpy_ndarrays(), result2.arrays.to_numpy_ndarrays(), strict=True
    ):
        assert np.abs(a - b).max() < 0.2


def test_channel_query_reads_device_and_gain_from_the_node_config():
    configs = [{"gain-db": -100.0 - k} for k in range(N)]
    strat, _, _ = run(None, grid=InProcessGrid(plain_app(), N, node_configs=configs, seed=5))
    rec = strat.history[0]
    assert dict(zip(rec.device_ids, rec.gain_db, strict=True)) == {k: -100.0 - k for k in range(N)}
    strat, _, _ = run(None, grid=InProcessGrid(plain_app(), N, seed=5))
    assert len(strat.history[0].left_out) == N
    assert all("gain-db" in why for why in strat.history[0].left_out.values())


def test_a_node_reporting_a_gain_outside_the_valid_range_is_left_out():
    # 50 dB is a finite number, but outside formulation §11's [-200, 0] dB: the Allocator would
    # refuse the whole round; the strategy leaves that one node out instead.
    a = app(gain=lambda dev: 50.0 if dev == BAD else -100.0 + dev)
    strat, grid, _ = run(a)
    rec = strat.history[0]
    assert "gain_db" in rec.left_out[grid.node_ids[BAD]]
    assert sorted(rec.aggregated) == [d for d in range(N) if d != BAD]
