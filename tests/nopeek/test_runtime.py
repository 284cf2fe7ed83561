"""The party runtime: exact equivalences, federated averaging, the relay, costs, channel guards.

References are computed here, independently of the runtime: the vanilla run for one client, a
numpy weighted mean for SplitFed, the segment's own state size for weight messages, analytic
byte counts and ``FlopCounterMode`` run directly on the segments.
"""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nopeek import TrainConfig
from nopeek.errors import ChannelError
from nopeek.models import build_model, split
from nopeek.runtime import InProcessRuntime, flatten_state
from nopeek.runtime.channel import InProcessChannel, Message
from nopeek.runtime.inprocess import WeightedSum
from nopeek.runtime.plans import Relay, SplitFed
from nopeek.topology import many_clients, splitfed, vanilla
from nopeek.training.trainer import train

TINY = dict(
    dataset="digits", max_train=200, dcor_samples=32, record_samples=32, device="cpu", epochs=1
)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**(TINY | kw))


def _model(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)


def _state_size(module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


@pytest.fixture(scope="module")
def digits():
    return _cfg().load_data()


def _run_epoch(runtime, strategy, epoch, batch_size=32, before_step=None):
    """What the trainer does for one epoch: zero, step, optimizer step, per planned step."""
    for step in strategy.epoch(runtime, batch_size, epoch):
        if before_step is not None:
            before_step(step)
        parties = [runtime.parties[p] for p in step.parties]
        for p in parties:
            p.zero_grad()
        runtime.step(step.batch, train=True, nodes=step.nodes)
        for p in parties:
            p.step_optimizer()


# --- 1. many-clients with one client is vanilla ----------------------------------------------
def test_many_clients_with_one_client_equals_vanilla_exactly():
    van = train(_cfg(epochs=3), quiet=True)
    one = train(_cfg(epochs=3, topology="many-clients", clients=1), quiet=True)
    for key in ("train_loss_per_epoch", "test_accuracy_per_epoch", "test_accuracy", "test_loss"):
        assert one.metrics[key] == van.metrics[key], key
    assert one.metrics["dcor_test"] == van.metrics["dcor_test"]
    init = split(_model(0), ["conv2"])
    for mine, ref, start in [("client0", "client", init[0]), ("server", "server", init[1])]:
        got = one.topology.node(mine).module.state_dict()
        want = van.topology.node(ref).module.state_dict()
        assert list(got) == list(want)
        for k in want:
            assert torch.equal(got[k], want[k]), (mine, k)
        # and training moved the weights (the comparison is not between two untouched models)
        assert not torch.equal(flatten_state(start), flatten_state(van.topology.node(ref).module))
    # the same training traffic, message for message (only the client's name differs)
    rename = {"client0": "client"}

    def train_records(result):
        return [
            (rename.get(r.sender, r.sender), rename.get(r.receiver, r.receiver), r.kind, r.cut)
            + (r.epoch, r.step, r.shape, r.nbytes)
            for r in result.wire.records
            if r.phase == "train"
        ]

    assert train_records(one) == train_records(van)
    assert not any(r.kind == "weights" for r in one.wire.records)


# --- 2. SplitFed: a round ends in the shard-weighted mean ------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_splitfed_round_is_the_shard_weighted_mean(digits, version, monkeypatch):
    topo = splitfed(_model(), ["conv2"], clients=3, version=version)
    runtime = InProcessRuntime(topo, lr=1e-2)
    strategy = SplitFed(topo, digits.train, non_iid=0.5, seed=0)
    clients = ["client0", "client1", "client2"]
    sizes = strategy.shard_sizes()
    ids = [set(strategy.shards[c].ids.tolist()) for c in clients]
    assert sum(map(len, ids)) == len(digits.train) == len(set().union(*ids))  # disjoint, complete
    assert len(set(sizes.values())) == 3  # unequal shards: weighting matters
    servers = [f"server{k}" for k in range(3)] if version == "v1" else []
    added: dict[int, list] = {}  # state size -> [(client, state as averaged, its weight)]
    real_add = WeightedSum.add

    def spy(acc, key, flat):  # what the fed server (and v1's server) sum, as they sum it
        added.setdefault(flat.numel(), []).append((key, flat.double().numpy(), acc.weights[key]))
        real_add(acc, key, flat)

    monkeypatch.setattr(WeightedSum, "add", spy)
    _run_epoch(runtime, strategy, epoch=0)
    p_client = _state_size(runtime.parties["client0"].segments["client0"])
    before = {"clients": [f for _, f, _ in added[p_client]]}
    before["weights"] = {k: w for k, _, w in added[p_client]}
    assert [k for k, _, _ in added[p_client]] == clients
    if servers:
        p_server = _state_size(runtime.parties["server"].segments["server0"])
        assert [k for k, _, _ in added[p_server]] == clients
        before["servers"] = [f for _, f, _ in added[p_server]]
    assert before["weights"] == {c: float(sizes[c]) for c in clients}
    n = np.array([sizes[c] for c in clients], dtype=np.float64)
    groups = [("clients", [runtime.parties[c].segments[c] for c in clients])]
    if servers:
        groups.append(("servers", [runtime.parties["server"].segments[s] for s in servers]))
    for what, modules in groups:
        stack = np.stack(before[what])
        assert not np.allclose(stack[0], stack[1])  # they trained apart during the round
        expected = (n[:, None] * stack).sum(0) / n.sum()
        assert np.abs(stack.mean(0) - expected).max() > 1e-5  # weighted != plain mean
        for module in modules:
            got = flatten_state(module).double().numpy()
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=what)
    # the averaging is messages: each client sends its segment to fed and gets the mean back
    weights = [r for r in runtime.channel.log.records if r.kind == "weights"]
    p = _state_size(runtime.parties["client0"].segments["client0"])
    assert [(r.sender, r.receiver) for r in weights] == [(c, "fed") for c in clients] + [
        ("fed", c) for c in clients
    ]
    assert {r.nbytes for r in weights} == {4 * p}


