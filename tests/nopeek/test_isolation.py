"""Isolation, read off the wire log: who receives what, in every configuration.

Every message that crossed a party boundary is a :class:`~nopeek.runtime.channel.WireRecord`
with its sender, receiver, kind, cut and shape. The expected cut shapes are computed here by
running the reference model's segments directly; the raw-input shapes come from the data set's
input shape and
the column blocks a vertical partition must produce.
"""

import functools

import numpy as np
import pytest
import torch

from nopeek import TrainConfig
from nopeek.models import build_model, split
from nopeek.runtime import InProcessRuntime
from nopeek.runtime.plans import Relay
from nopeek.training.trainer import train

TINY = dict(
    dataset="digits", max_train=200, dcor_samples=32, record_samples=32, device="cpu", epochs=1
)
INPUT = (1, 8, 8)

CONFIGS = {
    "vanilla": dict(),
    "vanilla-conv1": dict(cut="conv1"),
    "u-shaped": dict(topology="u-shaped", cut="conv2,fc1"),
    "multi-hop": dict(topology="multi-hop", cut="conv1,fc1"),
    "vertical": dict(topology="vertical", clients=2),
    "vertical-3-conv1": dict(topology="vertical", clients=3, cut="conv1"),
    "vertical-labels-client0": dict(topology="vertical", clients=2, label_party="client0"),
    "multi-task": dict(topology="multi-task", tasks="digit,parity"),
    "many-clients-peer": dict(topology="many-clients", clients=3, relay="peer"),
    "many-clients-server": dict(topology="many-clients", clients=3, relay="server"),
    "splitfed-v1": dict(topology="splitfed", clients=3, splitfed="v1"),
    "splitfed-v2": dict(topology="splitfed", clients=3, splitfed="v2"),
}


@functools.cache
def _run(name: str):
    return train(TrainConfig(**(TINY | CONFIGS[name])), quiet=True)


def _widths(k: int) -> list[int]:
    """Column-block widths of a K-client vertical partition of the 8 image columns."""
    return [len(b) for b in np.array_split(np.arange(INPUT[-1]), k)]


def _shape_after(model, cuts, n_segments, x_shape):
    """Per-sample shape after the first ``n_segments`` segments of ``model`` cut at ``cuts``."""
    z = torch.zeros(2, *x_shape)
    with torch.no_grad():
        for seg in split(model, cuts)[:n_segments]:
            z = seg.eval()(z)
    return tuple(z.shape[1:])


def _digits_cnn(n_classes=10):
    return build_model("digits-cnn", input_shape=INPUT, n_classes=n_classes)


def _raw_shapes(config: dict) -> set[tuple[int, ...]]:
    """Every per-sample shape raw inputs take at some party: the image, or a client's strip."""
    shapes = {INPUT}
    if config.get("topology") == "vertical":
        shapes |= {(1, 8, w) for w in _widths(config["clients"])}
    return shapes


# --- no raw input ever reaches a party that holds none ----------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_message_to_a_non_data_party_is_shaped_like_a_raw_input(name):
    result = _run(name)
    topo = result.topology
    data = set(topo.data_parties)
    others = [p for p in topo.parties if p not in data]
    assert "server" in others and "server" not in data
    forbidden = _raw_shapes(CONFIGS[name])
    to_others = [r for r in result.wire.records if r.receiver in others]
    assert to_others, "the server received nothing"
    for r in to_others:
        assert r.shape[1:] not in forbidden, r
        assert r.dtype == "float32", r  # no integer labels or sample indices
        assert r.kind in ("activation", "gradient", "weights"), r
    # each party's data view: a non-data party never holds x or a slice of it
    batch = {"x": result.dataset.train.x[:5], "y": result.dataset.train.y[:5]}
    batch["ids"] = result.dataset.train.ids[:5]
    views = InProcessRuntime(topo).views(batch)
    for p in others:
        for key, value in views[p].items():
            assert not key.startswith("x"), (p, key)
            assert tuple(value.shape[1:]) not in forbidden, (p, key)


# --- U-shaped: neither labels nor losses reach the server -------------------------------------
def test_u_shaped_server_sees_only_the_two_cut_tensors():
    result = _run("u-shaped")
    model = _digits_cnn()
    head = _shape_after(model, ["conv2", "fc1"], 1, INPUT)
    body = _shape_after(model, ["conv2", "fc1"], 2, INPUT)
    assert (head, body) == ((32, 4, 4), (64,))
    allowed = {("activation", "conv2", head), ("gradient", "fc1", body)}
    to_server = [r for r in result.wire.records if r.receiver == "server"]
    seen = {(r.kind, r.cut, r.shape[1:]) for r in to_server}
    assert seen == allowed  # every message to the server is one of these, and both occur
    assert all(r.sender == "client" and r.dtype == "float32" for r in to_server)
    assert not any(len(r.shape) < 2 for r in to_server)  # no (N,) labels, no scalar loss
    # the server's data view holds the sample ids only: the labels stay with the client
    batch = {"x": result.dataset.train.x[:3], "y": result.dataset.train.y[:3]}
    batch["ids"] = result.dataset.train.ids[:3]
    views = InProcessRuntime(result.topology).views(batch)
    assert sorted(views["server"]) == ["ids"]
    assert sorted(views["client"]) == ["ids", "x", "y"]
    # training still used the labels: the client's tail computed the loss
    assert result.topology.label_parties == ["client"]


