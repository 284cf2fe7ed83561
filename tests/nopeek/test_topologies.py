"""Topologies: the graphs the builders draw, the shards and batches of many clients, every
configuration trained from the CLI with its per-party costs, and one-line errors for bad input."""

import json

import numpy as np
import pytest
import torch

from nopeek import TrainConfig
from nopeek.cli.main import main
from nopeek.errors import ConfigError, CutError
from nopeek.models import MODELS, build_model
from nopeek.runtime.plans import batches, shard_indices
from nopeek.topology import (
    TOPOLOGIES,
    BuildContext,
    Node,
    Objective,
    Topology,
    many_clients,
    multi_hop,
    multi_task,
    splitfed,
    u_shaped,
    vanilla,
    vertical,
)
from nopeek.topology.vertical import Fusion, partition_bounds
from nopeek.training.trainer import train

INPUT = (1, 8, 8)
TINY = dict(
    dataset="digits", max_train=200, dcor_samples=32, record_samples=32, device="cpu", epochs=1
)


def _cnn(n_classes=10, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("digits-cnn", input_shape=INPUT, n_classes=n_classes)


def _edges(topo):
    return [(e.src, e.dst, e.cut, e.sender, e.receiver) for e in topo.edges()]


# --- the graphs ------------------------------------------------------------------------------
def test_two_party_chains():
    assert _edges(vanilla(_cnn(), ["conv2"])) == [("client", "server", "conv2", "client", "server")]
    hop = multi_hop(_cnn(), ["conv1", "fc1"])
    assert hop.parties == ["client", "relay1", "server"]
    assert _edges(hop) == [
        ("client", "relay1", "conv1", "client", "relay1"),
        ("relay1", "server", "fc1", "relay1", "server"),
    ]
    u = u_shaped(_cnn(), ["conv2", "fc1"])
    assert _edges(u) == [
        ("client_head", "server", "conv2", "client", "server"),
        ("server", "client_tail", "fc1", "server", "client"),
    ]
    assert u.label_parties == ["client"] and u.data_parties == ["client"]


def test_vertical_graph_and_label_party():
    t = vertical(_cnn(), ["conv2"], input_shape=INPUT, build_bottom=lambda s, k: _cnn(seed=k + 1))
    assert t.parties == ["client0", "client1", "server"]
    assert _edges(t) == [
        (f"bottom{k}", "server", "conv2", f"client{k}", "server") for k in range(2)
    ]
    assert t.data_parties == ["client0", "client1"] and t.label_parties == ["server"]
    t = vertical(
        _cnn(),
        ["conv2"],
        input_shape=INPUT,
        build_bottom=lambda s, k: _cnn(seed=k + 1),
        label_party="client1",
    )
    assert _edges(t)[-1] == ("server", "label_head", "logits", "server", "client1")
    assert t.label_parties == ["client1"] and t.holders("y") == ("client1",)


def test_multi_task_heads_share_one_cut_and_derive_labels():
    t = multi_task(
        _cnn(),
        ["conv2"],
        tasks=["digit", "parity", "ge5"],
        n_classes=10,
        build_model=lambda c, i: _cnn(c, seed=100 + i),
    )
    assert _edges(t) == [
        ("client", f"head_{n}", "conv2", "client", "server") for n in ("digit", "parity", "ge5")
    ]
    y = torch.arange(10)
    views = t.views({"x": torch.zeros(10, *INPUT), "y": y})
    assert torch.equal(views["server"]["y:parity"], y % 2)
    assert torch.equal(views["server"]["y:ge5"], (y >= 5).long())
    assert torch.equal(views["server"]["y:digit"], y)
    assert "x" not in views["server"] and set(views["client"]) == {"x"}
    out = t.node("head_parity").module(torch.zeros(3, 32, 4, 4))
    assert out.shape == (3, 2)


def test_many_clients_and_splitfed_graphs():
    m = many_clients(_cnn(), ["conv2"], clients=3, relay="server")
    assert _edges(m) == [
        (f"client{k}", "server", "conv2", f"client{k}", "server") for k in range(3)
    ]
    assert [n.module is not None for n in m.nodes] == [True, False, False, True]
    fresh = m.factories["client2"]()
    assert fresh is not m.node("client0").module
    assert list(fresh.state_dict()) == list(m.node("client0").module.state_dict())
    v1 = splitfed(_cnn(), ["conv2"], clients=2, version="v1")
    assert _edges(v1) == [
        (f"client{k}", f"server{k}", "conv2", f"client{k}", "server") for k in (0, 1)
    ]
    assert v1.parties == ["client0", "client1", "server", "fed"]
    mods = [v1.node(n).module for n in ("client0", "client1")]
    assert mods[0] is not mods[1]  # each client trains its own copy
    assert all(torch.equal(a, b) for a, b in zip(*(m.state_dict().values() for m in mods)))
    v2 = splitfed(_cnn(), ["conv2"], clients=2, version="v2")
    assert [n.name for n in v2.nodes] == ["client0", "client1", "server"]


def test_every_registered_topology_builds_on_digits():
    def make(shape, classes, index):
        return MODELS.get("digits-cnn").build(tuple(shape), classes)  # as the trainer does

    ctx = BuildContext(INPUT, 10, make, clients=2, tasks=("digit", "parity"))
    cuts = {"u-shaped": ["conv2", "fc1"], "multi-hop": ["conv1", "fc1"]}
    names = TOPOLOGIES.names()
    assert set(names) == {
        "vanilla",
        "multi-hop",
        "u-shaped",
        "vertical",
        "multi-task",
        "many-clients",
        "splitfed",
    }
    for name in names:
        t = TOPOLOGIES.get(name)(_cnn(), cuts.get(name, ["conv2"]), ctx)
        assert t.name == name and t.edges()
        assert all(t.node(e.src).party != t.node(e.dst).party for e in t.edges())
        assert "server" in t.parties and "server" not in t.data_parties


def test_topology_refuses_reading_data_it_does_not_hold():
    seg = torch.nn.Identity()
    with pytest.raises(ConfigError, match="party 'server' reads data 'x' held by 'client'"):
        Topology("t", [Node("s", "server", seg, ("data:x",))], [], owners={"x": "client"})
    with pytest.raises(ConfigError, match="reads 'b' before it is computed"):
        Topology(
            "t",
            [Node("a", "client", seg, ("b",)), Node("b", "server", seg, ("data:x",))],
            [],
            owners={"x": ("client", "server")},
        )
    with pytest.raises(ConfigError, match="must sit with the party holding labels"):
        Topology(
            "t",
            [Node("a", "client", seg, ("data:x",))],
            [Objective("a", "y", "client")],
            owners={"x": "client", "y": "server"},
        )


# --- partitions, merges, shards, batches -----------------------------------------------------
@pytest.mark.parametrize("width, k", [(8, 2), (8, 3), (30, 3), (30, 7), (5, 5)])
def test_partition_bounds_are_contiguous_near_equal_blocks(width, k):
    ref = np.array_split(np.arange(width), k)
    assert partition_bounds(width, k) == [(int(b[0]), int(b[-1]) + 1) for b in ref]


@pytest.mark.parametrize("merge", ["concat", "sum", "mean"])
def test_fusion_merges_as_named(merge):
    zs = [torch.randn(4, 3, 2), torch.randn(4, 3, 2)]
    got = Fusion(merge, torch.nn.Identity())(*zs)
    ref = {"concat": torch.cat(zs, -1), "sum": zs[0] + zs[1], "mean": (zs[0] + zs[1]) / 2}[merge]
    torch.testing.assert_close(got, ref)


def test_shards_are_disjoint_and_cover_the_data():
    y = torch.arange(300) % 10
    for non_iid in (None, 0.3):
        shards = shard_indices(y, 7, non_iid=non_iid, seed=3)
        joined = torch.cat(shards).sort().values
        assert torch.equal(joined, torch.arange(300))
        again = shard_indices(y, 7, non_iid=non_iid, seed=3)
        assert all(torch.equal(a, b) for a, b in zip(shards, again))
    iid = shard_indices(y, 7, non_iid=None, seed=3)
    assert max(map(len, iid)) - min(map(len, iid)) <= 1
    assert torch.equal(shard_indices(y, 1, non_iid=None, seed=3)[0], torch.arange(300))
    # Dirichlet(0.1) skews the label mix far from the IID one
    skewed = shard_indices(y, 4, non_iid=0.1, seed=0)
    tv = [0.5 * (torch.bincount(y[s], minlength=10) / len(s) - 0.1).abs().sum() for s in skewed]
    assert min(tv) > 0.2


def test_batch_order_depends_only_on_seed_epoch_and_client():
    split = TrainConfig(**TINY).load_data().train

    def order(**kw):
        return torch.cat([b["ids"] for b in batches(split, 64, **kw)])

    a = order(seed=0, epoch=1, client=2)
    assert torch.equal(a, order(seed=0, epoch=1, client=2))
    assert torch.equal(a.sort().values, split.ids.sort().values)
    for other in (
        dict(seed=1, epoch=1, client=2),
        dict(seed=0, epoch=2, client=2),
        dict(seed=0, epoch=1, client=3),
    ):
        assert not torch.equal(a, order(**other))


# --- 5. every configuration trains from the CLI ----------------------------------------------
CLI = "--epochs 1 --max-train 200 --dcor-samples 32 --record-samples 32 --device cpu --quiet"
RUNS = {
    "vanilla": "",
    "u-shaped": "--topology u-shaped --cut conv2,fc1",
    "multi-hop": "--topology multi-hop --cut conv1,fc1",
    "vertical-concat": "--topology vertical --clients 2 --merge concat",
    "vertical-sum": "--topology vertical --clients 2 --merge sum",
    "vertical-mean": "--topology vertical --clients 2 --merge mean",
    "vertical-labels": "--topology vertical --label-party client0",
    "breast-cancer-vertical-3": "--dataset breast-cancer --topology vertical --clients 3",
    "multi-task": "--topology multi-task --tasks digit,parity,ge5",
    "many-clients-peer": "--topology many-clients --clients 3",
    "many-clients-server": "--topology many-clients --clients 3 --relay server --non-iid 0.5",
    "splitfed-v1": "--topology splitfed --clients 3 --splitfed v1",
    "splitfed-v2": "--topology splitfed --clients 3 --non-iid 0.5",
}


@pytest.mark.parametrize("name", list(RUNS))
def test_each_configuration_trains_from_the_cli(name, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *CLI.split(), *RUNS[name].split(), "--out", str(out)]) == 0
    assert "error" not in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    parties = m["parties"]
    assert "server" in parties
    for p in parties:
        for key in ("bytes_sent", "bytes_received", "weight_bytes"):
            assert m[f"{key}_{p}"] >= 0, (key, p)
    computing = [p for p in parties if p != "fed"]  # the fed server runs no segment
    assert all(m[f"flops_{p}"] > 0 for p in computing)
    assert sum(m[f"bytes_sent_{p}"] for p in parties) == sum(
        m[f"bytes_received_{p}"] for p in parties
    )
    relays = name.startswith(("many-clients", "splitfed"))
    assert (sum(m[f"weight_bytes_{p}"] for p in parties) > 0) == relays
    if relays:
        clients = [p for p in parties if p.startswith("client")]
        assert len(clients) == 3
        assert all(0 <= m[f"test_accuracy_{c}"] <= 1 for c in clients)
    if name == "multi-task":
        assert all(0 <= m[f"test_accuracy_{t}"] <= 1 for t in ("digit", "parity", "ge5"))
        assert m["test_accuracy"] == m["test_accuracy_digit"]
    if name.startswith("vertical-") and name != "vertical-labels":
        assert json.loads((out / "config.json").read_text())["merge"] == name.split("-")[1]
    if name == "breast-cancer-vertical-3":
        assert parties == ["client0", "client1", "client2", "server"]
        assert 0 <= m["test_auc"] <= 1  # binary task: ROC-AUC reported
    assert np.isfinite(m["train_loss_per_epoch"]).all()