def test_splitfed_clients_agree_after_training():
    result = train(_cfg(topology="splitfed", clients=3, non_iid=1.0), quiet=True)
    flats = [flatten_state(result.topology.node(f"client{k}").module) for k in range(3)]
    assert all(torch.equal(flats[0], f) for f in flats[1:])
    p = _state_size(result.topology.node("client0").module)
    assert result.metrics["weight_bytes_fed"] == 3 * 4 * p
    assert all(result.metrics[f"weight_bytes_client{k}"] == 4 * p for k in range(3))


# --- 3. many-clients: one holder at a time, weights handed on as messages ---------------------
@pytest.mark.parametrize("relay", ["peer", "server"])
def test_relay_hands_the_segment_on_and_only_one_client_holds_it(digits, relay):
    topo = many_clients(_model(), ["conv2"], clients=3, relay=relay)
    runtime = InProcessRuntime(topo, lr=1e-2)
    strategy = Relay(topo, digits.train, non_iid=None, seed=0)
    clients = ["client0", "client1", "client2"]
    p = _state_size(topo.node("client0").module)
    handoffs = []
    real_relay = runtime.relay

    def spy(sender, receiver, *, via=None):
        flat = flatten_state(runtime.parties[sender].segments[sender])
        real_relay(sender, receiver, via=via)
        assert runtime.parties[sender].segments[sender] is None  # the sender keeps no copy
        assert torch.equal(flatten_state(runtime.parties[receiver].segments[receiver]), flat)
        handoffs.append((sender, receiver))

    runtime.relay = spy

    def holds(step):
        held = [c for c in clients if runtime.parties[c].segments[c] is not None]
        assert held == [step.nodes[0]], (held, step.nodes)
        assert all(runtime.parties[c].modules == [] for c in clients if c not in held)

    for epoch in range(2):
        _run_epoch(runtime, strategy, epoch, before_step=holds)
    chain = [("client0", "client1"), ("client1", "client2")]
    assert handoffs == chain + [("client2", "client0")] + chain
    wire = [(r.sender, r.receiver) for r in runtime.channel.log.records if r.kind == "weights"]
    if relay == "peer":
        assert wire == handoffs
    else:
        assert wire == [hop for a, b in handoffs for hop in ((a, "server"), ("server", b))]
    weights = [r for r in runtime.channel.log.records if r.kind == "weights"]
    assert all(r.shape == (p,) and r.nbytes == 4 * p and r.dtype == "float32" for r in weights)


def test_a_client_without_the_segment_cannot_run(digits):
    topo = many_clients(_model(), ["conv2"], clients=2)
    runtime = InProcessRuntime(topo)
    batch = {"x": digits.train.x[:4], "y": digits.train.y[:4], "ids": digits.train.ids[:4]}
    with pytest.raises(ChannelError, match="client1 has no weights for client1"):
        runtime.step(batch, train=True, nodes=["client1", "server"])