# --- vertical: a client hears only the server, and only about its own features ----------------
@pytest.mark.parametrize("name", ["vertical", "vertical-3-conv1", "vertical-labels-client0"])
def test_vertical_client_receives_only_its_own_gradients(name):
    config = CONFIGS[name]
    result = _run(name)
    k = config["clients"]
    cut = config.get("cut", "conv2")
    own = {
        f"client{i}": _shape_after(_digits_cnn(), [cut], 1, (1, 8, w))
        for i, w in enumerate(_widths(k))
    }
    if name == "vertical-3-conv1":
        assert len(set(own.values())) == 2  # strips of widths 3, 3, 2 give unequal cuts
    label_party = config.get("label_party")
    records = result.wire.records
    for client, shape in own.items():
        got = [r for r in records if r.receiver == client]
        assert got
        sent = [r for r in records if r.sender == client]
        assert {
            (r.kind, r.receiver, r.cut, r.shape[1:]) for r in sent if r.kind == "activation"
        } == {("activation", "server", cut, shape)}
        for r in got:
            assert r.sender == "server", r  # never another client
            if r.kind == "activation":  # only the label party gets the logits
                assert client == label_party and (r.cut, r.shape[1:]) == ("logits", (10,)), r
            else:
                assert (r.kind, r.cut, r.shape[1:]) == ("gradient", cut, shape), r
        # one gradient back for every training activation sent, of the same shape
        grads = [r for r in got if r.kind == "gradient"]
        acts = [r for r in sent if r.kind == "activation" and r.phase == "train"]
        assert [(r.epoch, r.step, r.shape) for r in grads] == [
            (r.epoch, r.step, r.shape) for r in acts
        ]


@pytest.mark.parametrize("label_party", ["server", "client0"])
def test_vertical_views_hold_only_own_columns(label_party):
    name = "vertical" if label_party == "server" else "vertical-labels-client0"
    result = _run(name)
    x = result.dataset.train.x[:4]
    batch = {"x": x, "y": result.dataset.train.y[:4], "ids": result.dataset.train.ids[:4]}
    views = InProcessRuntime(result.topology).views(batch)
    bounds = np.cumsum([0, *_widths(2)])
    for i in range(2):
        keys = {f"x{i}", "ids"} | ({"y"} if label_party == f"client{i}" else set())
        assert set(views[f"client{i}"]) == keys
        assert torch.equal(views[f"client{i}"][f"x{i}"], x[..., bounds[i] : bounds[i + 1]])
    assert set(views["server"]) == ({"y", "ids"} if label_party == "server" else {"ids"})


# --- many clients: a client's view holds only its own shard -----------------------------------
def test_many_clients_view_holds_only_the_own_shard():
    result = _run("many-clients-peer")
    runtime = InProcessRuntime(result.topology)
    strategy = Relay(result.topology, result.dataset.train, non_iid=None, seed=0)
    own = {c: set(s.ids.tolist()) for c, s in strategy.shards.items()}
    step = next(strategy.epoch(runtime, 32, 0))
    assert step.nodes[0] == "client0"
    runtime.step(step.batch, train=True, nodes=step.nodes)
    for client, ids in own.items():
        view = runtime.parties[client].view
        if "x" in view:
            assert set(view["ids"].tolist()) <= ids, f"{client} holds another client's samples"


def _reachable_modules(root, *, skip: tuple[str, ...]) -> list:
    """Every ``nn.Module`` reachable from ``root`` through nopeek objects' attributes and plain
    containers (not through the attributes named in ``skip``: the shared in-process channel)."""
    found, seen, todo = [], set(), [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            found.append(obj)
        elif isinstance(obj, dict):
            todo += list(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            todo += list(obj)
        elif type(obj).__module__.startswith("nopeek") and hasattr(obj, "__dict__"):
            todo += [v for k, v in vars(obj).items() if k not in skip]
    return found


@pytest.mark.parametrize("name", ["vanilla", "vertical"])
def test_a_party_reaches_no_other_partys_segment(name):
    topo = _run(name).topology
    runtime = InProcessRuntime(topo)
    for party in runtime.parties.values():
        mine = {id(m) for m in party.modules}
        others = [n.module for n in topo.nodes if n.party != party.name and n.module is not None]
        reached = {id(m) for m in _reachable_modules(party, skip=("channel",))}
        assert not (reached & ({id(m) for m in others} - mine)), party.name