def _train_bytes(records, party, *, key):
    """Reference: bytes a party sent/received in training (weights messages only train)."""
    end = "sender" if key == "sent" else "receiver"
    return sum(
        r.nbytes
        for r in records
        if getattr(r, end) == party and (r.phase == "train" or r.kind == "weights")
    )


@pytest.mark.parametrize(
    "name",
    [
        "vanilla",
        "u-shaped",
        "multi-hop",
        "vertical",
        "multi-task",
        "many-clients",
        "splitfed",
    ],
)
def test_party_bytes_are_the_wire_log_per_epoch(name):
    extra = {
        "u-shaped": dict(cut="conv2,fc1"),
        "multi-hop": dict(cut="conv1,fc1"),
        "many-clients": dict(clients=3),
        "splitfed": dict(clients=3),
        "multi-task": dict(tasks="digit,parity"),
    }.get(name, {})
    epochs = 2
    result = train(TrainConfig(**(TINY | extra | dict(topology=name, epochs=epochs))), quiet=True)
    records, m = result.wire.records, result.metrics
    for p in result.topology.parties:
        for key in ("sent", "received"):
            assert m[f"bytes_{key}_{p}"] == _train_bytes(records, p, key=key) / epochs, (key, p)
        weights = sum(r.nbytes for r in records if r.sender == p and r.kind == "weights")
        assert m[f"weight_bytes_{p}"] == weights / epochs, p