@pytest.mark.parametrize("relay", ["peer", "server"])
def test_relay_weight_bytes_count_every_handoff(relay):
    epochs = 2
    result = train(_cfg(topology="many-clients", clients=3, relay=relay, epochs=epochs), quiet=True)
    b = 4 * _state_size(split(_model(), ["conv2"])[0])  # one weights message, float32
    # hand-offs: epoch 0: 0->1, 1->2; epoch 1: 2->0, 0->1, 1->2
    sent = {"client0": 2, "client1": 2, "client2": 1}
    for c, k in sent.items():
        assert result.metrics[f"weight_bytes_{c}"] == k * b / epochs, c
    assert result.metrics["weight_bytes_server"] == (5 * b / epochs if relay == "server" else 0)
    assert all(r.phase == "train" for r in result.wire.records if r.kind == "weights")


# --- 5. costs: bytes and FLOPs against direct computations ------------------------------------
def test_vanilla_bytes_and_flops_match_direct_computation(digits):
    n, batch = len(digits.train), 50  # 200 samples, 4 full batches
    result = train(_cfg(batch_size=batch, epochs=2), quiet=True)
    m = result.metrics
    client, server = split(_model(), ["conv2"])
    per_sample_cut = 32 * 4 * 4 * 4  # float32 (32, 4, 4) per sample
    for p in ("client", "server"):  # activations go one way, gradients of equal size back
        assert m[f"bytes_sent_{p}"] == n * per_sample_cut
        assert m[f"bytes_received_{p}"] == n * per_sample_cut
        assert m[f"weight_bytes_{p}"] == 0
    x, y = digits.train.x[:batch], digits.train.y[:batch]
    with FlopCounterMode(display=False) as counter:
        z = client(x)
        z.backward(torch.ones_like(z))
    assert m["flops_client"] == pytest.approx(counter.get_total_flops() / batch * n, rel=1e-9)
    leaf = z.detach().requires_grad_()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(server(leaf), y).backward()
    assert m["flops_server"] == pytest.approx(counter.get_total_flops() / batch * n, rel=1e-9)


# --- 7. channel and party guards -------------------------------------------------------------
def _msg(**kw):
    base = dict(kind="activation", cut="conv2", sender="alice", receiver="bob", step=3)
    return Message(**(base | kw), tensor=torch.ones(2, 3))


@pytest.mark.parametrize(
    "want, pattern",
    [
        (dict(kind="gradient"), r"bob expected gradient .* from alice, got activation"),
        (dict(cut="fc1"), r"bob expected activation at cut 'fc1' .* from alice, got .*cut 'conv2'"),
        (dict(step=4), r"bob expected activation .*\(step 4\) from alice, got .*\(step 3\)"),
    ],
)
def test_channel_refuses_an_unexpected_message(want, pattern):
    channel = InProcessChannel()
    channel.post(_msg())
    expect = dict(sender="alice", receiver="bob", kind="activation", cut="conv2", step=3) | want
    with pytest.raises(ChannelError, match=pattern):
        channel.recv(**expect)


def test_channel_refuses_a_receive_nothing_was_sent_for_and_graph_carrying_tensors():
    channel = InProcessChannel()
    with pytest.raises(ChannelError, match="bob expected a gradient .* from alice, but none"):
        channel.recv(sender="alice", receiver="bob", kind="gradient", cut="conv2", step=0)
    w = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(ChannelError, match="carries autograd history; send tensor.detach"):
        channel.post(Message("activation", "conv2", "alice", "bob", 0, w * 2))
    with pytest.raises(ChannelError, match="message kind must be one of"):
        channel.post(_msg(kind="labels"))
    assert channel.log.records == [] and channel.pending() == 0


def test_channel_delivers_a_copy():
    channel = InProcessChannel()
    msg = _msg()
    channel.post(msg)
    got = channel.recv(sender="alice", receiver="bob", kind="activation", cut="conv2", step=3)
    got.tensor.add_(1)
    assert torch.equal(msg.tensor, torch.ones(2, 3))


def test_party_end_step_refuses_a_missing_gradient(digits):
    runtime = InProcessRuntime(vanilla(_model(), ["conv2"]))
    batch = {"x": digits.train.x[:4], "y": digits.train.y[:4], "ids": digits.train.ids[:4]}
    client = runtime.parties["client"]
    client.view = runtime.views(batch)["client"]
    client.forward("client", step=0, train=True, active={"client", "server"})
    with pytest.raises(
        ChannelError, match=r"client still waits for the gradient of client \(step 0"
    ):
        client.end_step()
