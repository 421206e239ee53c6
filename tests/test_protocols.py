"""Protocol kernels: FedAvg, transport framing and counts, batch plans, SFL/FL/SL rounds, costs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sflam_opt.allocation import Allocation
from sflam_opt.costs import breakdown, rate_bps
from sflam_opt.scenario import Scenario
from sflam_opt.training.models import build_split_model
from sflam_opt.training.protocols import (
    PROTOCOLS,
    ClientData,
    FedAvgAccumulator,
    RoundPlan,
    batch_plan,
    fedavg,
    round_generator,
)
from sflam_opt.training.quantizer import QuantizedTensor, quantize
from sflam_opt.training.transport import InProcessTransport, decode, encode

# ----------------------------------------------------------------------------- FedAvg


def test_fedavg_of_known_models_is_the_data_weighted_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0), "n": torch.tensor(7)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(4.0), "n": torch.tensor(9)}
    avg = fedavg([a, b], [1, 3])  # weights D_n = 1 and 3: 1/4 a + 3/4 b
    assert torch.equal(avg["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(avg["b"], torch.tensor(3.0))
    assert int(avg["n"]) == 7  # integer buffers are not averaged
    # Copies, never aliases: changing the inputs afterwards leaves the average alone.
    a["w"].add_(100.0)
    b["w"].zero_()
    assert torch.equal(avg["w"], torch.tensor([2.5, 5.0]))
    assert avg["w"].data_ptr() not in (a["w"].data_ptr(), b["w"].data_ptr())


def test_fedavg_of_real_models_and_streaming_accumulator_agree():
    models = [nn.Linear(4, 3) for _ in range(3)]
    for i, m in enumerate(models):
        torch.manual_seed(i)
        for p in m.parameters():
            nn.init.normal_(p)
    weights = [5.0, 1.0, 2.0]
    avg = fedavg([m.state_dict() for m in models], weights)
    expect = sum(w * m.weight.detach() for w, m in zip(weights, models, strict=True)) / 8.0
    torch.testing.assert_close(avg["weight"], expect)
    acc = FedAvgAccumulator()
    for w, m in zip(weights, models, strict=True):
        acc.add(m.state_dict(), w)
    assert acc.total_weight == 8.0
    torch.testing.assert_close(acc.result()["bias"], avg["bias"], rtol=0, atol=0)
    # Averaging identical models returns them exactly.
    same = fedavg([models[0].state_dict()] * 4, [1, 2, 3, 4])
    torch.testing.assert_close(same["weight"], models[0].weight.detach(), rtol=1e-6, atol=0)


def test_fedavg_rejects_bad_weights_and_mismatched_states():
    with pytest.raises(ValueError, match="weight"):
        fedavg([{"w": torch.zeros(1)}], [0.0])
    with pytest.raises(ValueError, match="weights of shape"):
        fedavg([{"w": torch.zeros(1)}], [1.0, 2.0])
    with pytest.raises(ValueError, match="different keys"):
        fedavg([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}], [1.0, 1.0])


# ----------------------------------------------------------------------------- transport


def test_frames_round_trip_and_count_payload_bytes():
    x = torch.randn(3, 4, 5)
    f = encode(x)
    assert f.payload_nbytes == 4 * x.numel() and len(f.data) > f.payload_nbytes
    assert torch.equal(decode(f.data), x)

    y = torch.tensor([0, 9, 3], dtype=torch.uint8)
    f = encode(y)
    assert f.payload_nbytes == 3
    back = decode(f.data)
    assert back.dtype == torch.uint8 and torch.equal(back, y)

    q = quantize(x, 3, generator=torch.Generator().manual_seed(0))
    f = encode(q)
    assert f.payload_nbytes == q.nbytes == -(-x.numel() * 3 // 8) + 8
    assert len(f.data) == 1 + q.header_nbytes + q.nbytes
    assert decode(f.data) == q

    state = {"a.weight": torch.randn(2, 2), "a.bias": torch.randn(2), "steps": torch.tensor(5)}
    f = encode(state)
    assert f.payload_nbytes == 4 * 6 + 8
    got = decode(f.data)
    assert list(got) == list(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_in_process_transport_meters_each_direction_and_kind():
    t = InProcessTransport(3)
    x = torch.randn(2, 8)
    received = t.to_server(1, "activations", x)
    assert torch.equal(received, x) and received.data_ptr() != x.data_ptr()
    t.to_device(2, "gradients", x)
    t.to_device(2, "gradients", x)
    s = t.meter.summary()
    frame = len(encode(x).data)
    assert t.meter.uplink_bytes.tolist() == [0, frame, 0]
    assert t.meter.downlink_bytes.tolist() == [0, 0, 2 * frame]
    assert s["uplink_payload_bytes"] == 64 and s["downlink_payload_bytes"] == 128
    assert s["traffic"]["down/gradients"] == 2 * frame
    t.meter.reset()
    assert t.meter.summary()["uplink_bytes"] == 0


def test_decode_rejects_garbage():
    from sflam_opt.errors import DataError

    with pytest.raises(DataError):
        decode(b"")
    with pytest.raises(DataError, match="tag"):
        decode(b"Zabc")
    with pytest.raises(DataError):
        decode(encode(torch.randn(4)).data[:-3])


# ----------------------------------------------------------------------------- sampling


def test_batch_plan_visits_every_sample_once_per_epoch():
    gen = torch.Generator().manual_seed(0)
    plan = batch_plan(10, 4, 5, gen)  # 20 draws = 2 epochs of 10
    assert plan.shape == (5, 4)
    flat = plan.reshape(-1)
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert sorted(flat[10:].tolist()) == list(range(10))
    # Fewer local samples than a batch: batches are still full (samples repeat across epochs).
    assert batch_plan(3, 8, 2, torch.Generator().manual_seed(0)).shape == (2, 8)


def test_round_generators_are_reproducible_and_independent():
    def draw(*args):
        return torch.rand(4, generator=round_generator(*args)).tolist()

    assert draw(0, 1, 2, 1) == draw(0, 1, 2, 1)
    streams = [
        draw(0, 1, 2, 1),
        draw(1, 1, 2, 1),
        draw(0, 2, 2, 1),
        draw(0, 1, 3, 1),
        draw(0, 1, 2, 2),
    ]
    assert len({tuple(s) for s in streams}) == len(streams)


# ----------------------------------------------------------------------------- rounds


def _setup(protocol: str, n_dev: int = 3, per_dev: int = 12, seed: int = 0, **kw):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.rand(per_dev + i, 1, 8, 8, generator=gen) for i in range(n_dev)]
    ys = [torch.randint(0, 10, (per_dev + i,), generator=gen) for i in range(n_dev)]
    dev, srv, spec = build_split_model("vit-tiny", seed=seed)
    transport = InProcessTransport(n_dev)
    proto = PROTOCOLS[protocol](
        dev,
        srv,
        data=ClientData(xs, ys, 10),
        transport=transport,
        lr=kw.get("lr", 0.1),
        momentum=kw.get("momentum", 0.0),
        batch_size=kw.get("batch_size", 4),
        local_iters=kw.get("local_iters", 3),
    )
    return proto, transport, spec


def _params(proto) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in proto.global_model().parameters()])


def test_sfl_round_equals_fedavg_of_the_whole_model():
    # SFL-V1 averages device and server halves with the same weights, and the split step
    # back-propagates exactly, so one fp32 SFL round equals one FedAvg round of the whole model.
    plan = RoundPlan(1, np.array([2, 0, 1]), np.full(3, 32), seed=5)
    sfl, t_sfl, _ = _setup("sfl", momentum=0.9)
    fl, t_fl, _ = _setup("fl", momentum=0.9)
    before = _params(sfl)
    s1, s2 = sfl.run_round(plan), fl.run_round(plan)
    assert s1.steps == s2.steps == 9
    assert not torch.equal(_params(sfl), before)
    torch.testing.assert_close(_params(sfl), _params(fl), rtol=1e-5, atol=1e-6)
    assert s1.train_loss == pytest.approx(s2.train_loss, rel=1e-5)
    assert s1.grad_sq_norm == pytest.approx(s2.grad_sq_norm, rel=1e-4)
    # What crossed the link differs: activations/gradients for SFL, whole models for FL.
    assert "up/activations" in t_sfl.meter.by_kind and "up/activations" not in t_fl.meter.by_kind


def test_sflam_round_sends_packed_bits_and_stays_close_to_sfl():
    bits = np.array([2, 4, 8])
    plan = RoundPlan(1, np.array([0, 1, 2]), bits, seed=0)
    sflam, t, spec = _setup("sflam")
    sfl, _, _ = _setup("sfl")
    sflam.run_round(plan)
    sfl.run_round(RoundPlan(1, np.array([0, 1, 2]), np.full(3, 32), seed=0))
    # Uplink payload per device: tau mini-batches of beta*d values at b bits + 8 range bytes,
    # tau label bytes, and the fp32 device model.
    tau, beta, d = 3, 4, spec.activation_elems
    expect = tau * (-(-beta * d * bits // 8) + 8) + tau * beta + 4 * spec.device_params
    assert t.meter.uplink_payload.tolist() == expect.tolist()
    # Downlink: fp32 activation gradients and the global device model.
    assert t.meter.downlink_payload.tolist() == [tau * beta * d * 4 + 4 * spec.device_params] * 3
    drift = (_params(sflam) - _params(sfl)).norm() / _params(sfl).norm()
    assert 0 < float(drift) < 0.05


def test_sflam_is_deterministic_given_the_seed():
    plan = RoundPlan(3, np.array([1, 2]), np.array([3, 3, 3]), seed=11)
    a, _, _ = _setup("sflam")
    b, _, _ = _setup("sflam")
    a.run_round(plan)
    b.run_round(plan)
    assert torch.equal(_params(a), _params(b))
    c, _, _ = _setup("sflam")
    c.run_round(RoundPlan(3, np.array([1, 2]), np.array([3, 3, 3]), seed=12))
    assert not torch.equal(_params(a), _params(c))


def test_sl_passes_one_device_model_along_and_keeps_server_optimizer_state():
    sl, t, spec = _setup("sl", momentum=0.9)
    sl.run_round(RoundPlan(1, np.array([1, 0]), np.full(3, 32), seed=0))
    # Each turn downloads and uploads the device model once; device 2 did not take part.
    model_frame = t.meter.by_kind["up/model"] // 2
    assert t.meter.by_kind["down/model"] == 2 * model_frame
    assert t.meter.uplink_bytes[2] == 0
    state = sl.state_dict()
    assert state["server_opt"]["state"], "server momentum must persist across turns"
    # Restoring the state into a fresh protocol continues identically.
    other, _, _ = _setup("sl", momentum=0.9)
    other.load_state_dict(copy.deepcopy(state))
    plan = RoundPlan(2, np.array([2, 1]), np.full(3, 32), seed=0)
    sl.run_round(plan)
    other.run_round(plan)
    assert torch.equal(_params(sl), _params(other))


# ----------------------------------------------------------------------------- costs


@pytest.fixture(scope="module")
def small_scenario():
    _, _, spec = build_split_model("vit-tiny")
    base = Scenario.default(devices=3, seed=1)
    scen = base.replace(
        model={
            "activation_elems": spec.activation_elems,
            "device_cycles_per_sample": spec.device_flops_per_sample,
            "server_cycles_per_sample": spec.server_flops_per_sample,
            "device_params": spec.device_params,
        },
        training={"batch_size": 16, "local_iters": 10, "learning_rate": 0.1},
    )
    alloc = Allocation(np.array([3, 4, 5]), np.array([5e6, 7e6, 8e6]), np.array([0.1, 0.2, 0.15]))
    return scen, alloc, spec


def test_split_protocol_costs_are_formulation_section_2(small_scenario):
    scen, alloc, spec = small_scenario
    lat, en = PROTOCOLS["sflam"].device_costs(scen, alloc, spec)
    bd = breakdown(scen, alloc)
    np.testing.assert_array_equal(lat, bd.latency_s)
    np.testing.assert_array_equal(en, bd.energy_j)
    lat32, _ = PROTOCOLS["sfl"].device_costs(scen, alloc, spec)
    assert np.all(lat32 > lat)  # fp32 sends more
    assert PROTOCOLS["sflam"].round_cost(lat, en, [0, 2]) == (max(lat[0], lat[2]), en[0] + en[2])


def test_fl_and_sl_costs_follow_their_documented_formulas(small_scenario):
    scen, alloc, spec = small_scenario
    t, m, s = scen.training, scen.model, scen.system
    f = scen.devices.cpu_hz
    full_m = m.device_params + spec.server_params
    cyc = t.local_iters * t.batch_size * (m.device_cycles_per_sample + m.server_cycles_per_sample)
    up = 32 * full_m / rate_bps(scen, alloc.bandwidth_hz, alloc.power_w)
    lat, en = PROTOCOLS["fl"].device_costs(scen, alloc, spec)
    np.testing.assert_allclose(lat, cyc / f + up + 32 * full_m / s.downlink_bps, rtol=1e-12)
    np.testing.assert_allclose(en, s.kappa * cyc * f**2 + alloc.power_w * up, rtol=1e-12)

    lat, en = PROTOCOLS["sl"].device_costs(scen, alloc, spec)
    pmax = scen.devices.max_power_w
    w = t.local_iters * t.batch_size * m.activation_elems * 32 + 32 * m.device_params
    up = w / rate_bps(scen, np.full(3, s.bandwidth_hz), pmax)
    comp = t.local_iters * t.batch_size * m.device_cycles_per_sample / f
    srv = t.local_iters * t.batch_size * m.server_cycles_per_sample / s.server_cycles_per_s
    dl = (t.local_iters * t.batch_size * m.activation_elems * 32 + 32 * m.device_params) / (
        s.downlink_bps
    )
    np.testing.assert_allclose(lat, comp + up + srv + dl, rtol=1e-12)
    # Sequential: the round takes the sum of the turns.
    total, energy = PROTOCOLS["sl"].round_cost(lat, en, [0, 1, 2])
    assert total == pytest.approx(lat.sum()) and energy == pytest.approx(en.sum())


def test_protocol_names_and_flags():
    assert set(PROTOCOLS) == {"sflam", "sfl", "fl", "sl"}
    assert PROTOCOLS["sflam"].quantized and not PROTOCOLS["sfl"].quantized
    assert PROTOCOLS["sl"].sequential and not PROTOCOLS["fl"].sequential
    assert isinstance(quantize(torch.zeros(2), 4), QuantizedTensor)


# ----------------------------------------------------------------------------- halves


def test_in_process_transport_delivers_in_order_and_checks_the_kind():
    t = InProcessTransport(2)
    t.send("up", 0, "labels", torch.tensor([1, 2], dtype=torch.uint8))
    t.send("up", 0, "model", {"w": torch.ones(2)})
    t.send("down", 0, "gradients", torch.zeros(3))
    assert torch.equal(t.recv("up", 0, "labels"), torch.tensor([1, 2], dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="expected 'activations'"):
        t.recv("up", 0, "activations")  # the model is next on that link
    with pytest.raises(RuntimeError, match="no 'gradients' message"):
        t.recv("down", 1, "gradients")
    # Statistics cross uncounted: the simulated link does not carry them.
    before = t.meter.summary()
    t.send("up", 1, "stats", {"0": torch.ones(4)})
    assert t.meter.summary() == before


@pytest.mark.parametrize("protocol", ["sflam", "fl"])
def test_turns_served_out_of_order_give_the_same_round(protocol):
    # Two device halves (as two worker processes would be) whose turns the server serves
    # interleaved and finishes in reverse order: the server folds them in participant order, so
    # the round equals the in-process one bit for bit.
    plan = RoundPlan(1, np.array([2, 0]), np.array([3, 5, 4]), seed=4)
    ref, _, _ = _setup(protocol, momentum=0.5)
    ref_stats = ref.run_round(plan)

    proto, transport, _ = _setup(protocol, momentum=0.5)
    server = proto.server
    halves = {
        n: type(proto).make_device(
            proto.device_model,
            proto.server_model,
            data=proto.device.data,
            transport=transport,
            hyper=proto.hyper,
        )
        for n in (2, 0)
    }
    server.start_round(plan)
    for n in (2, 0):
        server.begin(plan, n)
        halves[n].begin(plan, n)
    for t in range(proto.hyper.local_iters):
        for n in (2, 0):
            halves[n].forward(t)
        for n in (0, 2):
            server.step(n, t)
        for n in (2, 0):
            halves[n].backward(t)
    for n in (0, 2):  # device 0 finishes first, though device 2 comes first in the plan
        halves[n].end()
        server.end(n)
    stats = server.finish_round()
    assert stats == ref_stats
    assert torch.equal(_params(proto), _params(ref))
    assert transport.meter.summary() == ref.transport.meter.summary()