# --- 6. bad input: one line, exit 2 ----------------------------------------------------------
ERRORS = [
    ("--topology vertical --clients 1", ["vertical needs --clients >= 2", "got 1"]),
    ("--topology many-clients --clients 5000", ["--clients 5000 exceeds the 200 training samples"]),
    ("--topology splitfed --clients 201", ["--clients 201 exceeds the 200"]),
    (
        "--topology many-clients --clients 50 --non-iid 0.01 --max-train 100",
        ["shard has no samples", "--non-iid"],
    ),
    ("--topology splitfed --clients 50 --non-iid 0.01 --max-train 100", ["shard has no samples"]),
    (
        "--topology vertical --clients 3 --merge sum --cut conv1",
        ["--merge sum needs equal cut shapes", "(N, 16, 8, 3)", "(N, 16, 8, 2)"],
    ),
    (
        "--topology vertical --clients 3 --merge mean --cut conv1",
        ["--merge mean", "(N, 16, 8, 3)", "(N, 16, 8, 2)"],
    ),
    (
        "--topology multi-task --tasks digit,nope",
        ["unknown task 'nope'", "digit, ge5, label, parity"],
    ),
    (
        "--topology vertical --label-party client7",
        ["--label-party 'client7' holds no data", "client0, client1"],
    ),
    ("--topology many-clients --label-party client0", ["applies to --topology vertical"]),
    ("--topology multi-hop --cut conv2", ["multi-hop needs two or more cuts"]),
    ("--topology u-shaped --cut conv2", ["u-shaped needs two cuts"]),
    ("--topology vertical --merge max", ["unknown --merge 'max'", "concat, sum, mean"]),
    ("--topology many-clients --relay p2p", ["unknown --relay 'p2p'", "peer, server"]),
    ("--topology splitfed --splitfed v3", ["unknown --splitfed 'v3'", "v1, v2"]),
    ("--topology ring", ["unknown topology 'ring'", "splitfed"]),
    ("--topology many-clients --clients 0", ["--clients must be an integer >= 1"]),
    ("--topology splitfed --non-iid 0", ["--non-iid must be a Dirichlet"]),
    ("--topology vertical --clients 9", ["cannot split 8 feature columns among 9"]),
    ("--topology vertical --cut conv1,conv2", ["vertical takes one cut"]),
    ("--topology splitfed --cut conv1,conv2", ["splitfed takes one cut"]),
    (
        "--dataset breast-cancer --topology multi-task --tasks ge5",
        ["task 'ge5' needs at least 6 classes"],
    ),
    ("--topology multi-task --tasks digit,digit", ["lists a task twice"]),
]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, parts", ERRORS, ids=[a for a, _ in ERRORS])
def test_bad_input_is_one_line_and_exit_2(args, parts, tmp_path, capsys):
    out = tmp_path / "run"  # a later --max-train overrides CLI's (argparse: last one wins)
    assert main(["train", *CLI.split(), *args.split(), "--out", str(out)]) == 2
    err = _one_line(capsys)
    for part in parts:
        assert part in err, (part, err)
    assert not out.exists()  # validated before the run directory is made


@pytest.mark.parametrize(
    "args", ["--cut fc1", "--clients 8"], ids=["strip-through-fc1", "1-column-strips"]
)
def test_vertical_bottom_that_cannot_run_on_a_strip_is_one_line(args, tmp_path, capsys):
    argv = ["train", *CLI.split(), "--topology", "vertical", *args.split()]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert "cut" in _one_line(capsys)


def test_api_refuses_like_the_cli():
    with pytest.raises(ConfigError, match="vertical needs --clients >= 2"):
        train(TrainConfig(**(TINY | dict(topology="vertical", clients=1))))
    with pytest.raises(CutError, match="multi-hop needs two or more cuts"):
        multi_hop(_cnn(), ["conv2"])
